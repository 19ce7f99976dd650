"""`hf-compress quantize`: the int8 method's fields (calibration included) from a recipe or flags, as in Python."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_compress  # noqa: F401  the int8 loader
from hf_compress.cli import main
from hf_compress.cli.quantize import calibration_data, parse
from hf_compress.methods.int8 import quantize_calibrated_
from tests.testing_utils import tiny_checkpoint, tiny_text_csv

CALIBRATED = {
    "activation_range": "per_token",
    "smoothquant_alpha": 0.75,
    "num_outlier_channels": 1,
    "gptq": True,
    "calibration_batches": 2,
    "calibration_batch_size": 4,
}


@pytest.fixture
def source(tmp_path):
    path = tiny_checkpoint(tmp_path / "fp32")
    data = tiny_text_csv(tmp_path / "data.csv", n=40)
    return path, data


def write_recipe(tmp_path, **fields) -> str:
    path = tmp_path / "quantize.yaml"
    path.write_text(yaml.safe_dump(fields))
    return str(path)


def logits(model_dir: str) -> torch.Tensor:
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoded = tokenizer(["w1 w2 w3", "w10 w400 w7 w8 w9"], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**encoded).logits


def test_calibrated_recipe_reproduces_the_python_chain(tmp_path, source):
    """The recipe's SmoothQuant + outlier channels + GPTQ + per-token int8 equals the same chain called in Python on
    the same calibration batches, and config.json says what was applied."""
    path, data = source
    out = tmp_path / "int8"
    recipe = write_recipe(tmp_path, model_name_or_path=path, output_dir=str(out), dataset_name=data, **CALIBRATED)
    assert main(["quantize", recipe]) == 0

    config = json.loads((out / "config.json").read_text())
    q = config["quantization_config"]
    assert q["activation_range"] == "per_token"
    kinds = set(q["quantized_modules"].values())
    assert "smoothed_linear" in kinds  # SmoothQuant's 1/s kept where it cannot be folded
    assert q["outlier_channels"] and set(q["outlier_channels"].values()) == {1}
    recorded = config["compression"]["quantization"]
    assert recorded["gptq_rounded"] > 0 and recorded["with_outlier_channels"] == len(q["outlier_channels"])

    recipe_args, args = parse([recipe])
    tokenizer = AutoTokenizer.from_pretrained(path)
    batches = calibration_data(recipe_args, args, tokenizer)
    assert len(batches) == 2 and batches[0]["input_ids"].shape[0] == 4
    expected = quantize_calibrated_(AutoModelForSequenceClassification.from_pretrained(path).eval(), args, batches)
    encoded = tokenizer(["w1 w2 w3", "w10 w400 w7 w8 w9"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(logits(str(out)), expected(**encoded).logits, rtol=0, atol=1e-6)


def test_flags_override_the_recipe_and_positionals_still_work(tmp_path, source):
    path, data = source
    out = tmp_path / "plain"
    flags = ["--activation_range", "per_token", "--weight_granularity", "per-tensor"]
    assert main(["quantize", path, str(out), *flags]) == 0
    q = json.loads((out / "config.json").read_text())["quantization_config"]
    assert q["activation_range"] == "per_token" and q["weight_granularity"] == "per-tensor"
    recipe = write_recipe(tmp_path, model_name_or_path=path, output_dir=str(out), dataset_name=data, **CALIBRATED)
    # The folder now holds a model: refused, and the remedy the message names works.
    assert main(["quantize", recipe]) == 2
    assert main(["quantize", recipe, "--overwrite_output", "true", "--gptq", "false"]) == 0
    recorded = json.loads((out / "config.json").read_text())["compression"]["quantization"]
    assert recorded["gptq_rounded"] == 0


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"smoothquant_alpha": 1.5}, "smoothquant_alpha=1.5 is invalid; allowed: null or a number in [0, 1]"),
        ({"num_outlier_channels": -1}, "num_outlier_channels=-1 is invalid"),
        ({"activation_range": "per_row"}, "activation_range='per_row' is invalid"),
        ({"weight_granularity": "per-group"}, "weight_granularity='per-group' is invalid"),
        (
            {"weight_granularity": "per-tensor", "runtime": "openvino"},
            "weight_granularity='per-tensor' is invalid; allowed: 'per-row' with runtime='openvino'",
        ),
        ({"quantization": "none"}, "quantization='none' is invalid"),
        ({"calibration_batch_size": 0}, "calibration_batch_size=0 is invalid"),
    ],
)
def test_bad_fields_are_refused_before_loading(tmp_path, capsys, source, fields, message):
    path, _ = source
    recipe = write_recipe(tmp_path, model_name_or_path=path, output_dir=str(tmp_path / "out"), **fields)
    assert main(["quantize", recipe]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_trainer_applies_the_same_calibrated_int8_at_finalization(tmp_path):
    """quantization='dynamic-int8' with the calibration fields in CompressionTrainingArguments: the final model is
    calibrated int8 (SmoothQuant, outliers, GPTQ, per-token), with the weight granularity asked for."""
    from hf_compress import CompressionTrainer, CompressionTrainingArguments
    from tests.testing_utils import tiny_bert, tiny_dataset, training_args

    teacher, student = tiny_bert(seed=0), tiny_bert(seed=1)
    fields = {k: v for k, v in CALIBRATED.items() if k != "calibration_batch_size"}
    fields["weight_granularity"] = "per-tensor"
    args = training_args(CompressionTrainingArguments, tmp_path, quantization="dynamic-int8", **fields)
    trainer = CompressionTrainer(model=student, teacher_model=teacher, args=args, train_dataset=tiny_dataset())
    trainer.train()
    q = trainer.model.config.quantization_config
    assert q.activation_range == "per_token" and q.outlier_channels
    assert "smoothed_linear" in set(q.quantized_modules.values())
    assert trainer.model.config.compression["quantization"]["gptq_rounded"] > 0
    assert q.weight_granularity == "per-tensor"
    scales = [m.weight_scale for m in trainer.model.modules() if type(m).__name__ == "Int8Linear"]
    assert scales and all(torch.all(s == s[0]) for s in scales)


def test_calibration_fields_need_int8(tmp_path):
    from hf_compress import CompressionTrainingArguments

    with pytest.raises(ValueError, match="gptq=True is invalid; allowed: False unless quantization='dynamic-int8'"):
        CompressionTrainingArguments(output_dir=str(tmp_path), gptq=True)
    with pytest.raises(ValueError, match="weight_granularity='per-tensor' is invalid; allowed: 'per-row' unless"):
        CompressionTrainingArguments(output_dir=str(tmp_path), weight_granularity="per-tensor")
