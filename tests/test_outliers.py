"""Outlier channels in float: exact split arithmetic, input left intact, the channels it finds, round trip, errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors import safe_open
from torch import nn
from transformers import AutoModelForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

from hf_compress import (
    Int8QuantizationConfig,
    calibrate_gptq_,
    keep_outlier_channels_,
    quantize_,
    smooth_activations_,
)
from hf_compress.methods.int8.modules import Int8Linear
from tests.test_smoothing import TEST_BATCH, batches, logits, sqnr_db
from tests.testing_utils import VOCAB, tiny_bert

PER_BATCH = Int8QuantizationConfig(activation_range="per_batch")
CHANNEL = 7


def with_ffn_outlier(model: nn.Module, channel: int = CHANNEL, shift: float = 40.0) -> nn.Module:
    """A large positive bias on one FFN intermediate channel of every layer: the FFN down input gets an outlier
    channel (GELU passes it), the kind SmoothQuant cannot fold anywhere."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith("intermediate.dense") or name.endswith("ffn.lin1"):
                module.bias[channel] += shift
    return model


def tiny_distilbert() -> DistilBertForSequenceClassification:
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64, num_labels=3
    )
    return DistilBertForSequenceClassification(config).eval()


FFN_DOWN = {"bert": "bert.encoder.layer.{}.output.dense", "distilbert": "distilbert.transformer.layer.{}.ffn.lin2"}
MODELS = {"bert": lambda: with_ffn_outlier(tiny_bert(0)), "distilbert": lambda: with_ffn_outlier(tiny_distilbert())}


def outlier_linear(seed: int = 0) -> tuple[nn.Linear, torch.Tensor]:
    torch.manual_seed(seed)
    linear = nn.Linear(64, 48)
    x = torch.randn(3, 20, 64)
    x[:, :2, 5] = 80.0  # channel 5 of two tokens per sequence: an outlier that sets a per-batch range
    return linear, x


# ---------------------------------------------------------------- the module


def test_outlier_channels_compute_the_same_linear_with_a_finer_int8_range():
    linear, x = outlier_linear()
    plain = Int8Linear.from_linear(linear, per_token=False)
    split = Int8Linear.from_linear(linear, per_token=False, outlier_channels=torch.tensor([5]))
    with torch.no_grad():
        reference = linear(x)
        assert sqnr_db(reference, split(x)) >= sqnr_db(reference, plain(x)) + 10
        assert sqnr_db(reference, split(x)) >= 30
    assert torch.equal(split.int8_weight()[:, 5], torch.zeros(48, dtype=torch.int8))  # the column left int8
    assert torch.equal(split.outlier_weight, linear.weight.detach()[:, [5]])


@pytest.mark.parametrize("smoothed", [False, True], ids=["plain", "smoothed"])
@pytest.mark.parametrize("context", ["no_grad", "inference_mode", "inference_tensor", "view", "autograd"])
def test_forward_leaves_the_input_as_it_was(context, smoothed):
    linear, x = outlier_linear()
    smoothing = torch.rand(64) + 0.5 if smoothed else None
    module = Int8Linear.from_linear(linear, False, smoothing=smoothing, outlier_channels=torch.tensor([5, 9]))
    with torch.no_grad():
        expected = module(x.clone())
    if context == "inference_tensor":
        with torch.inference_mode():
            x = x.clone()
    original = x.clone()
    if context == "inference_mode":
        with torch.inference_mode():
            y = module(x)
    elif context == "view":
        wide = torch.cat([x, x], dim=-1)
        x, original = wide[..., ::2], wide[..., ::2].clone()  # strided: no in-place edit
        with torch.no_grad():
            y = module(x)
        expected = module(original)
    elif context == "autograd":
        x.requires_grad_(True)
        y = module(x)
        y.sum().backward()
        assert x.grad is not None and x.grad[..., 5].abs().sum() > 0  # the float channels pass gradients too
    else:
        with torch.no_grad():
            y = module(x)
    assert torch.equal(x.detach(), original)
    assert torch.allclose(y.detach(), expected, atol=1e-5)


# ---------------------------------------------------------------- calibration on models


@pytest.mark.parametrize("family", list(MODELS))
def test_calibration_finds_the_outlier_channel_and_keeps_float_outputs(family):
    model = MODELS[family]()
    before = logits(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    buffers = [n for n, _ in model.named_buffers()]  # non-persistent ones too
    calibration = keep_outlier_channels_(model, batches(), num_channels=2)
    assert torch.equal(logits(model), before)
    assert set(calibration.outlier_channels) == {FFN_DOWN[family].format(i) for i in range(2)}
    for channels in calibration.outlier_channels.values():
        assert CHANNEL in channels.tolist() and len(channels) == 2
    assert not calibration.smoothing and not calibration.hessians
    # Nothing is left on the model: its state and buffers are the float model's.
    assert [n for n, _ in model.named_buffers()] == buffers
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    record = model.config.compression["outlier_channels"]
    assert record["num_channels"] == 2 and record["linears"] == 2 and record["calibration_batches"] == 4


@pytest.mark.parametrize("family", list(MODELS))
def test_outlier_channels_raise_int8_sqnr(family):
    model = MODELS[family]()
    reference = logits(model)
    # The FFN down projections alone in int8: their error is what the outlier channels remove.
    config = Int8QuantizationConfig(
        activation_range="per_batch", modules_to_convert=[FFN_DOWN[family].format(i) for i in range(2)]
    )
    plain = sqnr_db(reference, logits(quantize_(copy.deepcopy(model), config)))
    split = sqnr_db(reference, logits(quantize_(model, config, calibration=keep_outlier_channels_(model, batches()))))
    assert split >= plain + 6, (plain, split)


@pytest.mark.parametrize("activation_range", ["per_batch", "per_token"])
def test_round_trip_with_smoothing_and_gptq(tmp_path, activation_range):
    """The whole calibrated chain (SmoothQuant, outlier channels, GPTQ), with either activation range: per-token
    ranges are the most faithful variant where the int8 matmul is fast (benchmarks/int8_fidelity_choice.py)."""
    model = with_ffn_outlier(tiny_bert(0))
    calibration = smooth_activations_(model, batches(), alpha=0.5) | keep_outlier_channels_(model, batches())
    calibration |= calibrate_gptq_(model, batches())
    config = Int8QuantizationConfig(activation_range=activation_range)
    quantize_(model, config, calibration=calibration).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert saved["outlier_channels"] == {FFN_DOWN["bert"].format(i): 1 for i in range(2)}
    assert saved["quantized_modules"]["bert.encoder.layer.0.attention.self.query"] == "smoothed_linear"
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert f.get_tensor("bert.encoder.layer.0.output.dense.outlier_channels").tolist() == [CHANNEL]
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert loaded.bert.encoder.layer[1].output.dense.outlier_weight.shape == (32, 1)
    assert all(m.per_token is (activation_range == "per_token") for m in loaded.modules() if isinstance(m, Int8Linear))
    assert torch.equal(logits(loaded), logits(model))


def test_a_checkpoint_without_outlier_channels_does_not_name_the_field(tmp_path):
    quantize_(tiny_bert(0), PER_BATCH).save_pretrained(tmp_path)
    assert "outlier_channels" not in json.loads((tmp_path / "config.json").read_text())["quantization_config"]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_channels": 0}, "num_channels=0 is invalid; allowed: an integer >= 1"),
        ({"num_channels": 64}, "num_channels=64 is invalid; allowed: 1 to 63"),
        ({"num_batches": 0}, "num_batches=0 is invalid; allowed: an integer >= 1"),
        ({"modules": ["bert.embeddings.word_embeddings"]}, "modules=.* is invalid; allowed: names of nn.Linear"),
        ({"modules": ["bert.nope"]}, "modules=.* is invalid; allowed: names of nn.Linear"),
        ({"modules": []}, r"modules=\[\] is invalid; allowed: at least one nn.Linear"),
        ({"dataloader": []}, "dataloader='an empty iterable' is invalid"),
    ],
)
def test_bad_input_is_refused_before_the_model_changes(kwargs, message):
    model = tiny_bert()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        keep_outlier_channels_(model, **{"dataloader": batches(), **kwargs})
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert "outlier_channels" not in (getattr(model.config, "compression", None) or {})


def test_quantized_models_are_refused():
    with pytest.raises(ValueError, match="already quantized"):
        keep_outlier_channels_(quantize_(tiny_bert()), batches())


def test_test_batch_is_untouched_by_the_int8_forward():
    # The model-level in-place path (FFN activations zeroed and restored) must not leak into the caller's inputs.
    model = with_ffn_outlier(tiny_bert(0))
    model = quantize_(model, PER_BATCH, calibration=keep_outlier_channels_(model, batches()))
    ids = TEST_BATCH["input_ids"].clone()
    first, second = logits(model), logits(model)
    assert torch.equal(first, second) and torch.equal(TEST_BATCH["input_ids"], ids)


@pytest.mark.parametrize("value", [{"a": 0}, {"a": True}, {"a": 1.5}])
def test_config_refuses_bad_outlier_counts(value):
    with pytest.raises(ValueError, match="outlier_channels=.* is invalid; allowed: name -> an integer >= 1"):
        Int8QuantizationConfig(outlier_channels=value)
