"""quantize_: post-training int8 quantization of a transformers model in place, and its on-disk counterpart."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable

import torch
import transformers
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel
from transformers.quantizers.quantizers_utils import should_convert_module

from ... import provenance
from ...checks import invalid
from ...format.config import QUANT_METHOD, Int8QuantizationConfig, is_layout_only_config
from .calibration import Int8Calibration
from .modules import Int8Embedding, Int8Linear, PackedInt8Module

logger = logging.getLogger(__name__)

FilterFn = Callable[[nn.Module, str], bool]
# Every module a quantization of ours makes: Linears with int8 or narrower packed weights (and other methods' int8
# modules, e.g. the int8 factors of a factorised Linear) compute through PackedInt8Module; embeddings have their own
# classes.
INT8_MODULES = (PackedInt8Module, Int8Embedding)


def converted_kinds() -> list:
    """The module kinds of other methods that quantize_ makes from their float modules (ModuleKind.converts), e.g.
    int8 factors from a factorised Linear, read from the table of module kinds."""
    from ...format.kinds import MODULE_KINDS  # the table imports the methods' packages, this one included

    return [kind for kind in MODULE_KINDS.values() if kind.converts is not None]


def quantize_(
    model: PreTrainedModel,
    config: Int8QuantizationConfig | None = None,
    filter_fn: FilterFn | None = None,
    calibration: Int8Calibration | None = None,
) -> PreTrainedModel:
    """Quantize `model` in place to int8 and return it; `filter_fn(module, name)` returning False keeps a module float.

    Every nn.Linear gets int8 weights (one scale per output channel) and int8 activations quantized at run time (one
    range per batch by default, per token with activation_range="per_token"), with int32 accumulation
    (https://arxiv.org/abs/1712.05877); the input word embeddings get int8 weights with one scale per row. Nothing
    is calibrated unless `calibration` (what smooth_activations_, keep_outlier_channels_ and calibrate_gptq_ return,
    combined with `|`) says otherwise: SmoothQuant's input scales, float outlier channels, GPTQ rounding, per Linear.
    Another method's float module that a module kind converts (e.g. a factorised Linear: both factors in int8)
    becomes that kind, and the config records each method's layout (e.g. the rank of every factorised module).
    `model.save_pretrained` then writes the int8 tensors to safetensors, and `from_pretrained` reads them back once
    hf_compress is imported.
    Raises ValueError before any module is replaced for a quantized model, a config naming no module, or a
    calibration that does not fit the model (see `Int8Calibration.check`).
    """
    config = config or Int8QuantizationConfig()
    check_not_quantized(model)
    if config.quantized_modules:
        raise ValueError(
            f"config.quantized_modules={config.quantized_modules!r} is written by quantize_; pass a config without it"
        )
    if calibration is not None and not isinstance(calibration, Int8Calibration):
        raise invalid("calibration", type(calibration).__name__, "an Int8Calibration or None")
    return apply_quantization(model, config, filter_fn, calibration)


def check_not_quantized(model: nn.Module, check_config: bool = True) -> None:
    """Raise a ValueError if any part of `model` is already quantized (by hf_compress or another method)."""
    for name, module in model.named_modules():
        if isinstance(module, INT8_MODULES) or type(module).__module__.startswith("torch.ao.nn.quantized"):
            raise ValueError(
                f"model is already quantized ({name or 'model'} is a {type(module).__name__}); quantize_ needs a "
                "full-precision model, e.g. the checkpoint it was quantized from"
            )
    existing = getattr(getattr(model, "config", None), "quantization_config", None)
    # A layout-only config (factorize_linear_'s) records float modules: not a quantization.
    if check_config and existing is not None and not is_layout_only_config(existing):
        method = existing.get("quant_method") if isinstance(existing, dict) else getattr(existing, "quant_method", "")
        raise ValueError(
            f"model is already quantized (config.quantization_config has quant_method={method!r}); quantize_ needs "
            "a full-precision model"
        )


def select_modules(model: nn.Module, config: Int8QuantizationConfig, filter_fn: FilterFn | None = None) -> dict:
    """Names of the modules `config` and `filter_fn` select, mapped to their kind: 'linear', 'embedding', or the kind
    that converts another method's module (e.g. int8 factors of a factorised Linear)."""
    modules = dict(model.named_modules())
    kinds = converted_kinds()

    def kind_of(module) -> str | None:
        for kind in kinds:
            if kind.converts(module):
                return kind.name
        return "linear" if isinstance(module, nn.Linear) else None

    if config.modules_to_convert is not None:
        missing = [n for n in config.modules_to_convert if n not in modules]
        if missing:
            raise ValueError(f"modules_to_convert names {missing}, which are not modules of {type(model).__name__}")
        candidates = list(config.modules_to_convert)
    else:
        word_embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        candidates = [
            name
            for name, module in modules.items()
            if kind_of(module) is not None or (config.quantize_embeddings and module is word_embeddings)
        ]

    excluded = config.modules_to_not_convert or []
    for pattern in excluded:
        if all(should_convert_module(name, [pattern]) for name in modules if name):
            raise ValueError(f"modules_to_not_convert entry {pattern!r} matches no module of {type(model).__name__}")
    candidates = [n for n in candidates if should_convert_module(n, excluded)]
    if filter_fn is not None:
        candidates = [n for n in candidates if filter_fn(modules[n], n)]

    selected = {}
    for name in candidates:
        module = modules[name]
        kind = kind_of(module)
        if kind is None and isinstance(module, nn.Embedding):
            kind = "embedding"
        if kind is None:
            raise ValueError(
                f"cannot quantize {name!r}: it is a {type(module).__name__}; only nn.Linear, nn.Embedding and the "
                f"modules of kinds {[k.name for k in kinds]} are supported"
            )
        selected[name] = kind

    # A weight shared by two modules (tied input/output embeddings) must stay one float tensor to stay tied.
    owners: dict[int, list[str]] = {}
    for name, module in modules.items():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            owners.setdefault(id(weight), []).append(name)
    for name in list(selected):
        sharing = owners[id(modules[name].weight)]
        if len(sharing) > 1:
            logger.warning("keeping %s in full precision: its weight is tied to %s", name, sharing)
            del selected[name]
    return selected


def apply_quantization(
    model: PreTrainedModel,
    config: Int8QuantizationConfig,
    filter_fn: FilterFn | None,
    calibration: Int8Calibration | None = None,
) -> PreTrainedModel:
    """Replace the selected modules, then record the result in the model's config (quantizers call this too)."""
    start = time.perf_counter()
    selected = select_modules(model, config, filter_fn)
    if not selected:
        raise ValueError("no module selected for quantization: check modules_to_convert / modules_to_not_convert")
    calibration = calibration or Int8Calibration()
    calibration.check(model, selected)
    per_token = config.activation_range == "per_token"
    per_tensor = config.weight_granularity == "per-tensor"
    # Each method's layout (e.g. every factorised module, int8 or kept float): the loader rebuilds it before
    # swapping in the int8 modules.
    from .. import METHODS  # the table imports this package

    layout = {}
    for method in METHODS:
        if method.layout is not None:
            layout.update(method.layout(model))
    converters = {kind.name: kind.from_float for kind in converted_kinds()}
    outliers: dict[str, int] = {}
    gptq = 0
    for name, kind in list(selected.items()):
        module = model.get_submodule(name)
        if kind in converters:
            new = converters[kind](module, per_token, per_tensor)
        elif kind == "linear":
            device = module.weight.device
            smoothing, channels, hessian = (None if t is None else t.to(device) for t in calibration.for_linear(name))
            new = Int8Linear.from_linear(module, per_token, smoothing, channels, hessian, per_tensor)
            selected[name] = "linear" if smoothing is None else "smoothed_linear"
            if channels is not None:
                outliers[name] = channels.numel()
            gptq += hessian is not None
        else:
            new = Int8Embedding.from_embedding(module)
        model.set_submodule(name, new)
    config = dataclasses.replace(config, quantized_modules=selected, outlier_channels=outliers, **layout)
    attach(model, config)
    provenance.record(
        model.config,
        "quantization",
        {
            "method": QUANT_METHOD,
            "linear": sum(k in ("linear", "smoothed_linear") for k in selected.values()),
            **{name: sum(k == name for k in selected.values()) for name in converters},
            "smoothed_linear": sum(k == "smoothed_linear" for k in selected.values()),
            "with_outlier_channels": len(outliers),
            "gptq_rounded": gptq,
            "embedding": sum(k == "embedding" for k in selected.values()),
            "seconds": round(time.perf_counter() - start, 2),
        },
    )
    return model


def attach(model: PreTrainedModel, config: Int8QuantizationConfig) -> None:
    """Mark `model` as quantized exactly as `from_pretrained` does, so that save_pretrained records the config."""
    from ...format.quantizer import attach as attach_config  # the quantizer imports this module when loading

    attach_config(model, config)


def quantize_pretrained(
    model_dir: str, output_dir: str, config: Int8QuantizationConfig | None = None, filter_fn: FilterFn | None = None
) -> str:
    """Load a saved model, quantize it to int8 and save it (with its tokenizer and sentence-transformers files, if
    any) to `output_dir`."""
    model_config = AutoConfig.from_pretrained(model_dir)
    architectures = getattr(model_config, "architectures", None) or []
    model_class = getattr(transformers, architectures[0], None) if architectures else None
    model_class = model_class or AutoModelForSequenceClassification
    model = model_class.from_pretrained(model_dir, use_safetensors=True).eval()  # never unpickle a .bin
    quantize_(model, config, filter_fn)
    model.save_pretrained(output_dir)
    if any(os.path.exists(os.path.join(model_dir, f)) for f in ("tokenizer.json", "tokenizer_config.json")):
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(output_dir)
    from ...tasks.sentence_embedding import keep_sentence_transformers_files

    keep_sentence_transformers_files(model_dir, output_dir, model.config.hidden_size)
    return output_dir
