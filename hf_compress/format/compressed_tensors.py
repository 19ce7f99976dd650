"""Our int8 and low-bit checkpoints in the `compressed-tensors` format, which stock transformers loads.

`write_compressed_tensors(model, directory)` saves a model holding hf_compress's quantized modules so that a process
that never imports hf_compress loads it with `AutoModelFor...from_pretrained(directory)` (with the
`compressed-tensors` package installed: transformers' own `CompressedTensorsHfQuantizer` reads it). The format is
vLLM / llm-compressor's (https://github.com/neuralmagic/compressed-tensors); each of our module kinds maps onto one of
its schemes, with our codes and scales (written by compressed-tensors' own compressor, so the layout is its own):

- Int8Linear, plain: `int-quantized` (int8 weight (out, in), `weight_scale` (out, 1)) with int8 activations, dynamic
  and asymmetric (as ours), per token (`activation_range="per_token"`) or per tensor ("per_batch"). Our codes and
  scales.
- Int8Linear smoothed (SmoothQuant) or with outlier channels, and any other int8 module that computes with one dense
  weight it can give (`dense_weight()`, e.g. the int8 factors of a factorised Linear): `int-quantized`, re-quantized
  per row from the weight the module computes with (1/s folded into the columns; outlier columns merged; factors
  multiplied out). One more rounding, measured by the export's check; the record names each such module and why.
- Int8Embedding: `int-quantized`, weight only, per row. Our codes and scales.
- LowBitLinear (8/4/2/1 bit): `pack-quantized` (int32 words), per row or per group; binary (±1) codes as 2-bit codes
  (compressed-tensors' signed 1-bit range is [-1, 0]). Our codes and scales.
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


def _requantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Our int8 codes of `weight` (out, in), one scale per row (rounding.py's pair limit, which keeps fbgemm's AVX2
    kernel from saturating when hf_compress loads them back), as the float weight codes·scale whose rounding by
    compressed-tensors gives exactly those codes, and the scales (out, 1)."""
    from ..methods.int8.rounding import linear_codes

    codes, scale = linear_codes(weight)
    return codes.float() * scale[:, None], scale[:, None]


def _linear_form(module: nn.Module) -> dict | None:
    """What compressed-tensors stores for one of our Linear kinds: the dense float weight (out, in) whose codes the
    compressor recomputes, the scales (out, groups), the scheme's fields, and whether our codes are kept exactly."""
    from ..methods.int8.modules import Int8Linear, PackedInt8Module
    from ..methods.low_bit.modules import LowBitLinear

    if isinstance(module, LowBitLinear):
        weight = module.dequantized_weight()
        scale = module.weight_scale.view(module.out_features, -1).float()
        return {
            "weight": weight,
            "scale": scale,
            # compressed-tensors' signed 1-bit range is [-1, 0]: binary codes (±1) are stored as 2-bit codes.
            "bits": max(module.bits, 2),
            "group_size": module.group_size,
            "format": PACK_QUANTIZED,
            # Computing in int8, ours rounds its inputs at run time too: stock transformers then simulates the same.
            "activations": None if module.compute == "float" else ("token" if module.per_token else "tensor"),
            "exact": True,
            "bias": module.bias,
        }
    if isinstance(module, Int8Linear):
        weight = module.dequantized_weight()
        note = None
        if module.input_scale is not None:
            weight = weight * module.input_scale.float()[None, :]  # y = (x / s) Wsᵀ = x (W s / s)ᵀ
            note = "SmoothQuant's 1/s folded into the weight and re-quantized per row"
        if module.outlier_channels is not None:
            weight = weight.index_copy(1, module.outlier_channels, module.outlier_weight.float())
            note = (note + "; " if note else "") + "float outlier columns merged and re-quantized per row"
    elif isinstance(module, PackedInt8Module) and hasattr(module, "dense_weight"):
        # Another method's int8 module (e.g. a factorised Linear's int8 factors): its one dense weight, re-quantized.
        weight = module.dense_weight().float()
        note = module.dense_weight_note
    else:
        return None
    exact = note is None
    if exact:
        scale = module.weight_scale.float()[:, None]
    else:
        weight, scale = _requantize_rows(weight)
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
        bits, group_size = max(module.bits, 2), module.group_size  # binary codes (±1) as 2-bit codes
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


def _float_product(module: nn.Module) -> torch.Tensor | None:
    """The dense (out, in) weight of a float module that computes a product of weights and is no stock Linear (a
    factorised Linear kept in float: `dense_weight()`), else None."""
    from ..methods.int8.modules import PackedInt8Module

    if isinstance(module, nn.Linear | PackedInt8Module) or not callable(getattr(module, "dense_weight", None)):
        return None
    return module.dense_weight().detach().float()


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
        dense = _float_product(module)
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
        # Asymmetric, as ours (uint8 over [min(x, 0), max(x, 0)], see methods/int8/kernel.py): stock transformers then
        # rounds activations as we do. Symmetric ranges halve the resolution of one-signed inputs (after GELU):
        # measured on the quickstart int8 student, logits SQNR 18.8 dB against ours, instead of 35.4 dB.
        activations = QuantizationArgs(num_bits=8, type="int", symmetric=False, strategy=strategy, dynamic=True)
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


def written_by_hf_compress(config) -> bool:
    """Whether a config (loaded from a compressed-tensors checkpoint) is one `hf-compress export` wrote."""
    record = getattr(config, "export", None)
    return isinstance(record, dict) and record.get("format") == "compressed-tensors"


def _int_scheme(scheme, bits: tuple[int, ...]):
    """(weights, per_token) of a compressed-tensors scheme our modules compute exactly: symmetric int weights of
    `bits` per row or group, inputs None (weight only) or int8 rounded at run time with a zero point (our kernel's
    asymmetric ranges), per token or tensor;
    else None. per_token is None for weight-only schemes."""
    weights, inputs = scheme.weights, scheme.input_activations
    if weights is None or weights.type != "int" or not weights.symmetric or weights.num_bits not in bits:
        return None
    if weights.strategy not in ("channel", "group") or scheme.output_activations is not None:
        return None
    if inputs is None:
        return weights, None
    if inputs.type != "int" or inputs.num_bits != 8 or not inputs.dynamic or inputs.symmetric:
        return None
    if inputs.strategy not in ("token", "tensor"):
        return None
    return weights, inputs.strategy == "token"


def _ours(module: nn.Module) -> tuple[nn.Module, str, dict] | None:
    """Our module holding a compressed-tensors module's codes and scales, its quantized_modules kind and the config
    fields it needs; None for a module or scheme ours does not compute the same way."""
    from ..methods.int8.modules import Int8Embedding, Int8Linear
    from ..methods.int8.rounding import pairs_fit
    from ..methods.low_bit.fake_quant import pack_codes, qmax
    from ..methods.low_bit.modules import LowBitEmbedding, LowBitLinear, low_bit_kind

    scheme = getattr(module, "quantization_scheme", None)
    fmt = str(getattr(getattr(scheme, "format", None), "value", getattr(scheme, "format", None)))
    if scheme is None or fmt not in (INT_QUANTIZED, PACK_QUANTIZED):
        return None
    found = _int_scheme(scheme, (8, 4, 2))
    if found is None:
        return None
    weights, per_token = found
    bits, group_size = weights.num_bits, (weights.group_size if weights.strategy == "group" else None)
    scale = module.weight_scale.detach().float()
    with torch.inference_mode(False), torch.no_grad():
        if isinstance(module, nn.Linear):
            out_features, in_features = module.out_features, module.in_features
            if fmt == PACK_QUANTIZED:
                from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32

                shape = torch.Size(module.weight_shape.tolist())
                codes = unpack_from_int32(module.weight_packed.detach(), bits, shape)
            else:
                codes = module.weight.detach()
            bias = module.bias is not None
            if fmt == INT_QUANTIZED and bits == 8 and group_size is None and per_token is not None:
                if not pairs_fit(codes):  # codes fbgemm's AVX2 kernel could saturate on: not ours
                    return None
                new = Int8Linear(in_features, out_features, bias, per_token, device="cpu")
                new.weight = nn.Parameter(codes.reshape(-1).to(torch.int8).clone(), requires_grad=False)
                new.weight_scale = scale.reshape(-1).clone()
                kind, fields = "linear", {"activation_range": "per_token" if per_token else "per_batch"}
            elif fmt == PACK_QUANTIZED:
                if codes.abs().max() > qmax(bits):
                    return None
                compute = "float" if per_token is None else "int8"
                new = LowBitLinear(
                    in_features, out_features, bits, group_size, bias, bool(per_token), compute, device="cpu"
                )
                new.weight = nn.Parameter(pack_codes(codes.to(torch.int8), bits), requires_grad=False)
                new.weight_scale = scale.reshape(-1).clone()
                kind = low_bit_kind("linear", bits)
                fields = {"weight_group_size": group_size, "low_bit_compute": compute}
                if per_token is not None:
                    fields["activation_range"] = "per_token" if per_token else "per_batch"
            else:
                return None
            if bias:
                new.bias = nn.Parameter(module.bias.detach().clone(), requires_grad=module.bias.requires_grad)
        elif isinstance(module, nn.Embedding) and fmt == INT_QUANTIZED and per_token is None:
            codes = module.weight.detach()
            if bits == 8 and group_size is None:
                new = Int8Embedding(module.num_embeddings, module.embedding_dim, module.padding_idx, device="cpu")
                new.weight = nn.Parameter(codes.reshape(-1).to(torch.int8).clone(), requires_grad=False)
                kind, fields = "embedding", {}
            else:
                if codes.abs().max() > qmax(bits, embedding=True):
                    return None
                new = LowBitEmbedding(
                    module.num_embeddings, module.embedding_dim, bits, group_size, module.padding_idx, "cpu"
                )
                new.weight = nn.Parameter(pack_codes(codes.to(torch.int8), bits), requires_grad=False)
                kind, fields = low_bit_kind("embedding", bits), {"weight_group_size": group_size}
            new.weight_scale = scale.reshape(-1).clone()
        else:
            return None
    if hasattr(new, "prepare"):
        new.prepare()
    return new, kind, fields


def use_int8_kernels_(model: nn.Module) -> nn.Module:
    """Replace, in place, the compressed-tensors modules of a model that stock `from_pretrained` loaded from a
    checkpoint `hf-compress export --format compressed-tensors` wrote, by hf_compress's modules holding the same
    codes and scales (Int8Linear, LowBitLinear, Int8Embedding, LowBitEmbedding): our int8 kernels instead of
    compressed-tensors' float simulation. The model is then marked as hf_compress's int8 format, so that
    `save_pretrained` writes that format (export again for compressed-tensors). Runs by itself in `from_pretrained`
    when hf_compress is imported; modules of other schemes stay as they are.

    Raises ValueError when no module can be replaced, or when modules ask for different activation ranges or group
    sizes (one per model in hf_compress's format).
    """
    from ..checks import invalid
    from .config import Int8QuantizationConfig
    from .quantizer import attach

    replaced, fields = {}, {}
    for name, module in list(model.named_modules()):
        found = _ours(module)
        if found is None:
            continue
        new, kind, own = found
        for key, value in own.items():
            if fields.setdefault(key, value) != value:
                raise invalid(key, [fields[key], value], "one value for the whole model (hf_compress's int8 format)")
        new.train(module.training)
        model.set_submodule(name, new)
        replaced[name] = kind
    if not replaced:
        raise invalid("model", type(model).__name__, "a model loaded from a compressed-tensors checkpoint of ours")
    for hook in list(model._forward_pre_hooks.values()):
        if getattr(hook, "__name__", "") == "ct_decompress_hook":
            model._forward_pre_hooks = type(model._forward_pre_hooks)(
                (k, v) for k, v in model._forward_pre_hooks.items() if v is not hook
            )
    config = Int8QuantizationConfig(quantized_modules=replaced, **fields)
    attach(model, config)
    return model
