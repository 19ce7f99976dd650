"""GPTQ rounding: lower output error than round-to-nearest on the inputs it saw, same format, clear errors."""

from __future__ import annotations

import copy

import pytest
import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoModelForSequenceClassification

from hf_compress import (
    Int8Calibration,
    Int8QuantizationConfig,
    calibrate_gptq_,
    keep_outlier_channels_,
    quantize_,
    smooth_activations_,
)
from hf_compress.methods.int8.gptq import gptq_quantize_rows
from hf_compress.methods.int8.rounding import LINEAR_QMAX, linear_codes, pairs_fit
from tests.test_outliers import with_ffn_outlier
from tests.test_smoothing import batches, logits
from tests.testing_utils import tiny_bert

PER_BATCH = Int8QuantizationConfig(activation_range="per_batch")


def output_error(weight: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor, h: torch.Tensor) -> float:
    """E ||(W - Q) x||^2 = tr((W - Q) H (W - Q)^T) for H = E[x x^T]."""
    delta = (weight - codes.float() * scale[:, None]).double()
    return torch.einsum("oi,ij,oj->", delta, h.double(), delta).item()


def correlated_inputs(n: int = 2000, width: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(8, width, generator=generator)
    return torch.randn(n, 8, generator=generator) @ mixing + 0.1 * torch.randn(n, width, generator=generator)


def test_gptq_rounds_to_a_lower_output_error_with_round_to_nearest_scales():
    torch.manual_seed(0)
    weight = torch.randn(48, 64)
    x = correlated_inputs()
    h = x.T @ x / len(x)
    rtn_codes, rtn_scale = linear_codes(weight, h.double() + 0.01 * h.diagonal().mean().double() * torch.eye(64))
    codes, scale = gptq_quantize_rows(weight, h)
    assert torch.equal(scale, rtn_scale)  # the on-disk format is round-to-nearest's
    assert codes.dtype == torch.int8 and codes.abs().max() <= LINEAR_QMAX and pairs_fit(codes)
    assert not torch.equal(codes, rtn_codes)
    assert output_error(weight, codes, scale, h) < 0.5 * output_error(weight, rtn_codes, rtn_scale, h)


def test_channels_without_input_get_zero_codes():
    torch.manual_seed(0)
    weight = torch.randn(16, 32)
    x = correlated_inputs(500, 32)
    x[:, 3] = 0.0
    codes, _ = gptq_quantize_rows(weight, x.T @ x / len(x))
    assert torch.equal(codes[:, 3], torch.zeros(16, dtype=torch.int8))


@pytest.mark.parametrize("prepare", ["plain", "smoothed", "outliers"])
def test_calibrated_quantize_lowers_each_linears_error_on_the_calibration_inputs(prepare):
    """GPTQ minimises ||(W - Q) x|| over the inputs the int8 weight sees (after 1/s and without outlier channels):
    measured with the float matmul on the int8 weights (`_reference_forward`), it must beat round-to-nearest."""
    model = with_ffn_outlier(tiny_bert(0))
    calibration = Int8Calibration()
    if prepare == "smoothed":
        calibration = smooth_activations_(model, batches(), alpha=0.5)
    elif prepare == "outliers":
        calibration = keep_outlier_channels_(model, batches())
    rtn = quantize_(copy.deepcopy(model), PER_BATCH, calibration=calibration)
    hessians = calibrate_gptq_(model, batches())
    gptq = quantize_(copy.deepcopy(model), PER_BATCH, calibration=calibration | hessians)
    names = ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.output.dense"]
    inputs = {}
    handles = [
        model.get_submodule(n).register_forward_pre_hook(lambda m, a, n=n: inputs.setdefault(n, []).append(a[0]))
        for n in names
    ]
    with torch.no_grad():
        for batch in batches():
            model(**batch)
    for handle in handles:
        handle.remove()
    for name in names:
        errors = {}
        for label, quantized in (("rtn", rtn), ("gptq", gptq)):
            module = quantized.get_submodule(name)
            total = 0.0
            for x in inputs[name]:
                with torch.no_grad():
                    y = model.get_submodule(name)(x)
                    if module.input_scale is not None:
                        x = x * module.input_scale
                    if module.outlier_channels is not None:
                        outliers = x.index_select(-1, module.outlier_channels)
                        x = x.index_fill(-1, module.outlier_channels, 0.0)
                        y = y - outliers @ module.outlier_weight.T
                    total += (y - module._reference_forward(x)).pow(2).sum().item()
            errors[label] = total
        assert errors["gptq"] < 0.8 * errors["rtn"], (name, errors)


def test_round_trip_keeps_the_gptq_codes_and_saves_no_hessian(tmp_path):
    model = with_ffn_outlier(tiny_bert(0))
    calibration = calibrate_gptq_(model, batches())
    assert calibration.hessians["bert.encoder.layer.1.output.dense"].shape == (64, 64)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    assert sorted(calibration.hessians) == sorted(linears)
    assert model.config.compression["gptq"]["linears"] == len(linears)
    quantize_(model, PER_BATCH, calibration=calibration).save_pretrained(tmp_path)
    assert model.config.compression["quantization"]["gptq_rounded"] == len(linears)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert not any("hessian" in k for k in f.keys())
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert torch.equal(
        loaded.bert.encoder.layer[0].intermediate.dense.weight, model.bert.encoder.layer[0].intermediate.dense.weight
    )
    assert torch.equal(logits(loaded), logits(model))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_batches": 0}, "num_batches=0 is invalid; allowed: an integer >= 1"),
        ({"modules": ["bert.embeddings.word_embeddings"]}, "modules=.* is invalid; allowed: names of nn.Linear"),
        ({"modules": []}, r"modules=\[\] is invalid; allowed: at least one nn.Linear"),
        ({"dataloader": []}, "dataloader='an empty iterable' is invalid"),
        ({"dataloader": [{"attention_mask": torch.ones(2, 3)}]}, "dataloader=.* is invalid; allowed: batches that"),
    ],
)
def test_bad_input_is_refused_before_the_model_changes(kwargs, message):
    model = tiny_bert()
    with pytest.raises(ValueError, match=message):
        calibrate_gptq_(model, **{"dataloader": batches(), **kwargs})
    assert "gptq" not in (getattr(model.config, "compression", None) or {})


def test_quantized_models_are_refused():
    with pytest.raises(ValueError, match="already quantized"):
        calibrate_gptq_(quantize_(tiny_bert()), batches())
