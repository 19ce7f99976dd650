"""Bad input gets a clear error naming the field, the value and what is allowed, before any model or step."""

import json
import subprocess
import sys

import pytest

from hf_compress import (
    CompressionTrainer,
    CompressionTrainingArguments,
    DistillationTrainer,
    DistillationTrainingArguments,
    PruningTrainingArguments,
    create_student,
    to_albert,
)
from hf_compress.cli import main
from hf_compress.methods.distillation.config import EMBEDDING_WEIGHTS
from tests.testing_utils import tiny_bert, tiny_bert_config, tiny_checkpoint, tiny_text_csv

ARGUMENT_CASES = [
    (DistillationTrainingArguments, {"temperature": 0.0}, "temperature=0.0", "> 0"),
    (DistillationTrainingArguments, {"temperature": -2.0}, "temperature=-2.0", "> 0"),
    (DistillationTrainingArguments, {"alpha": 1.2}, "alpha=1.2", "[0, 1]"),
    (DistillationTrainingArguments, {"alpha": -0.5}, "alpha=-0.5", "[0, 1]"),
    (DistillationTrainingArguments, {"hidden_loss_weight": -1.0}, "hidden_loss_weight=-1.0", ">= 0"),
    (DistillationTrainingArguments, {"attention_loss_weight": -1.0}, "attention_loss_weight=-1.0", ">= 0"),
    (DistillationTrainingArguments, {"attention_loss_type": "l1"}, "attention_loss_type='l1'", "'kl'"),
    (DistillationTrainingArguments, {"layer_mapping": [-1]}, "layer_mapping=[-1]", "teacher layer ids"),
    (
        DistillationTrainingArguments,
        {"layer_mapping": [2, 4, 6]},
        "layer_mapping=[2, 4, 6]",
        "teacher_layer_mapping=[1, 3, 5]",
    ),
    (DistillationTrainingArguments, {"teacher_layer_mapping": [-1]}, "teacher_layer_mapping=[-1]", "0-based"),
    (
        DistillationTrainingArguments,
        {"label_smoothing_factor": 0.1},
        "label_smoothing_factor=0.1",
        "0 with distillation",
    ),
    (
        CompressionTrainingArguments,
        {"num_hidden_groups": 1, "gradient_checkpointing": True},
        "gradient_checkpointing=True",
        "num_hidden_groups=1",
    ),
    (PruningTrainingArguments, {"pruning_frequency": 0}, "pruning_frequency=0", ">= 1"),
    (
        DistillationTrainingArguments,
        {"teacher_model_init_kwargs": "{bad json"},
        "teacher_model_init_kwargs",
        "JSON object string (Expecting property name",
    ),
    (DistillationTrainingArguments, {"teacher_model_init_kwargs": "[1]"}, "teacher_model_init_kwargs=[1]", "a dict"),
    *[(DistillationTrainingArguments, {name: -0.5}, f"{name}=-0.5", ">= 0") for name in EMBEDDING_WEIGHTS],
    (PruningTrainingArguments, {"target_sparsity": 1.0}, "target_sparsity=1.0", "[0, 1)"),
    (PruningTrainingArguments, {"target_sparsity": -0.1}, "target_sparsity=-0.1", "[0, 1)"),
    (PruningTrainingArguments, {"pruning_method": "random"}, "pruning_method='random'", "movement"),
    (PruningTrainingArguments, {"pruning_start": 50, "pruning_end": 10}, "pruning_end=10", "after pruning_start"),
    (PruningTrainingArguments, {"pruning_scope": "row"}, "pruning_scope='row'", "global"),
    (PruningTrainingArguments, {"pruning_frequency": 0}, "pruning_frequency=0", ">= 1"),
    (CompressionTrainingArguments, {"embedding_size": 0}, "embedding_size=0", "[1, hidden_size]"),
    (CompressionTrainingArguments, {"num_hidden_groups": 0}, "num_hidden_groups=0", "divisor"),
    (CompressionTrainingArguments, {"sharing_init": "median"}, "sharing_init='median'", "'mean'"),
    (CompressionTrainingArguments, {"embedding_weighting": "fisher"}, "embedding_weighting='fisher'", "'frequency'"),
]


@pytest.mark.parametrize("cls,kwargs,named,allowed", ARGUMENT_CASES, ids=lambda v: str(v)[:40])
def test_arguments_classes(tmp_path, cls, kwargs, named, allowed):
    with pytest.raises(ValueError) as err:
        cls(output_dir=str(tmp_path), report_to="none", **kwargs)
    assert named in str(err.value) and allowed in str(err.value)


TRANSFORM_CASES = [
    (lambda: to_albert(tiny_bert(), embedding_size=64), "embedding_size=64"),  # > hidden 32
    (lambda: to_albert(tiny_bert(), embedding_size=-4), "embedding_size=-4"),
    (lambda: to_albert(tiny_bert(), num_hidden_groups=0), "num_hidden_groups=0"),
    (lambda: to_albert(tiny_bert(), num_hidden_groups=4), "num_hidden_groups=4"),  # > 2 layers
    (lambda: create_student(tiny_bert(), num_hidden_layers=3), "num_hidden_layers=3"),
]


@pytest.mark.parametrize("build,named", TRANSFORM_CASES, ids=[named for _, named in TRANSFORM_CASES])
def test_transforms(build, named):
    with pytest.raises(ValueError, match=named.replace("[", r"\[")):
        build()


def test_to_albert_refuses_a_non_bert_architecture():
    from transformers import GPT2Config, GPT2Model

    with pytest.raises(ValueError, match="GPT2Model"):
        to_albert(GPT2Model(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)))


@pytest.mark.parametrize(
    "student_kwargs,message",
    [
        ({"vocab_size": 500}, "vocab_size: teacher 1000 vs student 500"),
        ({"num_labels": 5}, "num_labels: teacher 3 vs student 5"),
    ],
)
def test_teacher_and_student_must_match(tmp_path, student_kwargs, message):
    args = CompressionTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    for trainer_class in (DistillationTrainer, CompressionTrainer):
        with pytest.raises(ValueError, match=message):
            trainer_class(model=tiny_bert(**student_kwargs), teacher_model=tiny_bert(), args=args)


def _recipe(tmp_path, **values) -> str:
    base = {
        "teacher_model_name_or_path": tiny_checkpoint(tmp_path / "teacher"),
        "dataset_name": tiny_text_csv(tmp_path / "data.csv"),
        "eval_split": "train",
        "student_num_hidden_layers": 1,
        "report_to": "none",
        "use_cpu": True,
        "output_dir": str(tmp_path / "out"),
    }
    base.update(values)
    path = tmp_path / "recipe.yaml"
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in base.items()))
    return str(path)


CLI_CASES = [
    ({"teacher_model_name_or_path": "/nowhere/teacher"}, "teacher_model_name_or_path='/nowhere/teacher'"),
    ({"teacher_model_name_or_path": "someone/missing-model"}, "teacher_model_name_or_path='someone/missing-model'"),
    ({"student_model_name_or_path": "./no-student"}, "student_model_name_or_path='./no-student'"),
    ({"dataset_name": "missing.csv"}, "dataset_name='missing.csv'"),
    ({"dataset_name": "/nowhere/data.csv"}, "dataset_name='/nowhere/data.csv'"),
    ({"temprature": 2.0}, "temprature"),  # unknown recipe key
    ({"text_column": "sentence"}, "text_column='sentence'"),  # dataset with no such column
    ({"max_length": 0}, "max_length=0"),
    ({"eval_split": "dev"}, "eval_split='dev'"),
    ({"student_num_hidden_layers": 5}, "num_hidden_layers=5"),
    ({"resume_from_checkpoint": "true"}, "resume_from_checkpoint='true' is invalid; allowed: a checkpoint folder"),
    ({"model_name_or_path": "some/model"}, "model_name_or_path='some/model' is invalid; allowed: null for `compress`"),
    (
        {"resume_from_checkpoint": "/nowhere/checkpoint-5"},
        "resume_from_checkpoint='/nowhere/checkpoint-5' is invalid; allowed: an existing checkpoint folder, or true",
    ),
    (
        {"teacher_model_name_or_path": None},
        "teacher_model_name_or_path=None is invalid; allowed: a Hub id, a local model directory or pkg://",
    ),
    (
        {"task": "sentence-embedding", "finetune_teacher": True},
        "finetune_teacher=True is invalid; allowed: sentence embeddings are distilled from the teacher as it is",
    ),
]


def _assert_one_error_line(err: str, named: str) -> None:
    """The command's stderr holds exactly one line of ours, naming `named`, and no traceback."""
    ours = [line for line in err.splitlines() if line.startswith("hf-compress")]
    assert len(ours) == 1 and named in ours[0] and "Traceback" not in err, err


@pytest.mark.parametrize("values,named", CLI_CASES, ids=lambda v: str(v)[:30])
def test_cli_one_line_and_exit_2(tmp_path, capsys, values, named):
    assert main(["compress", _recipe(tmp_path, **values)]) == 2
    _assert_one_error_line(capsys.readouterr().err, named)
    assert not (tmp_path / "out" / "model.safetensors").exists()


@pytest.mark.parametrize("case", ["missing-recipe", "list-recipe", "no-train-split"])
def test_a_recipe_or_data_the_run_cannot_start_from_is_refused_in_one_line(tmp_path, capsys, case):
    """A recipe path that is not a file, a recipe that is a YAML list, a data folder without a train split."""
    if case == "missing-recipe":
        recipe, named = str(tmp_path / "nowhere.yaml"), "is invalid; allowed: a YAML file that exists"
    elif case == "list-recipe":
        recipe, named = str(tmp_path / "recipe.yaml"), "allowed: a YAML mapping of field: value, not a list"
        (tmp_path / "recipe.yaml").write_text("- output_dir: out\n")
    else:
        (tmp_path / "data").mkdir()
        tiny_text_csv(tmp_path / "data" / "test.csv")
        recipe = _recipe(tmp_path, dataset_name=str(tmp_path / "data"), eval_split="test")
        named = "dataset splits=['test'] is invalid; allowed: a train split"
    assert main(["compress", recipe]) == 2
    _assert_one_error_line(capsys.readouterr().err, named)
    assert not (tmp_path / "out").exists()


def test_a_teacher_without_the_task_head_is_refused_unless_it_is_fine_tuned_first(tmp_path, capsys):
    from transformers import BertModel

    BertModel(tiny_bert_config()).save_pretrained(tmp_path / "base")
    assert main(["compress", _recipe(tmp_path, teacher_model_name_or_path=str(tmp_path / "base"))]) == 2
    named = "allowed: a model fine-tuned for text-classification (this one is ['BertModel']); or set finetune_teacher"
    _assert_one_error_line(capsys.readouterr().err, named)
    assert not (tmp_path / "out").exists()


def test_cli_refuses_to_overwrite_a_different_model(tmp_path, capsys):
    tiny_checkpoint(tmp_path / "out", seed=3)
    assert main(["compress", _recipe(tmp_path)]) == 2
    assert "overwrite_output" in capsys.readouterr().err


def test_console_script_reports_bad_value_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hf_compress.cli", "distill", _recipe(tmp_path), "--alpha", "3"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "hf-compress distill: error: alpha=3.0 is invalid; allowed: a number in [0, 1]"
    ]


def test_quantizing_twice_is_refused(tmp_path, capsys):
    from hf_compress.methods.int8.transform import quantize_

    model = quantize_(tiny_bert())
    with pytest.raises(ValueError, match="already quantized"):
        quantize_(model)
    model.save_pretrained(tmp_path / "int8")
    assert main(["quantize", str(tmp_path / "int8"), str(tmp_path / "again")]) == 2
    assert "already quantized" in capsys.readouterr().err
    assert not (tmp_path / "again").exists()


def test_quantize_command_on_a_missing_model(tmp_path, capsys):
    assert main(["quantize", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "MODEL_DIR=" in capsys.readouterr().err


def test_quantize_command_round_trip(tmp_path):
    from transformers import AutoModelForSequenceClassification

    source = tiny_checkpoint(tmp_path / "fp32")
    assert main(["quantize", source, str(tmp_path / "int8"), "--keep", "classifier"]) == 0
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "int8")
    assert reloaded.config.quantization_config.quant_method == "hf_compress_int8"
    assert (tmp_path / "int8" / "tokenizer.json").exists()


@pytest.mark.parametrize(
    "argv,named",
    [
        (["quantize", "/nowhere/model", "OUT"], "MODEL_DIR='/nowhere/model'"),
        (["report", "/nowhere/model"], "MODEL_DIR='/nowhere/model'"),
        (["report", "someone/not-a-dir"], "MODEL_DIR='someone/not-a-dir'"),
    ],
)
def test_path_arguments_of_the_tools_are_checked_first(tmp_path, capsys, argv, named):
    argv = [a.replace("OUT", str(tmp_path / "out")) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and named in err and "Traceback" not in err


@pytest.mark.parametrize(
    "fields,named",
    [
        ({"model_name_or_path": "/nowhere/model"}, "model_name_or_path='/nowhere/model'"),
        ({"student_model_name_or_path": "MODEL"}, "is invalid; allowed: null for `prune`: the model pruned is"),
        ({"unlabelled_train_samples": 8}, "unlabelled_train_samples=8 is invalid; allowed: null for `prune`"),
    ],
    ids=["missing-model", "student-checkpoint", "transfer-text"],
)
def test_prune_command_checks_its_model_fields(tmp_path, capsys, fields, named):
    model = tiny_checkpoint(tmp_path / "model")
    fields = {"model_name_or_path": model, **{k: model if v == "MODEL" else v for k, v in fields.items()}}
    recipe = _recipe(tmp_path, teacher_model_name_or_path=None, max_train_samples=16, **fields)
    text = open(recipe).read().replace("teacher_model_name_or_path: null\n", "")
    open(recipe, "w").write(text)
    assert main(["prune", recipe]) == 2
    _assert_one_error_line(capsys.readouterr().err, named)


def test_a_base_checkpoint_without_enough_labels_is_refused_when_the_trainer_is_built(tmp_path):
    from tests.testing_utils import tiny_dataset

    args = DistillationTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    two_labels = tiny_bert(num_labels=2)
    with pytest.raises(ValueError, match=r"train_dataset=.*label up to 2.*num_labels=2"):
        DistillationTrainer(model=two_labels, teacher_model=tiny_bert(num_labels=2), args=args,
                            train_dataset=tiny_dataset(16, num_labels=3))  # fmt: skip
    from datasets import Dataset

    strings = Dataset.from_dict({"input_ids": [[5, 6]], "attention_mask": [[1, 1]], "label": ["positive"]})
    with pytest.raises(ValueError, match="string label"):
        DistillationTrainer(model=tiny_bert(), teacher_model=tiny_bert(), args=args, train_dataset=strings)


# ---- models the product cannot use: refused from their configs, before any data is read or any model trained ----


def _no_work(monkeypatch):
    """Make any tokenizer load, data load or teacher fine-tuning in a recipe run fail the test (not caught as bad
    input): a refusal must come before them."""
    import hf_compress.cli.train as train

    def work(*args, **kwargs):
        raise AssertionError("work started before the refusal")

    monkeypatch.setattr(train.AutoTokenizer, "from_pretrained", work)
    monkeypatch.setattr(train, "ensure_splits", work)
    monkeypatch.setattr(train, "finetune_teacher", work)


def _foreign_checkpoint(directory, kind: str) -> str:
    from transformers import GPT2Config, GPT2ForSequenceClassification, T5Config, T5ForConditionalGeneration

    if kind == "gpt2":
        model = GPT2ForSequenceClassification(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=1000))
    else:
        config = T5Config(num_layers=2, d_model=32, d_ff=64, num_heads=2, d_kv=16, vocab_size=1000)
        model = T5ForConditionalGeneration(config)
    model.save_pretrained(directory)
    return str(directory)


@pytest.mark.parametrize("kind", ["gpt2", "t5"])
@pytest.mark.parametrize("finetune", [True, False])
def test_a_teacher_of_another_family_is_refused_before_any_work(tmp_path, capsys, monkeypatch, kind, finetune):
    teacher = _foreign_checkpoint(tmp_path / kind, kind)
    recipe = _recipe(tmp_path, teacher_model_name_or_path=teacher, finetune_teacher=finetune)
    _no_work(monkeypatch)
    assert main(["distill", recipe]) == 2
    err = capsys.readouterr().err
    assert f"teacher_model_name_or_path={teacher!r} is invalid" in err and f"model_type={kind!r}" in err
    assert not (tmp_path / "out").exists()


def test_a_quantized_model_is_refused_as_the_source_of_a_student_before_any_work(tmp_path, capsys, monkeypatch):
    from hf_compress.methods.int8.transform import quantize_

    tiny_checkpoint(tmp_path / "int8")
    quantize_(tiny_bert()).save_pretrained(tmp_path / "int8")
    recipe = _recipe(tmp_path, teacher_model_name_or_path=str(tmp_path / "int8"))
    _no_work(monkeypatch)
    assert main(["distill", recipe]) == 2
    err = capsys.readouterr().err
    assert "teacher_model_name_or_path=" in err and "a full-precision model" in err and "hf_compress_int8" in err


def test_create_student_refuses_an_int8_teacher_in_the_project_format():
    from hf_compress.methods.int8.transform import quantize_

    with pytest.raises(ValueError, match=r"teacher='BertForSequenceClassification' is invalid; allowed: a full-prec"):
        create_student(quantize_(tiny_bert(num_hidden_layers=4)), num_hidden_layers=2)


def test_the_trainer_checks_the_family_before_the_labels(tmp_path):
    from transformers import GPT2Config, GPT2ForSequenceClassification

    args = DistillationTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    gpt2 = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=1000))
    with pytest.raises(ValueError, match=r"teacher_model='GPT2ForSequenceClassification' is invalid.*'gpt2'"):
        DistillationTrainer(model=tiny_bert(), teacher_model=gpt2, args=args)
    _foreign_checkpoint(tmp_path / "gpt2", "gpt2")
    with pytest.raises(ValueError, match=r"teacher_model_name_or_path=.*model_type='gpt2'"):
        DistillationTrainer(model=tiny_bert(), teacher_model=str(tmp_path / "gpt2"), args=args)


@pytest.mark.parametrize("student", [False, True])
def test_max_length_beyond_the_position_table_is_refused_before_any_work(tmp_path, capsys, monkeypatch, student):
    short = tiny_checkpoint(tmp_path / "short", max_position_embeddings=32)
    values = {"student_model_name_or_path": short} if student else {"teacher_model_name_or_path": short}
    recipe = _recipe(tmp_path, finetune_teacher=True, **values)
    _no_work(monkeypatch)
    assert main(["distill", recipe]) == 2
    err = capsys.readouterr().err
    field = "student_model_name_or_path" if student else "teacher_model_name_or_path"
    assert "max_length=64 is invalid; allowed: at most 32" in err
    assert f"{field}={short!r} has max_position_embeddings=32" in err


def test_max_length_counts_the_positions_roberta_reserves_for_padding(tmp_path):
    from transformers import RobertaConfig

    from hf_compress.loading import check_max_length

    config = RobertaConfig(max_position_embeddings=34, pad_token_id=1)
    check_max_length("max_length", 32, config, "teacher_model_name_or_path", "r")
    with pytest.raises(ValueError, match=r"max_length=33 is invalid; allowed: at most 32: .*=34 minus the 2"):
        check_max_length("max_length", 33, config, "teacher_model_name_or_path", "r")


def test_report_and_quantize_refuse_lengths_beyond_the_position_table(tmp_path, capsys, monkeypatch):
    short = tiny_checkpoint(tmp_path / "short", max_position_embeddings=32)
    data = tiny_text_csv(tmp_path / "data.csv")
    import hf_compress.cli.report as report

    monkeypatch.setattr(report, "find_tokenizer", lambda *a: (_ for _ in ()).throw(AssertionError("work")))
    assert main(["report", short, "--dataset", data, "--split", "train"]) == 2
    assert "--max-length=64 is invalid; allowed: at most 32" in capsys.readouterr().err
    argv = [
        "quantize",
        short,
        str(tmp_path / "q"),
        "--num_outlier_channels",
        "1",
        "--dataset_name",
        data,
        "--eval_split",
        "train",
    ]
    assert main(argv) == 2
    assert "max_length=64 is invalid; allowed: at most 32" in capsys.readouterr().err
    assert not (tmp_path / "q").exists()
