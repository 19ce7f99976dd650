"""Fields of int8 post-training quantization at the end of a run (and of `hf-compress quantize`), calibration
included: SmoothQuant, outlier channels in float, GPTQ rounding and per-token activation ranges."""

from __future__ import annotations

from dataclasses import dataclass

from ...checks import check_choice, check_positive_int, invalid, is_int, require
from ...config_fields import config_field

QUANTIZATIONS = ("none", "dynamic-int8")
ACTIVATION_RANGES = ("per_batch", "per_token")
WEIGHT_GRANULARITIES = ("per-row", "per-tensor")


@dataclass
class Int8Arguments:
    """Off unless quantization='dynamic-int8'. The calibrated steps run in the order SmoothQuant, outlier channels,
    GPTQ on the same `calibration_batches` batches (of the train split in a trainer, of the recipe's data in
    `hf-compress quantize`), then `quantize_`. The measured most faithful variant on the tweets teacher (an AVX-512
    VNNI CPU: 99.65% argmax agreement with fp32 at 2.18x its batch-32 speed) is smoothquant_alpha=0.75,
    num_outlier_channels=1, gptq=true, activation_range='per_token' (recipes/tweets-int8-calibrated.yaml)."""

    quantization: str = config_field(
        "none",
        "Post-training quantization applied after training, before the final save and push: 'none' or "
        "'dynamic-int8' (int8 Linear weights per channel, activations quantized at run time; int8 embeddings).",
    )
    quantization_modules_to_not_convert: list[str] | None = config_field(
        None, "Modules kept in full precision when quantizing, e.g. ['classifier']."
    )
    activation_range: str = config_field(
        "per_batch",
        "Run-time int8 range of Linear inputs: 'per_batch' (one per call, as torch's quantize_dynamic; fastest) or "
        "'per_token' (one per row; ~7 dB more SQNR, slower).",
    )
    weight_granularity: str = config_field(
        "per-row",
        "Scales of the int8 Linear weights: 'per-row' (one per output channel; the finer rounding) or 'per-tensor' "
        "(one per weight, as torch's quantize_dynamic; fbgemm's per-tensor kernel is a few percent faster at "
        "batch 32). Stored one per row either way, so both load alike.",
    )
    smoothquant_alpha: float | None = config_field(
        None,
        "SmoothQuant (Xiao et al. 2023, arXiv:2211.10438) before int8: migrate activation outliers into the weights "
        "with strength alpha in [0, 1]; null: off.",
    )
    num_outlier_channels: int = config_field(
        0,
        "Input channels per FFN down projection kept in float (LLM.int8()'s decomposition, Dettmers et al. 2022), "
        "the k with the largest calibration max |x|; 0: off.",
    )
    gptq: bool = config_field(
        False,
        "Round the int8 weights with GPTQ (Frantar et al. 2023, arXiv:2210.17323) on the calibration inputs "
        "instead of to nearest.",
    )
    calibration_batches: int = config_field(
        8,
        "Batches (of per_device_train_batch_size examples, in order) the calibrated steps measure: smoothquant_alpha, "
        "num_outlier_channels, gptq.",
    )

    @property
    def calibrated(self) -> bool:
        """Whether any step of int8 needs calibration data."""
        return self.smoothquant_alpha is not None or self.num_outlier_channels > 0 or self.gptq


def check_int8_arguments(args: Int8Arguments) -> None:
    """Field checks; the calibrated steps only with quantization='dynamic-int8'."""
    check_choice("quantization", args.quantization, QUANTIZATIONS)
    check_choice("activation_range", args.activation_range, ACTIVATION_RANGES)
    check_choice("weight_granularity", args.weight_granularity, WEIGHT_GRANULARITIES)
    alpha = args.smoothquant_alpha
    ok = alpha is None or (isinstance(alpha, (int, float)) and not isinstance(alpha, bool) and 0 <= alpha <= 1)
    require(ok, "smoothquant_alpha", alpha, "null or a number in [0, 1]")
    k = args.num_outlier_channels
    require(is_int(k) and k >= 0, "num_outlier_channels", k, "an integer >= 0")
    require(isinstance(args.gptq, bool), "gptq", args.gptq, "true or false")
    check_positive_int("calibration_batches", args.calibration_batches)
    if args.quantization == "none":
        for name, off in (("smoothquant_alpha", None), ("num_outlier_channels", 0), ("gptq", False)):
            if getattr(args, name) != off:
                raise invalid(name, getattr(args, name), f"{off!r} unless quantization='dynamic-int8'")
        for name, off in (("activation_range", "per_batch"), ("weight_granularity", "per-row")):
            if getattr(args, name) != off:
                raise invalid(name, getattr(args, name), f"{off!r} unless quantization='dynamic-int8'")
