"""Structured FFN pruning as a transform: score neurons on calibration batches, then slice them out of the model.

Removing the same number of intermediate neurons from every FFN layer leaves a stock config (BERT, RoBERTa, ELECTRA,
DeBERTa-v2, DistilBERT, MPNet, ALBERT) with a smaller intermediate size: smaller and faster in plain transformers.
A neuron's importance is the first-order Taylor estimate of the loss change when a gate on its activation closes
(Molchanov et al. 2019, arXiv:1906.10771), computed from the FFN output weight and its gradient (`gate_gradients`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from ...checks import check_choice, check_positive_int, invalid
from ...families import FFN_PARTS, LayerParts, distinct_layers, intermediate_size, set_intermediate_size
from ...provenance import record
from ..pruning.masks import prune_lowest
from ..pruning.scores import gate_gradients

if TYPE_CHECKING:  # an annotation only: importing it loads transformers' model-loading internals (and scipy)
    from transformers import PreTrainedModel

FFN_METHODS = ("taylor", "magnitude")


def ffn_layers(model: nn.Module) -> list[LayerParts]:
    """The distinct FFN blocks (a block ALBERT shares is listed once); `.up`, `.down`, `.size` on each.

    Raises ValueError for an unsupported family, quantized or factorised FFN Linears, or layers of different
    intermediate sizes. The attention projections may be anything (e.g. factorised: low_rank_modules='attention').
    """
    layers = distinct_layers(model, check_linear=FFN_PARTS)
    sizes = {layer.size for layer in layers}
    if len(sizes) > 1:
        raise ValueError(f"FFN layers have different intermediate sizes {sorted(sizes)}; a stock config needs one")
    return layers


def neurons_to_remove(sparsity: float, size: int) -> int:
    """How many of `size` neurons a sparsity removes: rounded to nearest, the same in every layer."""
    return math.floor(sparsity * size + 0.5)


def check_ffn_sparsity(sparsity: float, size: int, field_name: str = "ffn_sparsity") -> int:
    """The number of neurons to remove, or a ValueError naming the field when none would be left (or out of range)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
        raise invalid(field_name, sparsity, "a number in [0, 1)")
    removed = neurons_to_remove(sparsity, size)
    if removed >= size:
        raise ValueError(
            f"{field_name}={sparsity!r} is invalid for intermediate_size={size}; allowed: below "
            f"{(size - 0.5) / size:.6g} (it would remove all {size} neurons)"
        )
    return removed


@torch.no_grad()
def zero_neurons(layer: LayerParts, mask: torch.Tensor, grads: bool = False) -> None:
    """Zero the up row, up bias and down column of every masked neuron (or their gradients)."""
    up, down = layer.up, layer.down
    tensors = [(up.weight, mask[:, None]), (down.weight, mask[None, :])]
    if up.bias is not None:
        tensors.append((up.bias, mask))
    for tensor, m in tensors:
        target = tensor.grad if grads else tensor
        if target is not None:
            target.mul_(m)


def slice_layer(layer: LayerParts, keep: torch.Tensor) -> None:
    """Keep only the neurons at indices `keep`: up rows (and bias), down columns (new tensors, never in place)."""
    up, down = layer.up, layer.down
    with torch.inference_mode(False), torch.no_grad():  # new tensors that train, whatever mode the caller is in
        up.weight = nn.Parameter(up.weight[keep].clone(), requires_grad=up.weight.requires_grad)
        if up.bias is not None:
            up.bias = nn.Parameter(up.bias[keep].clone(), requires_grad=up.bias.requires_grad)
        down.weight = nn.Parameter(down.weight[:, keep].clone(), requires_grad=down.weight.requires_grad)
    up.out_features = down.in_features = len(keep)


def slice_ffn_(model: PreTrainedModel, masks: list[torch.Tensor]) -> PreTrainedModel:
    """Remove the FFN neurons whose mask is False (one bool mask per `ffn_layers(model)` entry) and shrink the config.

    Every mask must keep the same number of neurons, which becomes the config's intermediate size. A removed
    neuron's output column is dropped, so the sliced model computes what the model with those neurons zeroed
    computes. Provenance is recorded by the callers (`prune_ffn_`, the trainers), which know why the neurons went.
    """
    layers = ffn_layers(model)
    if len(masks) != len(layers):
        raise invalid("masks", f"<{len(masks)} masks>", f"one bool mask per FFN layer ({len(layers)})")
    kept = {int(m.sum()) for m in masks}
    shapes_ok = all(m.dtype == torch.bool and m.shape == (layer.size,) for m, layer in zip(masks, layers))
    if not shapes_ok or len(kept) != 1 or 0 in kept:
        raise invalid(
            "masks",
            f"<kept counts {sorted(kept)}>",
            f"bool vectors of length {layers[0].size}, each keeping the same number (>= 1) of neurons",
        )
    for layer, mask in zip(layers, masks):
        slice_layer(layer, mask.nonzero().squeeze(1).to(layer.up.weight.device))
    set_intermediate_size(model.config, kept.pop())
    return model


def magnitude_scores(layers: list[LayerParts]) -> list[torch.Tensor]:
    """L2 norm of each neuron's weights: its up row and its down column. Shape: (intermediate_size,) per layer."""
    return [
        (layer.up.weight.detach().float().pow(2).sum(1) + layer.down.weight.detach().float().pow(2).sum(0)).sqrt()
        for layer in layers
    ]


def _calibration_scores(
    model: PreTrainedModel, dataloader: Iterable[Mapping], num_batches: int, layers: list[LayerParts]
) -> list[torch.Tensor]:
    """Mean over calibration batches of |∂L/∂g_i| (the model's own loss, dropout off); leaves .grad untouched."""
    device = layers[0].down.weight.device
    weights = [layer.down.weight for layer in layers]
    if any(w.is_inference() for w in weights):
        raise invalid(
            "method",
            "taylor",
            "'magnitude' for a model built or loaded under torch.inference_mode() (its inference tensors can never "
            "get gradients); or load the model outside inference mode",
        )
    was_training = model.training
    requires_grad = [w.requires_grad for w in weights]
    model.eval()
    seen = 0
    try:
        with torch.inference_mode(False), torch.enable_grad():  # callers may hold no_grad or inference_mode
            scores = [torch.zeros(layer.size, device=device) for layer in layers]
            for w in weights:
                w.requires_grad_(True)
            for batch in dataloader:
                if seen == num_batches:
                    break
                # clone(): batches made under inference_mode hold inference tensors, which autograd cannot save
                inputs = {k: v.to(device).clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
                loss = model(**inputs).loss
                if loss is None:
                    raise ValueError("dataloader batches need labels, so that the model computes its own loss")
                grads = torch.autograd.grad(loss, weights)
                for score, w, g in zip(scores, weights, grads):
                    score += gate_gradients(w, g).abs()
                seen += 1
    finally:
        for w, flag in zip(weights, requires_grad):
            w.requires_grad_(flag)
        model.train(was_training)
    if seen == 0:
        raise ValueError("dataloader yielded no batches; taylor scoring needs at least one")
    return [s / seen for s in scores]


def prune_ffn_(
    model: PreTrainedModel,
    dataloader: Iterable[Mapping] | None,
    sparsity: float,
    method: str = "taylor",
    num_batches: int = 8,
) -> PreTrainedModel:
    """Score FFN neurons on calibration batches and slice away the lowest `sparsity` fraction in every layer.

    method "taylor": mean over up to `num_batches` batches (which must hold labels) of |∂L/∂g_i| for a gate on
    neuron i (Molchanov et al. 2019, arXiv:1906.10771); "magnitude": the L2 norm of the neuron's weights (no data).
    The model keeps a stock config with a smaller intermediate size; what was done goes to config.compression.
    Works under `torch.no_grad()` / `torch.inference_mode()` callers (Taylor scoring re-enables gradients).

    Raises:
        ValueError: an unknown method, num_batches < 1, no dataloader for taylor, taylor for a base model (no head),
            a sparsity that leaves no neuron, an unsupported family, or batches without labels.
    """
    check_choice("method", method, FFN_METHODS)
    check_positive_int("num_batches", num_batches)
    if method == "taylor" and getattr(model, "base_model", None) is model:
        raise invalid(
            "method", method, f"'magnitude' for {type(model).__name__} (model_type={model.config.model_type!r}), a "
            "base model without a task head: Taylor scores need a head's loss (or remove FFN neurons while "
            "distilling it, with ffn_sparsity in CompressionTrainer)",
        )  # fmt: skip
    if method == "taylor" and dataloader is None:
        raise invalid("dataloader", None, "an iterable of batches with labels when method='taylor'")
    layers = ffn_layers(model)
    size = intermediate_size(model.config)
    n_remove = check_ffn_sparsity(sparsity, size, "sparsity")
    scores = _calibration_scores(model, dataloader, num_batches, layers) if method == "taylor" else None
    scores = scores if scores is not None else magnitude_scores(layers)
    masks = [prune_lowest(s, torch.ones_like(s, dtype=torch.bool), n_remove) for s in scores]
    slice_ffn_(model, masks)
    details = {"method": method, "sparsity": sparsity, "intermediate_size": {"before": size, "after": size - n_remove}}
    if method == "taylor":
        details["num_batches"] = num_batches
    record(model.config, "ffn_pruning", details)
    return model
