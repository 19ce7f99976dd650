"""SmoothQuant: move activation outliers into the weights before int8 quantization (Xiao et al. 2023).

Per input channel j of a Linear, s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha), from calibration batches. The Linear
then computes (X / s) (W diag(s))^T, whose int8 rounding error is smaller when a few channels of X carry outliers
(https://arxiv.org/abs/2211.10438). The 1/s has to go somewhere:

- folded into the module that produces X, when X feeds nothing else: exact and free at run time. In BERT and ALBERT
  that is the value projection for the attention output dense (the context is linear in V, channel by channel), and
  in ALBERT the embeddings LayerNorm, whose only reader is `embedding_hidden_mapping_in`.
- applied at run time by Int8Linear otherwise (one multiply per call, as torchao's SmoothQuant does). BERT is
  post-LN: each LayerNorm output is both the next Linears' input *and* the residual stream, which enters the next
  LayerNorm; LayerNorm is not invariant to per-channel scaling, so folding 1/s into it changes the model (measured on
  MiniLM: logits at -4.3 dB SQNR against the unfolded model, 34% argmax agreement). The paper's LayerNorm folding
  assumes pre-LN models (OPT, BLOOM), where the residual bypasses the LayerNorm.

`smooth_activations_` keeps the model's float outputs: it applies the exact folds and returns the run-time factors
(an `Int8Calibration`), which `quantize_` turns into int8 weights of W diag(s) plus a saved input scale.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ... import provenance
from ...checks import check_fraction, check_positive_int, invalid, require
from ...families import base_model, base_prefix, distinct_layers, family_of
from .calibration import Int8Calibration
from .transform import check_not_quantized

FAMILIES = ("bert", "albert")
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")
MIN_MAX = 1e-5  # |X| or |W| maxima below this (dead or pruned channels) leave the channel unscaled


@dataclass(frozen=True)
class SmoothingGroup:
    """Linears that read the same input and share one s; `fold_into` absorbs 1/s exactly, or None: at run time."""

    linears: tuple[str, ...]
    fold_into: str | None = None


def smoothing_groups(model: nn.Module) -> list[SmoothingGroup]:
    """Where SmoothQuant applies in a BERT or ALBERT(-converted) model, by module name (paths from `families`);
    other families raise.

    Smoothed: query / key / value, attention output dense, FFN up projection, pooler, and ALBERT's embedding
    projection. FFN down projections read a GELU output, which nothing can absorb a scale into, and stay unsmoothed,
    as in the paper; so do task heads. Only BERT and ALBERT are offered: the value -> attention output fold is exact
    for their attention, and the other families are not measured.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    require(model_type in FAMILIES, "model_type", model_type, ", ".join(repr(f) for f in FAMILIES))
    family, prefix, base = family_of(model), base_prefix(model), base_model(model)
    groups = []
    if family.embedding_projection is not None:
        fold = prefix + family.embedding_layer_norm
        groups.append(SmoothingGroup((prefix + family.embedding_projection,), fold))
    for parts in distinct_layers(model, check_linear=False):
        groups.append(SmoothingGroup(tuple(parts.module_name(p) for p in ("query", "key", "value"))))
        groups.append(SmoothingGroup((parts.module_name("attention_output"),), parts.module_name("value")))
        groups.append(SmoothingGroup((parts.module_name("ffn_up"),)))
    # The pooler reads the last LayerNorm's output ([CLS] only: its run-time multiply costs nothing).
    if family.pooler is not None and isinstance(getattr(base, "pooler", None), nn.Module):
        groups.append(SmoothingGroup((prefix + family.pooler,)))
    return groups


@torch.no_grad()
def smooth_activations_(
    model: nn.Module, dataloader: Iterable[Mapping[str, torch.Tensor]], alpha: float = 0.5, num_batches: int = 8
) -> Int8Calibration:
    """SmoothQuant (https://arxiv.org/abs/2211.10438) on a float BERT / ALBERT model, in place, before `quantize_`;
    returns the run-time factors for `quantize_(model, calibration=...)`.

    Runs up to `num_batches` batches of `dataloader` (dicts holding input_ids, e.g. from DataCollatorWithPadding) to
    collect max |X_j| over all tokens at the input of every Linear in `smoothing_groups(model)`, then per group
    s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha) (the max over the group's weights: one s for query/key/value).
    Where 1/s can be folded exactly (see the module docstring), the producing module's rows are divided by s and the
    Linear's columns multiplied by s; elsewhere the weights stay and s is returned (`Int8Calibration.smoothing`,
    (in_features,) per Linear), which `quantize_` applies. The model's outputs do not change (up to float
    rounding), and saving it before `quantize_` writes a stock checkpoint.
    alpha in [0, 1]: 0 leaves activations alone, 1 moves all of their range into the weights.
    Raises ValueError for another model family, a quantized model, bad alpha / num_batches, an empty dataloader or a
    batch without input_ids, before changing the model. Records the step in config.compression["smoothing"].
    """
    check_fraction("alpha", alpha, closed=True)
    check_positive_int("num_batches", num_batches)
    check_not_quantized(model)
    groups = smoothing_groups(model)
    modules = dict(model.named_modules())
    # s scales a dense weight's input columns; a factorised Linear has none to scale (and nothing to fold 1/s into).
    dense = [n for g in groups for n in (*g.linears, *([g.fold_into] if g.fold_into else []))]
    other = [n for n in dense if hasattr(modules[n], "dense_weight")]  # computes a product of weights
    if other:
        found = f"factorised ({other[:1]} is a {type(modules[other[0]]).__name__})"
        raise invalid("model", found, "a model of dense Linears")
    start = time.perf_counter()
    maxima, batches = input_maxima(model, [n for g in groups for n in g.linears], dataloader, num_batches)

    folded = at_run_time = 0
    calibration = Int8Calibration()
    for group in groups:
        linears = [modules[n] for n in group.linears]
        x_max = torch.stack([maxima[n] for n in group.linears]).amax(dim=0)
        w_max = torch.cat([m.weight.detach().abs() for m in linears]).amax(dim=0).float()
        s = smoothing_factors(x_max, w_max, alpha)
        if group.fold_into is None:
            # The float weights stay as they are (the float model does not divide its inputs); quantize_ stores
            # W diag(s) in int8 and 1/s as the Int8Linear's input scale.
            for name in group.linears:
                calibration.smoothing[name] = s.clone()
            at_run_time += len(linears)
        else:
            for linear in linears:
                _writable(linear, "weight").mul_(s.to(linear.weight.dtype))
            fold_reciprocal(modules[group.fold_into], s)
            folded += len(linears)
    provenance.record(
        model.config,
        "smoothing",
        {
            "method": "smoothquant",
            "alpha": alpha,
            "calibration_batches": batches,
            "folded": folded,
            "at_run_time": at_run_time,
            "seconds": round(time.perf_counter() - start, 2),
        },
    )
    return calibration


def input_maxima(
    model: nn.Module, names: list[str], dataloader: Iterable[Mapping[str, torch.Tensor]], num_batches: int
) -> tuple[dict[str, torch.Tensor], int]:
    """max |X_j| over every token of up to `num_batches` batches at the input of each named Linear; and the count."""
    modules = dict(model.named_modules())
    maxima: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, args):
            x = args[0].detach().abs().reshape(-1, args[0].shape[-1]).amax(dim=0).float()
            maxima[name] = x if name not in maxima else torch.maximum(maxima[name], x)

        return record

    handles = [modules[n].register_forward_pre_hook(hook(n)) for n in dict.fromkeys(names)]
    try:
        batches = run_calibration(model, dataloader, num_batches)
    finally:
        for handle in handles:
            handle.remove()
    return maxima, batches


def run_calibration(
    model: nn.Module,
    dataloader: Iterable[Mapping[str, torch.Tensor]],
    num_batches: int,
    before_forward: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> int:
    """Forward up to `num_batches` batches of `dataloader` in eval mode (no dropout: the activations the model will
    run on), for the caller's hooks to observe; `before_forward(inputs)` sees each batch's model inputs first. The
    training mode is restored after. Returns the number of batches run; raises ValueError for a batch that is not a
    dict holding input_ids, or for an empty dataloader."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    batches = 0
    try:
        for batch in dataloader:
            if not isinstance(batch, Mapping) or "input_ids" not in batch:
                keys = sorted(batch) if isinstance(batch, Mapping) else type(batch).__name__
                raise invalid("dataloader", f"a batch of {keys}", "batches that are dicts holding 'input_ids'")
            inputs = {k: v.to(device) for k, v in batch.items() if k in MODEL_INPUTS}
            if before_forward is not None:
                before_forward(inputs)
            model(**inputs)
            batches += 1
            if batches == num_batches:
                break  # before asking the dataloader for one more batch
    finally:
        model.train(was_training)
    require(batches > 0, "dataloader", "an empty iterable", "at least one batch holding 'input_ids'")
    return batches


def smoothing_factors(x_max: torch.Tensor, w_max: torch.Tensor, alpha: float) -> torch.Tensor:
    """s_j = x_max_j^alpha / w_max_j^(1 - alpha), and 1 for channels whose activations or weights are (near) zero."""
    s = x_max.clamp(min=MIN_MAX).pow(alpha) / w_max.clamp(min=MIN_MAX).pow(1 - alpha)
    return torch.where((x_max < MIN_MAX) | (w_max < MIN_MAX), torch.ones_like(s), s)


def fold_reciprocal(module: nn.Module, s: torch.Tensor) -> None:
    """Divide output channel j of a LayerNorm (weight and bias) or a Linear (row j and bias j) by s_j."""
    if isinstance(module, nn.LayerNorm):
        scale = s
    elif isinstance(module, nn.Linear):
        scale = s[:, None]
    else:
        raise TypeError(f"cannot fold a smoothing factor into a {type(module).__name__}")
    _writable(module, "weight").div_(scale.to(module.weight.dtype))
    if module.bias is not None:
        _writable(module, "bias").div_(s.to(module.bias.dtype))


def _writable(module: nn.Module, name: str) -> torch.Tensor:
    """The parameter `name` of `module`, ready for an in-place edit under no_grad.

    A model built or loaded under torch.inference_mode() holds inference tensors, which cannot change outside it:
    such a parameter is replaced by a normal copy first (the model computes the same; the user's tensor is untouched).
    """
    param = getattr(module, name)
    if param.is_inference() and not torch.is_inference_mode_enabled():
        with torch.no_grad():
            setattr(module, name, nn.Parameter(param.clone(), requires_grad=param.requires_grad))
    return getattr(module, name)
