"""choose_bit_widths: 8, 4 or 2 bits per module, the most sensitive modules given the most bits, within a size budget.

Sensitivity follows HAWQ (Dong et al., ICCV 2019, arXiv:1905.03696) with the empirical Fisher in place of the
Hessian: the loss increase of quantizing module i to b bits is estimated as Ω_i(b) = (Tr F_i / n_i)·‖Q_b(W_i) − W_i‖²,
where Tr F_i = Σ over calibration batches of ‖∂L/∂W_i‖² (the Fisher trace, a cheap stand-in for the Hessian trace at
a trained minimum) and n_i the number of weights. Bytes are counted as stored: packed codes plus fp32 scales.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable

import torch
from torch import nn

from ..checks import check_positive_int, invalid, require
from .low_bit import BITS, dequantize_groups, quantize_groups, select_low_bit_modules, stored_bytes


def _shape(module: nn.Module) -> tuple[int, int]:
    """(rows, columns) of the weight as it is quantized: (out, in) of a Linear, (vocab, dim) of an Embedding."""
    return tuple(module.weight.shape)


def fisher_traces(model: nn.Module, modules: dict[str, nn.Module], dataloader: Iterable, num_batches: int) -> dict:
    """Σ over up to `num_batches` batches of ‖∂loss/∂W‖² for each module's weight (float64), model in eval mode.

    Batches are dicts of model inputs with labels (the model must return `.loss`). Uses torch.autograd.grad, so no
    parameter's .grad changes; the model's mode and requires_grad flags are restored.
    Raises ValueError for an empty dataloader or batches without a loss.
    """
    device = next(model.parameters()).device
    weights = [m.weight for m in modules.values()]
    traces = {n: torch.zeros((), dtype=torch.float64) for n in modules}
    flags = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    model.eval()
    batches = 0
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for w in weights:
            w.requires_grad_(True)
        for batch in itertools.islice(dataloader, num_batches):
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            with torch.enable_grad():
                loss = getattr(model(**batch), "loss", None)
                if loss is None:
                    raise invalid("dataloader", "batches without labels", "batches whose model output has a loss")
                grads = torch.autograd.grad(loss, weights)
            for name, grad in zip(modules, grads):
                traces[name] += grad.double().square().sum().cpu()
            batches += 1
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        model.train(was_training)
    require(batches > 0, "dataloader", "empty", "at least one batch")
    return traces


def choose_bit_widths(
    model: nn.Module,
    dataloader: Iterable,
    budget_mb: float,
    bit_choices: tuple[int, ...] = BITS,
    num_batches: int = 8,
    group_size: int | None = None,
    modules: str | list[str] = "encoder",
) -> dict[str, int]:
    """{module name: bits} for the selected modules (see `select_low_bit_modules`) within `budget_mb` megabytes.

    `budget_mb`: 1e6-byte units of the selected modules' stored weights (packed codes + fp32 scales at `group_size`;
    biases and other modules not counted). Every module starts at the fewest bits of `bit_choices`; then the upgrade
    (a module to its next larger width) with the largest drop of Ω per extra byte is taken while it fits, until none
    does. Ω is HAWQ's sensitivity with the Fisher trace of `num_batches` labelled batches (see the module docstring).
    Raises ValueError for bits outside (8, 4, 2), a non-positive budget, or a budget below every module at the
    fewest bits (the message gives that minimum).
    """
    choices = sorted(set(bit_choices))
    require(bool(choices) and all(b in BITS for b in choices), "bit_choices", bit_choices, "a subset of (8, 4, 2)")
    ok = isinstance(budget_mb, (int, float)) and not isinstance(budget_mb, bool) and budget_mb > 0
    require(ok, "budget_mb", budget_mb, "a number of megabytes > 0")
    check_positive_int("num_batches", num_batches)
    selected = select_low_bit_modules(model, modules)
    if not selected:
        raise invalid("modules", modules, "a selection with at least one module")
    traces = fisher_traces(model, selected, dataloader, num_batches)
    sizes, omega = {}, {}
    for name, module in selected.items():
        rows, cols = _shape(module)
        embedding = isinstance(module, nn.Embedding)
        sizes[name] = {b: stored_bytes(rows, cols, b, group_size) for b in choices}
        w = module.weight.detach().float()
        mean_trace = float(traces[name]) / w.numel()
        omega[name] = {}
        for b in choices:
            codes, scales = quantize_groups(w, b, group_size, embedding)
            error = float((dequantize_groups(codes, scales, group_size) - w).double().square().sum())
            omega[name][b] = mean_trace * error

    allowance = budget_mb * 1e6
    bits = dict.fromkeys(selected, choices[0])
    spent = sum(sizes[n][choices[0]] for n in selected)
    if spent > allowance:
        raise invalid("budget_mb", budget_mb, f"at least {spent / 1e6:.6f} (every module at {choices[0]} bits)")

    def upgrade(name: str):
        """(-gain per byte, name, next bits, extra bytes) of the module's next larger width, or None at the top."""
        current = choices.index(bits[name])
        if current + 1 == len(choices):
            return None
        nxt = choices[current + 1]
        extra = sizes[name][nxt] - sizes[name][bits[name]]
        return (-(omega[name][bits[name]] - omega[name][nxt]) / extra, name, nxt, extra)

    heap = [u for u in map(upgrade, selected) if u is not None]
    heapq.heapify(heap)
    while heap:
        _, name, nxt, extra = heapq.heappop(heap)
        if spent + extra > allowance:
            continue  # does not fit; a smaller module's upgrade may still
        bits[name], spent = nxt, spent + extra
        following = upgrade(name)
        if following is not None:
            heapq.heappush(heap, following)
    return bits


def planned_megabytes(model: nn.Module, bits: dict[str, int], group_size: int | None = None) -> float:
    """Megabytes (1e6 bytes) the modules of a {name: bits} plan take stored: packed codes plus fp32 scales."""
    return sum(stored_bytes(*_shape(model.get_submodule(n)), b, group_size) for n, b in bits.items()) / 1e6
