"""Gradient importance of layers, attention heads and FFN neurons from gates on them (GradNAS-style).

A gate m = 1 multiplies each unit's contribution: a layer's residual update (h + m·(layer(h) − h)), a head's context
before the attention output projection, an FFN neuron's activation before the down projection. The importance of a
unit is Σ over batches of (∂L/∂m)², the squared mask gradient of Michel et al. 2019 (arXiv:1905.10650) as GradNAS
sums it: half of it is the empirical-Fisher estimate of the loss increase of removing the unit (δm = −1), the same
second-order estimate HAWQ's Ω makes for rounding a weight (`methods.low_bit.bit_widths`), so the two add up.
The weights' Fisher traces that Ω needs come from the same backward passes when asked for (`weights=`): the gates are
1, so they change no gradient, and one pass per batch serves both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..checks import invalid, require
from ..evaluation.gradients import loss_gradients
from ..families import distinct_layers, layer_list


@dataclass
class Importance:
    """Importance scores (float64, Σ over `num_batches` batches of squared gate gradients).

    Attributes:
        layers: shape (L,), one per transformer layer.
        heads: shape (L, H), one per attention head.
        neurons: shape (L, I), one per FFN neuron.
        num_batches: batches summed.
        weight_traces: {module name: Σ ‖∂L/∂W‖² (float64 scalar)} for the `weights=` modules (HAWQ's Fisher trace,
            as `methods.low_bit.bit_widths.fisher_traces` computes it); empty when none were asked for.
    """

    layers: torch.Tensor
    heads: torch.Tensor
    neurons: torch.Tensor
    num_batches: int
    weight_traces: dict[str, torch.Tensor] = field(default_factory=dict)


def _gate_layer(gate: torch.Tensor):
    def hook(module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        out = output[0] if isinstance(output, tuple) else output
        gated = hidden + gate * (out - hidden)
        return (gated, *output[1:]) if isinstance(output, tuple) else gated

    return hook


def _gate_columns(gate: torch.Tensor, groups: int):
    def hook(module, args):
        x = args[0]
        shaped = x.unflatten(-1, (groups, x.shape[-1] // groups)) * gate[:, None]
        return (shaped.flatten(-2), *args[1:])

    return hook


def importance_scores(
    model: nn.Module, batches: Iterable[dict], num_batches: int, weights: dict[str, nn.Module] | None = None
) -> Importance:
    """Score every layer, head and FFN neuron of `model` on up to `num_batches` labelled batches (eval mode), and sum
    the Fisher trace of each module in `weights` (by name; each with a `.weight`) in the same backward passes.

    Batches are dicts of model inputs with labels (the model's output must have `.loss`). No parameter's `.grad`
    changes; the model's mode is restored. Works for every family of `hf_compress.families` except ALBERT (shared
    layers): a float model with one Linear per projection.

    Raises:
        ValueError: an ALBERT or quantized model, an empty iterable, batches without labels.
    """
    require(num_batches >= 1, "num_batches", num_batches, "an integer >= 1")
    parts = distinct_layers(model)  # raises for quantized or factorised projections
    layers = list(layer_list(model))
    if len(parts) != len(layers):
        raise invalid("model", type(model).__name__, "a model whose layers are not shared (not ALBERT)")
    heads = model.config.num_attention_heads
    size = parts[0].size
    layer_gates = torch.ones(len(layers), dtype=torch.float32, requires_grad=True)
    head_gates = torch.ones(len(layers), heads, requires_grad=True)
    neuron_gates = torch.ones(len(layers), size, requires_grad=True)
    handles = []
    for i, (layer, part) in enumerate(zip(layers, parts)):
        handles.append(layer.register_forward_hook(_gate_layer(layer_gates[i]), with_kwargs=True))
        handles.append(part.module("attention_output").register_forward_pre_hook(_gate_columns(head_gates[i], heads)))
        handles.append(part.down.register_forward_pre_hook(_gate_columns(neuron_gates[i], size)))
    gates = (layer_gates, head_gates, neuron_gates)
    weights = dict(weights or {})
    sums = [torch.zeros(g.shape, dtype=torch.float64) for g in gates]
    traces = {name: torch.zeros((), dtype=torch.float64) for name in weights}
    seen = 0
    # Word embeddings' gradients as sparse rows while scoring: a batch touches a few hundred of the ~30k rows, and
    # the dense gradient (a zeroed vocabulary × hidden matrix per batch, then squared) was about a tenth of the pass.
    # The trace is the same: padding rows get no gradient either way.
    dense = [m for m in weights.values() if isinstance(m, nn.Embedding) and not m.sparse]
    try:  # only the gates' (and asked-for weights') gradients: every other parameter stays frozen
        for module in dense:
            module.sparse = True
        tensors = (*gates, *(m.weight for m in weights.values()))
        for grads in loss_gradients(model, tensors, batches, num_batches):
            for total, grad in zip(sums, grads[: len(gates)]):
                total += grad.double().square().cpu()
            for name, grad in zip(weights, grads[len(gates) :]):
                values = grad.coalesce().values() if grad.is_sparse else grad  # coalesced: a row's sum, then squared
                traces[name] += values.double().square().sum().cpu()
            seen += 1
    finally:
        for handle in handles:
            handle.remove()
        for module in dense:
            module.sparse = False
    return Importance(layers=sums[0], heads=sums[1], neurons=sums[2], num_batches=seen, weight_traces=traces)
