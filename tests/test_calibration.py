"""Int8Calibration: the calibration steps' results, passed to quantize_ explicitly and checked against the model."""

import pytest
import torch

from hf_compress import Int8Calibration, calibrate_gptq_, keep_outlier_channels_, quantize_, smooth_activations_
from hf_compress.methods.int8.modules import Int8Linear
from tests.testing_utils import tiny_batch, tiny_bert

DOWN = "bert.encoder.layer.0.output.dense"  # 64 -> 32 in tiny_bert
QUERY = "bert.encoder.layer.0.attention.self.query"  # 32 -> 32


def batches(n: int = 3) -> list[dict]:
    return [{k: v for k, v in tiny_batch(seed=i).items() if k != "labels"} for i in range(n)]


def test_steps_compose_with_or_and_a_linear_calibrated_twice_is_refused():
    model = tiny_bert(0)
    smoothing, outliers = smooth_activations_(model, batches()), keep_outlier_channels_(model, batches())
    both = smoothing | outliers
    assert both.smoothing.keys() == smoothing.smoothing.keys() and both.outlier_channels.keys() == {
        f"bert.encoder.layer.{i}.output.dense" for i in range(2)
    }
    assert bool(both) and not Int8Calibration()
    with pytest.raises(ValueError, match=r"calibration=.two outlier_channels for .* is invalid; allowed: each Linear"):
        outliers | keep_outlier_channels_(model, batches())


def test_quantize_uses_exactly_what_it_is_given():
    model = tiny_bert(0)
    calibration = keep_outlier_channels_(model, batches(), num_channels=2) | calibrate_gptq_(model, batches())
    quantize_(model, calibration=calibration)
    record = model.config.compression["quantization"]
    assert record["with_outlier_channels"] == 2 and record["gptq_rounded"] == len(calibration.hessians)
    for name, channels in calibration.outlier_channels.items():
        assert torch.equal(model.get_submodule(name).outlier_channels, channels)
    plain = quantize_(tiny_bert(0))  # without a calibration: round-to-nearest, no float channels
    assert plain.config.compression["quantization"]["with_outlier_channels"] == 0
    assert plain.config.compression["quantization"]["gptq_rounded"] == 0


@pytest.mark.parametrize(
    "calibration, message",
    [
        (Int8Calibration(smoothing={"bert.nope": torch.ones(32)}), r"'bert.nope' \(no module\)"),
        (Int8Calibration(hessians={"bert.embeddings.word_embeddings": torch.eye(32)}), r"\(a Embedding\)"),
        (Int8Calibration(smoothing={QUERY: torch.ones(16)}), r"smoothing .* of shape \(16,\).*allowed: shape \(32,\)"),
        (Int8Calibration(hessians={DOWN: torch.eye(32)}), r"hessian .* of shape \(32, 32\).*allowed: \(64, 64\)"),
        (Int8Calibration(outlier_channels={DOWN: torch.tensor([64])}), "allowed: fewer than 64 indices below 64"),
        (Int8Calibration(outlier_channels={"classifier": torch.tensor([1])}), r"'classifier' \(kept float\)"),
        ({"smoothing": {}}, "calibration='dict' is invalid; allowed: an Int8Calibration or None"),
    ],
)
def test_a_calibration_that_does_not_fit_the_model_is_refused_before_any_module_changes(calibration, message):
    from hf_compress import Int8QuantizationConfig

    model = tiny_bert(0)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    config = Int8QuantizationConfig(modules_to_not_convert=["classifier"])
    with pytest.raises(ValueError, match=message):
        quantize_(model, config, calibration=calibration)
    assert not any(isinstance(m, Int8Linear) for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert "quantization" not in (getattr(model.config, "compression", None) or {})
