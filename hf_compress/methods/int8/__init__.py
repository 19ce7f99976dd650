"""Int8 post-training quantization (dynamic int8 Linears, int8 embeddings), optionally calibrated first."""

from __future__ import annotations

from ..method import Method, ModuleKind
from .config import Int8Arguments, check_int8_arguments


def quantize_calibrated_(model, args, batches=None):
    """SmoothQuant, outlier channels and GPTQ as `args` asks (in that order, on the same `batches`), then
    `quantize_`; returns the int8 model. `args`: an `Int8Arguments` (or anything with its fields).

    Raises ValueError when a calibrated step is asked for without batches, or as each step does.
    """
    from ...checks import invalid
    from ...format.config import Int8QuantizationConfig
    from .calibration import Int8Calibration
    from .gptq import calibrate_gptq_
    from .outliers import keep_outlier_channels_
    from .smoothquant import smooth_activations_
    from .transform import quantize_

    calibration = Int8Calibration()
    if args.calibrated:
        if not batches:
            raise invalid("calibration_batches", args.calibration_batches, "batches of data to calibrate on (none)")
        n = len(batches)
        if args.smoothquant_alpha is not None:
            calibration |= smooth_activations_(model, batches, alpha=args.smoothquant_alpha, num_batches=n)
        if args.num_outlier_channels:
            k = args.num_outlier_channels
            calibration |= keep_outlier_channels_(model, batches, num_channels=k, num_batches=n)
        if args.gptq:
            calibration |= calibrate_gptq_(model, batches, num_batches=n)
    config = Int8QuantizationConfig(
        modules_to_not_convert=args.quantization_modules_to_not_convert,
        activation_range=args.activation_range,
        weight_granularity=args.weight_granularity,
    )
    return quantize_(model, config, calibration=calibration)


def quantize(trainer) -> None:
    """After pruning is baked and sliced; a factorised layout is quantized with its factors."""
    from ...format.config import is_layout_only_config

    existing = getattr(trainer.model.config, "quantization_config", None)
    if existing is not None and not is_layout_only_config(existing):
        return  # already int8 (a resumed or re-finalized run)
    args = trainer.args
    batches = None
    if args.calibrated:
        batches = trainer.calibration_batches(args.calibration_batches, "int8 calibration")
    quantize_calibrated_(trainer.model, args, batches)


METHOD = Method(
    name="int8",
    record="quantization",
    label="int8 post-training quantization",
    tags=("quantization", "int8"),
    arguments=Int8Arguments,
    stages=("finalize",),
    enabled=lambda args: args.quantization != "none",
    check=check_int8_arguments,
    finalize=quantize,
)


def _per_token(config) -> bool:
    return config.activation_range == "per_token"


def _empty_linear(module, config, saved_name):
    from .modules import Int8Linear

    smoothed = config.quantized_modules[saved_name] == "smoothed_linear"
    outliers = config.outlier_channels.get(saved_name, 0)
    bias, device = module.bias is not None, module.weight.device
    return Int8Linear(
        module.in_features, module.out_features, bias, _per_token(config), device, None, smoothed, outliers
    )


def _empty_embedding(module, config, saved_name):
    from .modules import Int8Embedding

    return Int8Embedding(module.num_embeddings, module.embedding_dim, module.padding_idx, module.weight.device)


# "smoothed_linear": an Int8Linear that multiplies its input by a saved per-channel `input_scale` (SmoothQuant's 1/s).
KINDS = (
    ModuleKind("linear", "int8", _empty_linear),
    ModuleKind("smoothed_linear", "int8", _empty_linear),
    ModuleKind("embedding", "int8", _empty_embedding),
)
