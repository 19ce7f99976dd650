"""Our int8 and low-bit checkpoints in the `compressed-tensors` format, which stock transformers loads.

`write_compressed_tensors(model, directory)` saves a model holding hf_compress's quantized modules so that a process
that never imports hf_compress loads it with `AutoModelFor...from_pretrained(directory)` (with the
`compressed-tensors` package installed: transformers' own `CompressedTensorsHfQuantizer` reads it). The format is
vLLM / llm-compressor's (https://github.com/neuralmagic/compressed-tensors); each of our module kinds maps onto one of
its schemes, with our codes and scales (written by compressed-tensors' own compressor, so the layout is its own):

- Int8Linear, plain: `int-quantized` (int8 weight (out, in), `weight_scale` (out, 1)) with int8 activations, dynamic
  and symmetric, per token (`activation_range="per_token"`) or per tensor ("per_batch"). Our codes and scales.
- Int8Linear smoothed (SmoothQuant) or with outlier channels, and Int8LowRankLinear: `int-quantized`, re-quantized per
  row from the weight the module computes with (1/s folded into the columns; outlier columns merged; factors
  multiplied out). One more rounding, measured by the export's check; the record names each such module and why.
- Int8Embedding: `int-quantized`, weight only, per row. Our codes and scales.
- LowBitLinear (8/4/2 bit): `pack-quantized` (int32 words), weight only, per row or per group. Our codes and scales.
- LowBitEmbedding: `int-quantized` with num_bits 8/4/2, weight only, in int8 storage (a packed embedding does not load
  in stock transformers 5, whose weight initialisation reads `weight`). Our codes and scales.

Why these choices: compressed-tensors' int-quantized layout *is* ours (symmetric int8, one fp32 scale per row) and its
pack-quantized holds our low-bit codes, so plain int8 and every low-bit module keep their exact codes. SmoothQuant's
1/s and the float outlier columns have no slot in a stock nn.Linear; LLM-compressor folds smoothing into the previous
LayerNorm, which needs every consumer of that LayerNorm to share one s; re-quantizing the folded weight per row is
simple and its cost is measured where it happens (the export's check against our PyTorch model). A factorised
Linear has no stock module: its product is stored dense (more bytes; the record says how many).

Stock transformers simulates the int8 matmuls in float (compressed-tensors dequantizes on the first call): correct,
not fast. Raises ValueError for a model with no quantized module, and for a per-group scale whose group size does not
divide the row.
"""

from __future__ import annotations

import copy
import os

import torch
from torch import nn

# compressed-tensors' format names
INT_QUANTIZED = "int-quantized"
PACK_QUANTIZED = "pack-quantized"
QMAX = 127


def _requantize_rows(weight: torch.Tensor) -> torch.Tensor:
    """One symmetric int8 scale per row for `weight` (out, in): absmax / 127, as compressed-tensors' observer."""
    from ..methods.int8.rounding import MIN_SCALE

    return (weight.abs().amax(dim=1) / QMAX).clamp(min=MIN_SCALE)


def _linear_form(module: nn.Module) -> dict | None:
    """What compressed-tensors stores for one of our Linear kinds: the dense float weight (out, in) whose codes the
    compressor recomputes, the scales (out, groups), the scheme's fields, and whether our codes are kept exactly."""
    from ..methods.int8.modules import Int8Linear
    from ..methods.low_bit.modules import LowBitLinear
    from ..methods.low_rank.int8 import Int8LowRankLinear

    if isinstance(module, LowBitLinear):
        weight = module.dequantized_weight()
        scale = module.weight_scale.view(module.out_features, -1).float()
        return {
            "weight": weight,
            "scale": scale,
            "bits": module.bits,
            "group_size": module.group_size,
            "format": PACK_QUANTIZED,
            "activations": None,  # compressed-tensors' pack-quantized is weight-only; ours runs int8 activations
            "exact": True,
            "bias": module.bias,
        }
    if isinstance(module, Int8LowRankLinear):
        first, second = module.dequantized_weights()
        weight = second.float() @ first.float()
        note = "low-rank factors multiplied out and re-quantized per row"
    elif isinstance(module, Int8Linear):
        weight = module.dequantized_weight()
        note = None
        if module.input_scale is not None:
            weight = weight * module.input_scale.float()[None, :]  # y = (x / s) Wsᵀ = x (W s / s)ᵀ
            note = "SmoothQuant's 1/s folded into the weight and re-quantized per row"
        if module.outlier_channels is not None:
            weight = weight.index_copy(1, module.outlier_channels, module.outlier_weight.float())
            note = (note + "; " if note else "") + "float outlier columns merged and re-quantized per row"
    else:
        return None
    exact = note is None
    scale = (module.weight_scale.float() if exact else _requantize_rows(weight))[:, None]
    return {
        "weight": weight,
        "scale": scale,
        "bits": 8,
        "group_size": None,
        "format": INT_QUANTIZED,
        "activations": "token" if module.per_token else "tensor",
        "exact": exact,
        "note": note,
        "bias": module.bias,
    }


def _embedding_form(module: nn.Module) -> dict | None:
    from ..methods.int8.modules import Int8Embedding
    from ..methods.low_bit.modules import LowBitEmbedding

    if isinstance(module, Int8Embedding):
        scale, bits, group_size = module.weight_scale.float()[:, None], 8, None
    elif isinstance(module, LowBitEmbedding):
        scale = module.weight_scale.view(module.num_embeddings, -1).float()
        bits, group_size = module.bits, module.group_size
    else:
        return None
    return {
        "weight": module.dequantized_weight().float(),
        "scale": scale,
        "bits": bits,
        "group_size": group_size,
        "format": INT_QUANTIZED,
        "activations": None,
        "exact": True,
        "padding_idx": module.padding_idx,
    }


def _float_low_rank(module: nn.Module) -> torch.Tensor | None:
    """The dense weight of a float LowRankLinear (a factorised module kept in float), else None."""
    from ..methods.low_rank.transform import LowRankLinear

    if isinstance(module, LowRankLinear):
        return (module.up_weight @ module.down_weight).detach().float()
    return None


def stock_model(model: nn.Module) -> tuple[nn.Module, dict[str, dict]]:
    """A copy of `model` in stock modules (nn.Linear / nn.Embedding holding the weights ours compute with), with no
    hf_compress quantization left on it or its config; and the compressed-tensors form of each quantized module.

    Raises ValueError when no module is quantized (a float model loads in stock transformers as it is)."""
    from ..checks import invalid

    stock = copy.deepcopy(model)
    forms: dict[str, dict] = {}
    for name, module in list(stock.named_modules()):
        form = _linear_form(module)
        if form is not None:
            weight = form["weight"]
            linear = nn.Linear(weight.shape[1], weight.shape[0], bias=form["bias"] is not None)
            with torch.no_grad():
                linear.weight.copy_(weight)
                if form["bias"] is not None:
                    linear.bias.copy_(form["bias"].detach().float())
            stock.set_submodule(name, linear)
            forms[name] = form
            continue
        form = _embedding_form(module)
        if form is not None:
            weight = form["weight"]
            embedding = nn.Embedding(weight.shape[0], weight.shape[1], padding_idx=form["padding_idx"])
            with torch.no_grad():
                embedding.weight.copy_(weight)
            stock.set_submodule(name, embedding)
            forms[name] = form
            continue
        dense = _float_low_rank(module)
        if dense is not None:
            linear = nn.Linear(dense.shape[1], dense.shape[0], bias=module.bias is not None)
            with torch.no_grad():
                linear.weight.copy_(dense)
                if module.bias is not None:
                    linear.bias.copy_(module.bias.detach())
            stock.set_submodule(name, linear)
    if not forms:
        raise invalid(
            "model",
            type(model).__name__,
            "a model with int8 or low-bit modules (this one is float: its save_pretrained checkpoint already loads "
            "in stock transformers)",
        )
    for form in forms.values():
        group = form["group_size"]
        columns = form["weight"].shape[1]
        if group is not None and columns % group:
            raise invalid(
                "weight_group_size",
                group,
                f"a group size dividing the rows ({columns} columns) for compressed-tensors' per-group scales",
            )
    for attribute in ("hf_quantizer", "quantization_method"):
        if hasattr(stock, attribute):
            delattr(stock, attribute)
    stock.is_quantized = False
    if hasattr(stock.config, "quantization_config"):
        del stock.config.quantization_config
    stock.tie_weights()
    return stock, forms


def _scheme(form: dict):
    from compressed_tensors.quantization import QuantizationArgs

    strategy = "group" if form["group_size"] else "channel"
    weights = QuantizationArgs(
        num_bits=form["bits"], type="int", symmetric=True, strategy=strategy, group_size=form["group_size"]
    )
    activations = None
    if form["activations"] is not None:
        strategy = form["activations"]
        activations = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy=strategy, dynamic=True)
    return weights, activations


def write_compressed_tensors(model: nn.Module, directory: str) -> dict:
    """Save `model` (holding hf_compress's int8 / low-bit modules) to `directory` in the compressed-tensors format:
    model.safetensors + config.json with quantization_config (quant_method "compressed-tensors"). Returns what was
    stored: {"modules": n, "exact_codes": n, "requantized": {name: why}, "formats": [...]}.

    Requires the `compressed-tensors` package (pip install 'hf_compress[export]')."""
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme, apply_quantization_config

    stock, forms = stock_model(model)
    groups: dict[tuple, list[str]] = {}
    for name, form in forms.items():
        key = (form["format"], form["bits"], form["group_size"], form["activations"])
        groups.setdefault(key, []).append(name)
    config_groups = {}
    for index, ((fmt, _, _, _), names) in enumerate(sorted(groups.items(), key=lambda item: str(item[0]))):
        weights, activations = _scheme(forms[names[0]])
        # Exact module names as targets: only the modules we quantized, whatever the family calls its classifier.
        config_groups[f"group_{index}"] = QuantizationScheme(
            targets=sorted(names), weights=weights, input_activations=activations, format=fmt
        )
    apply_quantization_config(stock, QuantizationConfig(config_groups=config_groups))
    modules = dict(stock.named_modules())
    with torch.no_grad():
        for name, form in forms.items():
            target = modules[name].weight_scale
            if tuple(target.shape) != tuple(form["scale"].shape):
                raise RuntimeError(
                    f"{name}: compressed-tensors expects weight_scale {tuple(target.shape)}, ours is "
                    f"{tuple(form['scale'].shape)}"
                )
            target.copy_(form["scale"].to(target.dtype))
    compressor = ModelCompressor.from_pretrained_model(stock)
    compressor.compress_model(stock)
    os.makedirs(directory, exist_ok=True)
    stock.save_pretrained(directory)
    compressor.update_config(directory)
    requantized = {name: form["note"] for name, form in forms.items() if not form["exact"]}
    return {
        "modules": len(forms),
        "exact_codes": len(forms) - len(requantized),
        "requantized": requantized,
        "formats": sorted({form["format"] for form in forms.values()}),
    }
