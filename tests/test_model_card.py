"""Model cards: the measured figures, the tags, the methods' arguments and the command, parsed back by ModelCard."""

from __future__ import annotations

import os

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_compress import create_student
from hf_compress.cli.recipe import RecipeArguments, parse_recipe, recipe_as_dict
from hf_compress.data import load_text_classification, tokenize
from hf_compress.evaluation.table import build_report
from hf_compress.hub import build_model_card, install_line, method_tags, write_model_card
from hf_compress.provenance import portable_values, record
from hf_compress.trainer.compression_args import CompressionTrainingArguments
from tests.testing_utils import tiny_bert_config, tiny_checkpoint, tiny_text_csv

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMAND = "hf-compress distill recipe.yaml"


def fit_head(model, tokenizer, texts: list[str], labels: list[int]):
    """Pooler and classifier fitted to the data, so predictions depend on the input and differ between models.

    A random tiny BERT predicts one class for every input: its [CLS] state varies by ~1% across inputs. The pooler
    standardises that state, then a ridge classifier learns the labels with margins far above float noise.
    """
    with torch.no_grad():
        cls = model.bert(**tokenizer(texts, padding=True, return_tensors="pt")).last_hidden_state[:, 0].double()
        mean, std = cls.mean(0), cls.std(0)
        model.bert.pooler.dense.weight.copy_(torch.diag(1 / std))
        model.bert.pooler.dense.bias.copy_(-mean / std)
        pooled = torch.tanh((cls - mean) / std)
        features = torch.cat([pooled, torch.ones(len(texts), 1, dtype=torch.float64)], 1)
        targets = torch.nn.functional.one_hot(torch.tensor(labels), model.config.num_labels).double()
        gram = features.T @ features + torch.eye(features.shape[1], dtype=torch.float64)
        solution = torch.linalg.solve(gram, features.T @ targets)  # ridge, (hidden + 1) x labels
        model.classifier.weight.copy_(solution[:-1].T)
        model.classifier.bias.copy_(solution[-1])
    return model


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """A tiny teacher, a 2-layer student saved beside it, and build_report's rows on 48 labelled texts."""
    tmp = tmp_path_factory.mktemp("card")
    teacher_dir = tiny_checkpoint(tmp / "teacher", num_hidden_layers=4)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    raw = load_text_classification(tiny_text_csv(tmp / "data.csv"))["train"]
    texts, labels = raw["text"][:32], raw["label"][:32]  # fit on 2/3: accuracy is neither chance nor perfect
    teacher = fit_head(
        AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval(), tokenizer, texts, labels
    )
    teacher.save_pretrained(teacher_dir)
    student = fit_head(create_student(teacher, num_hidden_layers=2).eval(), tokenizer, texts, labels)
    student_dir = str(tmp / "student")
    student.save_pretrained(student_dir)
    data = tokenize(raw, tokenizer)
    models = {"teacher": (teacher, teacher_dir), "student": (student, student_dir)}
    rows = build_report(models, tokenizer, data, batch_sizes=(1, 4), repeats=2)
    recipe = {"teacher_model_name_or_path": teacher_dir, "dataset_name": "data.csv", "eval_split": "train"}
    return student, student_dir, rows, recipe


def test_card_states_the_measured_figures(measured):
    student, student_dir, rows, recipe = measured
    teacher_row, student_row = rows
    # The figures are measurements of these models, not placeholders.
    assert student_row.parameters == sum(p.numel() for p in student.parameters())
    assert student_row.bytes_on_disk == os.path.getsize(os.path.join(student_dir, "model.safetensors"))
    assert student_row.parameters < teacher_row.parameters and student_row.accuracy is not None

    text = build_model_card(rows, student.config, recipe, COMMAND).content
    assert f"| parameters | {teacher_row.parameters:,} | {student_row.parameters:,} |" in text
    assert f"| weights on disk (bytes) | {teacher_row.bytes_on_disk:,} | {student_row.bytes_on_disk:,} |" in text
    ratio = teacher_row.parameters / student_row.parameters
    assert f"{ratio:.2f}× fewer" in text
    assert f"| accuracy | {teacher_row.accuracy:.4f} | {student_row.accuracy:.4f} |" in text
    assert f"{student_row.accuracy_vs_reference:.2%} of teacher" in text
    assert f"| agreement with teacher predictions |  | {student_row.agreement_with_reference:.4f} |" in text
    for key, batch in (("batch_1", "1"), ("batch_4", "4")):
        latency = f"{teacher_row.latency_ms[key]:.2f} | {student_row.latency_ms[key]:.2f}"
        speedup = student_row.speedup[key]  # teacher ms / student ms, measured interleaved
        change = f"{speedup:.2f}× faster" if speedup >= 1 else f"{1 / speedup:.2f}× slower"
        assert f"| CPU latency, batch {batch} (ms) | {latency} | {change} |" in text
    assert "| sparsity of encoder Linear weights | 0.00% | 0.00% |" in text
    # The methods and their arguments come from config.compression; the teacher and the command are named.
    # A local teacher is named without the machine's absolute path (#16: only what can be checked).
    assert "layers=[0, 2]" in text and "compressed version of `teacher`" in text
    assert recipe["teacher_model_name_or_path"] not in text
    # Installed from this checkout, not from an index: the install line says so instead of a version no index serves.
    assert f"```bash\n{install_line()}\n{COMMAND}\n```" in text and "from source" in install_line()
    assert "the `train` split of `data.csv`" in text


def test_card_parses_back_with_tags_and_model_index(measured, tmp_path):
    student, student_dir, rows, recipe = measured
    write_model_card(str(tmp_path), rows, student.config, recipe, COMMAND, model_name="tiny-student")
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.tags == ["generated_from_trainer", "hf_compress", "distillation"]
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-classification"
    assert card.data.base_model is None  # the teacher is a local directory, not a Hub id
    accuracy, agreement = card.data.eval_results
    assert card.data.model_name == "tiny-student"
    assert (accuracy.metric_type, accuracy.metric_value) == ("accuracy", rows[1].accuracy)
    assert (agreement.metric_type, agreement.metric_value) == ("agreement", rows[1].agreement_with_reference)
    assert (accuracy.task_type, accuracy.dataset_type, accuracy.dataset_split) == (
        "text-classification",
        "data.csv",
        "train",
    )
    assert f"{rows[1].parameters:,}" in card.text and COMMAND in card.text
    # recipe.yaml names local paths relative to the folder it is in, never absolutely (#16).
    assert yaml.safe_load((tmp_path / "recipe.yaml").read_text()) == portable_values(recipe, str(tmp_path))


def test_tags_and_arguments_of_every_recorded_method():
    config = tiny_bert_config()
    config.architectures = ["BertForSequenceClassification"]
    record(config, "student", {"teacher": "org/bert-base", "layers": [0, 2]})
    record(config, "pruning", {"method": "movement", "target_sparsity": 0.5, "sparsity": 0.499})
    record(config, "albert", {"embedding_size": 16, "num_hidden_groups": 1})
    record(config, "quantization", {"method": "hf_compress_int8", "linear": 12})
    assert method_tags(config) == ["distillation", "pruning", "albert", "parameter-sharing", "quantization", "int8"]

    card = build_model_card(None, config, model_name="all-of-it")
    assert card.data.tags == ["generated_from_trainer", "hf_compress", *method_tags(config)]
    assert card.data.base_model == "org/bert-base"  # a Hub id: the Hub links the card to its base model
    assert card.data.eval_results is None and "## Results" not in card.text  # nothing measured, nothing claimed
    for expected in ("target_sparsity=0.5", "sparsity=0.499", "embedding_size=16", "num_hidden_groups=1", "linear=12"):
        assert expected in card.text
    assert "import hf_compress.quantization  # registers the int8 loader" in card.text

    untrained = tiny_bert_config()
    record(untrained, "albert", {"embedding_size": 16})
    assert build_model_card(None, untrained).data.tags == ["hf_compress", "albert", "parameter-sharing"]


@pytest.mark.parametrize(
    "details, tag, label, stored",
    [
        ({"method": "hf_compress_int8", "linear": 12}, "int8", "int8 post-training quantization", "int8 weights"),
        ({"method": "low_bit", "4bit": 12}, "low-bit", "low-bit quantization-aware training", "packed low-bit"),
    ],
)
def test_card_names_the_quantization_that_was_recorded(details, tag, label, stored):
    config = tiny_bert_config()
    config.architectures = ["BertForSequenceClassification"]
    record(config, "quantization", details)
    card = build_model_card(None, config, model_name="quantized")
    assert method_tags(config) == ["quantization", tag]
    assert label in card.text and f"It stores {stored}" in card.text
    other = "low-bit" if tag == "int8" else "int8 post-training"
    assert other not in card.text


def test_recipe_yaml_reproduces_the_arguments_and_holds_no_token(tmp_path):
    path = os.path.join(REPO, "recipes", "tweets-movement-pruning.yaml")
    overrides = ["--num_train_epochs", "2", "--hub_token", "hf_secret_value"]
    recipe_args, training_args = parse_recipe(path, overrides, RecipeArguments, CompressionTrainingArguments)
    recipe = recipe_as_dict(recipe_args, training_args)
    assert recipe["num_train_epochs"] == 2 and recipe["target_sparsity"] == 0.9 and "hub_token" not in recipe
    assert "logging_dir" not in recipe and "seed" not in recipe  # TrainingArguments at their defaults stay out

    config = tiny_bert_config()
    write_model_card(str(tmp_path), None, config, recipe, "hf-compress compress recipe.yaml")
    again_recipe, again_training = parse_recipe(
        str(tmp_path / "recipe.yaml"), [], RecipeArguments, CompressionTrainingArguments
    )
    assert again_recipe == recipe_args
    expected = {**training_args.to_dict(), "hub_token": None}
    assert {**again_training.to_dict(), "hub_token": None} == expected
    for name in ("recipe.yaml", "README.md"):
        assert "hf_secret_value" not in (tmp_path / name).read_text()


def test_saved_weights_are_what_the_card_counts(measured):
    _, student_dir, rows, _ = measured
    weights = load_file(os.path.join(student_dir, "model.safetensors"))
    assert sum(t.numel() for t in weights.values()) == rows[1].parameters


@pytest.mark.parametrize(
    "dataset,expected",
    [("user/reviews", "user/reviews"), ("imdb", "imdb"), ("/abs/where/data.csv", "data.csv"), ("tweets", "tweets")],
)
def test_card_metadata_names_hub_datasets_in_full_and_local_data_by_name(measured, dataset, expected):
    from huggingface_hub.repocard_data import model_index_to_eval_results

    student, _, rows, recipe = measured
    card = build_model_card(rows, student.config, {**recipe, "dataset_name": dataset}, COMMAND, model_name="m")
    parsed = ModelCard(str(card))  # the metadata survives huggingface_hub's own parsing and validation
    name, results = model_index_to_eval_results(parsed.data.to_dict()["model-index"])
    assert name == "m" and {r.dataset_type for r in results} == {expected}
    assert parsed.data.datasets == (
        [dataset] if "/" in dataset and not dataset.startswith("/") or dataset == "imdb" else None
    )
    assert "/abs/where" not in str(card)


def test_no_artifact_holds_an_absolute_path_of_the_machine(tmp_path):
    from hf_compress.cli import main

    teacher = tiny_checkpoint(tmp_path / "teacher", num_hidden_layers=4)
    values = dict(
        teacher_model_name_or_path=teacher, finetune_teacher=True, dataset_name=tiny_text_csv(tmp_path / "d.csv"),
        eval_split="train", student_num_hidden_layers=2, num_train_epochs=1, per_device_train_batch_size=8,
        report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no", report_latency_repeats=1,
        output_dir=str(tmp_path / "out"),
    )  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values))
    assert main(["distill", str(path)]) == 0
    for root, _, files in os.walk(tmp_path / "out"):
        for name in files:
            if name.endswith((".json", ".yaml", ".md", ".txt")):
                text = open(os.path.join(root, name)).read()
                assert str(tmp_path) not in text, f"{name} holds an absolute path"
    card = (tmp_path / "out" / "README.md").read_text()
    assert "teacher fine-tuned on the task first (`teacher" in card  # the teacher actually used, then every step
    assert card.index("teacher fine-tuned") < card.index("`student`") < card.index("`distillation`")
    assert "pip install" in card and "hf_compress==" not in card  # installed from source here: no index serves it
