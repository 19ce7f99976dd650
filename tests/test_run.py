import json
import os

import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_compress  # noqa: F401  (registers the int8 loader)
from hf_compress.cli import main
from tests.testing_utils import tiny_checkpoint, tiny_text_csv


def write_recipe(tmp_path, **extra) -> str:
    teacher = tiny_checkpoint(tmp_path / "teacher", num_hidden_layers=4)
    data = tiny_text_csv(tmp_path / "data.csv")
    lines = {
        "teacher_model_name_or_path": teacher,
        "finetune_teacher": True,
        "dataset_name": data,
        "eval_split": "train",
        "student_num_hidden_layers": 2,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 8,
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "save_strategy": "no",
        "report_latency_repeats": 2,
        "output_dir": str(tmp_path / "out"),
    }
    lines.update(extra)
    path = tmp_path / "recipe.yaml"
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in lines.items()) + "\n")
    return str(path)


def test_distill_command_end_to_end_on_a_tiny_model(tmp_path, capsys):
    recipe = write_recipe(tmp_path)
    assert main(["distill", recipe]) == 0
    out = capsys.readouterr().out
    assert "| teacher |" in out and "| student |" in out
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert student.config.num_hidden_layers == 2
    assert student.config.id2label[0] == "negative"
    assert os.path.exists(tmp_path / "out" / "tokenizer.json")
    report = json.loads((tmp_path / "out" / "compression_report.json").read_text())
    assert [r["name"] for r in report] == ["teacher", "student"]
    assert report[1]["parameters"] < report[0]["parameters"]
    assert 0.0 <= report[1]["accuracy"] <= 1.0
    # The student was made from and distilled against the teacher fine-tuned here: config.json names that one,
    # relative to the saved model, and the base checkpoint it was fine-tuned from.
    compression = student.config.compression
    for step in ("student", "distillation"):
        assert compression[step]["teacher"] == "./teacher", step
        assert compression[step]["teacher_base"] == "../teacher", step


def test_final_save_never_replaces_a_model_unasked(tmp_path, capsys):
    recipe = write_recipe(tmp_path)
    existing = tiny_checkpoint(tmp_path / "out", seed=7)
    before = (tmp_path / "out" / "model.safetensors").read_bytes()
    assert main(["distill", recipe]) == 2
    assert "overwrite_output" in capsys.readouterr().err
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == before
    assert existing


def test_missing_text_column_fails_before_training(tmp_path, capsys):
    recipe = write_recipe(tmp_path, text_column="sentence")
    assert main(["distill", recipe]) == 2
    assert "text_column='sentence'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out" / "teacher")


@pytest.mark.slow
def test_tweets_splits_are_fixed_and_labelled():
    from hf_compress import load_tweets

    data = load_tweets()
    assert {k: len(v) for k, v in data.items()} == {"train": 32158, "validation": 2000, "test": 4000}
    assert data["train"].features["label"].names == ["negative", "neutral", "positive"]
    assert data["test"][0] == load_tweets()["test"][0]


def test_compress_command_distils_and_prunes(tmp_path):
    recipe = write_recipe(
        tmp_path, target_sparsity=0.6, pruning_start=0, pruning_end=3, pruning_frequency=1, num_train_epochs=1
    )
    assert main(["compress", recipe]) == 0
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert student.config.compression["pruning"]["sparsity"] == pytest.approx(0.6, abs=1e-3)
    report = json.loads((tmp_path / "out" / "compression_report.json").read_text())
    assert report[1]["sparsity"] == pytest.approx(0.6, abs=1e-3)


@pytest.mark.parametrize("flag,value", [("embedding_size", 64), ("num_hidden_groups", 3)])
def test_albert_shape_is_checked_before_the_teacher_is_trained(tmp_path, capsys, flag, value):
    recipe = write_recipe(tmp_path, **{flag: value})
    assert main(["compress", recipe]) == 2
    assert f"{flag}={value}" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out" / "teacher")


def test_compress_command_prunes_the_vocabulary_then_quantizes(tmp_path):
    recipe = write_recipe(tmp_path, prune_vocabulary=True, quantization="dynamic-int8")
    assert main(["compress", recipe]) == 0
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "out")
    used = {w for line in (tmp_path / "data.csv").read_text().splitlines()[1:] for w in line.split(",")[0].split()}
    assert student.config.vocab_size == len(tokenizer) < 1000
    assert student.config.vocab_size <= 5 + len(used)  # only words of the training split (a subset of the file)
    assert student.config.compression["vocabulary"]["vocab_size"]["before"] == 1000
    assert type(student.bert.embeddings.word_embeddings).__name__ == "Int8Embedding"
    report = json.loads((tmp_path / "out" / "compression_report.json").read_text())
    assert report[1]["bytes_on_disk"] < report[0]["bytes_on_disk"]
    assert 0.0 <= report[1]["accuracy"] <= 1.0


def test_student_can_start_from_another_checkpoint(tmp_path):
    other = tiny_checkpoint(tmp_path / "pretrained", seed=5, num_hidden_layers=3)
    recipe = write_recipe(
        tmp_path, student_model_name_or_path=other, student_num_hidden_layers=3, num_train_epochs=0.01
    )
    assert main(["distill", recipe]) == 0
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    source = AutoModelForSequenceClassification.from_pretrained(other)
    teacher = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out" / "teacher")
    assert student.config.num_hidden_layers == 3
    assert student.config.id2label == teacher.config.id2label
    # One training step moves the weights a little: the student is near its checkpoint, far from the teacher.
    w = student.bert.encoder.layer[2].output.dense.weight
    near = (w - source.bert.encoder.layer[2].output.dense.weight).abs().max()
    far = (w - teacher.bert.encoder.layer[3].output.dense.weight).abs().max()
    assert near < 0.01 < far


def test_student_checkpoint_depth_is_checked_before_training(tmp_path, capsys):
    other = tiny_checkpoint(tmp_path / "pretrained", seed=5, num_hidden_layers=2)
    recipe = write_recipe(tmp_path, student_model_name_or_path=other, student_num_hidden_layers=3)
    assert main(["distill", recipe]) == 2
    assert "student_num_hidden_layers=3" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out" / "teacher")


def test_prune_command_end_to_end_on_a_tiny_model(tmp_path, capsys):
    model = tiny_checkpoint(tmp_path / "model", num_hidden_layers=2)
    values = {
        "model_name_or_path": model,
        "finetune_teacher": True,
        "dataset_name": tiny_text_csv(tmp_path / "data.csv"),
        "eval_split": "train",
        "target_sparsity": 0.5,
        "ffn_sparsity": 0.5,
        "pruning_start": 0,
        "pruning_end": 2,
        "pruning_frequency": 1,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 8,
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "save_strategy": "no",
        "report_latency_repeats": 2,
        "output_dir": str(tmp_path / "out"),
    }
    path = tmp_path / "prune.yaml"
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in values.items()) + "\n")
    assert main(["prune", str(path)]) == 0
    out = capsys.readouterr().out
    assert "| original |" in out and "| pruned |" in out and "Saved to" in out
    pruned = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert pruned.config.intermediate_size == 32
    assert pruned.config.compression["pruning"]["sparsity"] == pytest.approx(0.5, abs=1e-3)
    report = json.loads((tmp_path / "out" / "compression_report.json").read_text())
    assert [r["name"] for r in report] == ["original", "pruned"]
    assert 0.0 <= report[1]["accuracy"] <= 1.0
    assert (tmp_path / "out" / "pruning_report.json").exists() and (tmp_path / "out" / "teacher").is_dir()


def test_string_labels_and_a_single_file_get_classes_and_held_out_splits(tmp_path, capsys):
    import csv

    rows = list(csv.DictReader(open(tiny_text_csv(tmp_path / "ids.csv", n=60))))
    with open(tmp_path / "named.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for row in rows:
            writer.writerow([row["text"], ["negative", "neutral", "positive"][int(row["label"])]])
    recipe = write_recipe(tmp_path, dataset_name=str(tmp_path / "named.csv"), eval_split="test", test_size=12)
    assert main(["distill", recipe]) == 0
    student = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert student.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}  # sorted names
    report = json.loads((tmp_path / "out" / "compression_report.json").read_text())
    assert "12 examples" in capsys.readouterr().out and 0 <= report[1]["accuracy"] <= 1
    card = (tmp_path / "out" / "README.md").read_text()
    assert "held out of its train split" in card and "`test`: 12 of `train` (seed 42)" in card
    # Nothing the product saved is a pickle, the fine-tuned teacher included.
    for root, _, files in os.walk(tmp_path / "out"):
        assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))], root


def test_the_recipe_seed_fixes_the_fine_tuned_teacher_whatever_ran_before(tmp_path):
    """A teacher checkpoint without the task's head (a base model, as the packaged MiniLM) gets a new head at
    `from_pretrained`. Its initial weights come from torch's global generator, so without seeding first they depend
    on whatever drew random numbers earlier in the process; `seed` must fix them, as in transformers' examples."""
    import torch
    from transformers import BertModel

    from tests.testing_utils import tiny_bert, tiny_tokenizer

    base = tmp_path / "base"
    BertModel(tiny_bert(0).config).save_pretrained(base)  # no classifier in the checkpoint
    tiny_tokenizer(base).save_pretrained(base)
    teachers = []
    for i, prior in enumerate((1, 2)):
        out = str(tmp_path / f"o{i}")
        recipe = write_recipe(tmp_path / f"run{i}", teacher_model_name_or_path=str(base), report=False, output_dir=out)
        torch.manual_seed(prior)  # what earlier code (or an earlier test) left in the global generator
        assert main(["distill", recipe]) == 0
        teachers.append((tmp_path / f"o{i}" / "teacher" / "model.safetensors").read_bytes())
    assert teachers[0] == teachers[1]


def test_transfer_text_keeps_the_first_examples_labelled_and_the_rest_distilled_only(tmp_path):
    from datasets import ClassLabel, Dataset

    from hf_compress.cli.recipe import RecipeArguments
    from hf_compress.cli.train import subset, training_example_count, training_examples
    from hf_compress.methods.distillation.loss import UNLABELLED

    data = Dataset.from_dict({"input_ids": [[i] for i in range(50)], "label": [i % 3 for i in range(50)]})
    data = data.cast_column("label", ClassLabel(names=["a", "b", "c"]))
    tokens = Dataset.from_dict(
        {"input_ids": [[i, i] for i in range(50)], "labels": [[-100, i % 3] for i in range(50)]}
    )
    for dataset, column in ((data, "label"), (tokens, "labels")):
        task = "text-classification" if column == "label" else "token-classification"
        for extra, expected in ((10, 30), (-1, 50)):
            recipe = RecipeArguments(task=task, max_train_samples=20, unlabelled_train_samples=extra)
            train = training_examples(dataset, recipe, seed=3)
            assert len(train) == expected
            labelled = subset(dataset, 20, 3)
            assert train.select(range(20))[column] == labelled[column]  # the same labelled examples as without
            ids = [row[0] for row in train["input_ids"]]
            assert len(set(ids)) == expected  # no example twice
            for row in train.select(range(20, expected))[column]:
                assert row == UNLABELLED if column == "label" else row == [-100, UNLABELLED]
            assert training_example_count(len(dataset), recipe) == expected
    for fields in ({}, {"max_train_samples": 20}, {"max_train_samples": 60, "unlabelled_train_samples": -1}):
        recipe = RecipeArguments(**fields)
        assert training_example_count(50, recipe) == len(training_examples(data, recipe, seed=3))
    # the preflight counts on the raw split, whose label column may be named otherwise (CoNLL's ner_tags)
    raw = Dataset.from_dict({"tokens": [["a"]] * 50, "ner_tags": [[0]] * 50})
    assert training_example_count(len(raw), RecipeArguments(max_train_samples=20, unlabelled_train_samples=-1)) == 50


@pytest.mark.parametrize("fields,says", [
    ({"unlabelled_train_samples": 10}, "null unless max_train_samples"),
    ({"unlabelled_train_samples": 0, "max_train_samples": 10}, "a count > 0, -1 (the rest) or null"),
    ({"unlabelled_train_samples": -1, "max_train_samples": 10, "task": "question-answering"}, "null for task="),
])  # fmt: skip
def test_transfer_text_fields_are_checked_before_any_work(tmp_path, capsys, fields, says):
    recipe = write_recipe(tmp_path, **fields)
    assert main(["distill", recipe]) == 2
    err = capsys.readouterr().err
    assert f"unlabelled_train_samples={fields['unlabelled_train_samples']} is invalid" in err and says in err
    assert not os.path.exists(tmp_path / "out" / "teacher")


def test_distill_with_transfer_text_end_to_end(tmp_path, capsys):
    recipe = write_recipe(tmp_path, max_train_samples=12, unlabelled_train_samples=-1)
    assert main(["distill", recipe]) == 0
    assert "Stage 2: distill (" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "compression_report.json").read_text())
    assert report[1]["name"] == "student"
