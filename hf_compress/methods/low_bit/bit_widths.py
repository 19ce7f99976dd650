"""choose_bit_widths: 8, 4 or 2 bits (or 1, when asked) per module, the most sensitive modules given the most bits,
within a size budget.

Two sensitivities, both an estimate Ω_i(b) of what quantizing module i alone to b bits costs:

- "fisher" follows HAWQ (Dong et al., ICCV 2019, arXiv:1905.03696) with the empirical Fisher in place of the
Hessian: the loss increase of quantizing module i to b bits is estimated as Ω_i(b) = (Tr F_i / n_i)·‖Q_b(W_i) − W_i‖²,
where Tr F_i = Σ over calibration batches of ‖∂L/∂W_i‖² (the Fisher trace, a cheap stand-in for the Hessian trace at
a trained minimum) and n_i the number of weights. A second-order estimate: one backward pass per batch, but it
  trusts a quadratic model of the loss even for the large steps of 2-bit weights.
- "kl" follows ZeroQ (Cai et al., CVPR 2020, arXiv:2001.00281): Ω_i(b) is measured, the mean KL divergence from
  the model's output distribution to that of the model with only module i rounded to b bits, over the calibration
  batches (no labels needed). One forward pass per module, width and batch.

Bytes are counted as stored: packed codes plus fp32 scales.

The widths minimise Σ_i Ω_i(b_i) subject to Σ_i bytes_i(b_i) ≤ budget: a multiple-choice knapsack, solved exactly as
an integer linear program, as HAWQ-V3 does (Yao et al., ICML 2021, arXiv:2011.10680), with scipy's HiGHS solver. A
greedy "best Ω drop per byte" pass is not enough: once it has spent the budget on small upgrades it can no longer
afford a large module's, and can end worse than a uniform width of the same bytes by its own estimate.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from torch import nn

from ...checks import check_choice, check_positive_int, invalid, require
from .config import (
    DEFAULT_BIT_CHOICES,
    SENSITIVITIES,  # noqa: F401  (re-exported)
)
from .fake_quant import BITS, dequantize_groups, quantize_groups, select_low_bit_modules, stored_bytes


def _shape(module: nn.Module) -> tuple[int, int]:
    """(rows, columns) of the weight as it is quantized: (out, in) of a Linear, (vocab, dim) of an Embedding."""
    return tuple(module.weight.shape)


def fisher_traces(model: nn.Module, modules: dict[str, nn.Module], dataloader: Iterable, num_batches: int) -> dict:
    """Σ over up to `num_batches` batches of ‖∂loss/∂W‖² for each module's weight (float64), model in eval mode.

    Batches are dicts of model inputs with labels (the model must return `.loss`). Uses torch.autograd.grad, so no
    parameter's .grad changes; the model's mode and requires_grad flags are restored.
    Raises ValueError for an empty dataloader or batches without a loss.
    """
    from ...evaluation.gradients import loss_gradients

    traces = {n: torch.zeros((), dtype=torch.float64) for n in modules}
    weights = [m.weight for m in modules.values()]
    for grads in loss_gradients(model, weights, dataloader, num_batches, field="dataloader"):
        for name, grad in zip(modules, grads):
            traces[name] += grad.double().square().sum().cpu()
    return traces


def fisher_omegas(
    modules: dict[str, nn.Module],
    traces: dict,
    bit_choices: tuple[int, ...] = DEFAULT_BIT_CHOICES,
    group_size: int | None = None,
) -> dict[str, dict[int, float]]:
    """{name: {bits: HAWQ's Ω}}: (Tr F / n)·‖Q_b(W) − W‖², with Tr F the Fisher trace `fisher_traces` summed (by
    module name) and n the weight's element count.

    Weights are rounded as `fake_quantize_` rounds them. Apart from `fisher_traces` so that a caller that runs its own
    backward passes (the student search scores gates in the same passes) does not pay for a second set.
    """
    omega = {}
    for name, module in modules.items():
        w = module.weight.detach().float()
        mean_trace = float(traces[name]) / w.numel()
        omega[name] = {}
        for b in sorted(set(bit_choices)):
            codes, scales = quantize_groups(w, b, group_size, isinstance(module, nn.Embedding))
            error = float((dequantize_groups(codes, scales, group_size) - w).double().square().sum())
            omega[name][b] = mean_trace * error
    return omega


# Output fields that are distributions over their last dimension: classes, token labels, answer start / end.
LOGIT_FIELDS = ("logits", "start_logits", "end_logits")


def _output_log_probs(model: nn.Module, batch: dict) -> list[torch.Tensor]:
    """Log-softmax of every logits field of the model's output for `batch`, in float64: the divergences of 8-bit
    rounding are ~1e-8, where float32 cancellation can make a KL negative."""
    output = model(**{k: v for k, v in batch.items() if k not in ("labels", "start_positions", "end_positions")})
    fields = [getattr(output, f, None) for f in LOGIT_FIELDS]
    fields = [f for f in fields if isinstance(f, torch.Tensor)]
    if not fields:
        raise invalid("model", type(model).__name__, f"a model whose output has one of {', '.join(LOGIT_FIELDS)}")
    return [torch.log_softmax(f.double(), dim=-1) for f in fields]


def output_divergences(
    model: nn.Module,
    modules: dict[str, nn.Module],
    dataloader: Iterable,
    num_batches: int,
    bit_choices: tuple[int, ...] = DEFAULT_BIT_CHOICES,
    group_size: int | None = None,
) -> dict[str, dict[int, float]]:
    """{name: {bits: mean KL(p_model ‖ p_model with only that module's weight rounded to bits)}} (ZeroQ's Ω).

    The KL is summed over the last dimension of every logits field (`logits`, `start_logits`, `end_logits`), averaged
    over all other positions and the first `num_batches` batches (dicts of model inputs; labels are ignored). Weights
    are rounded as `fake_quantize_` rounds them and restored exactly afterwards; the model's mode is restored.
    Raises ValueError for an empty dataloader or a model output without logits.
    """
    device = next(model.parameters()).device
    batches = [
        {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
        for b in itertools.islice(dataloader, num_batches)
    ]
    require(bool(batches), "dataloader", "empty", "at least one batch")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = [_output_log_probs(model, b) for b in batches]
            divergences = {}
            for name, module in modules.items():
                original = module.weight.detach().clone()
                divergences[name] = {}
                for bits in sorted(set(bit_choices)):
                    codes, scales = quantize_groups(original, bits, group_size, isinstance(module, nn.Embedding))
                    module.weight.data.copy_(dequantize_groups(codes, scales, group_size).to(original.dtype))
                    total = 0.0
                    for batch, ref in zip(batches, reference):
                        for p, q in zip(ref, _output_log_probs(model, batch)):
                            total += float((p.exp() * (p - q)).sum(-1).mean())
                    divergences[name][bits] = total / len(batches)
                module.weight.data.copy_(original)
    finally:
        model.train(was_training)
    return divergences


def choose_bit_widths(
    model: nn.Module,
    dataloader: Iterable,
    budget_mb: float,
    bit_choices: tuple[int, ...] = DEFAULT_BIT_CHOICES,
    num_batches: int = 8,
    group_size: int | None = None,
    modules: str | list[str] = "encoder",
    sensitivity: str = "fisher",
) -> dict[str, int]:
    """{module name: bits} for the selected modules (see `select_low_bit_modules`) within `budget_mb` megabytes.

    `budget_mb`: 1e6-byte units of the selected modules' stored weights (packed codes + fp32 scales at `group_size`;
    biases and other modules not counted). The plan minimises the summed Ω within the budget (`allocate_bits`, an
    exact integer program). `sensitivity`: "fisher", HAWQ's Ω from the Fisher trace of `num_batches` labelled
    batches; "kl", ZeroQ's measured output KL of rounding each module alone on `num_batches` batches (see the
    module docstring).
    Raises ValueError for bits outside (8, 4, 2, 1), an unknown sensitivity, a non-positive budget, or a budget below
    every module at the fewest bits (the message gives that minimum).
    """
    choices = sorted(set(bit_choices))
    require(bool(choices) and all(b in BITS for b in choices), "bit_choices", bit_choices, f"a subset of {BITS}")
    ok = isinstance(budget_mb, (int, float)) and not isinstance(budget_mb, bool) and budget_mb > 0
    require(ok, "budget_mb", budget_mb, "a number of megabytes > 0")
    check_positive_int("num_batches", num_batches)
    check_choice("sensitivity", sensitivity, SENSITIVITIES)
    selected = select_low_bit_modules(model, modules)
    if not selected:
        raise invalid("modules", modules, "a selection with at least one module")
    sizes = {name: {b: stored_bytes(*_shape(m), b, group_size) for b in choices} for name, m in selected.items()}
    fewest = sum(sizes[n][choices[0]] for n in selected)
    if fewest > budget_mb * 1e6:  # before the gradients: a budget that cannot be met costs no calibration
        raise invalid("budget_mb", budget_mb, f"at least {fewest / 1e6:.6f} (every module at {choices[0]} bits)")
    if sensitivity == "kl":
        omega = output_divergences(model, selected, dataloader, num_batches, tuple(choices), group_size)
    else:
        traces = fisher_traces(model, selected, dataloader, num_batches)
        omega = fisher_omegas(selected, traces, tuple(choices), group_size)
    return allocate_bits(sizes, omega, budget_mb * 1e6)


def allocate_bits(
    sizes: dict[str, dict[int, float]], sensitivities: dict[str, dict[int, float]], budget_bytes: float
) -> dict[str, int]:
    """{name: bits} minimising Σ sensitivities[name][bits] with Σ sizes[name][bits] ≤ budget_bytes, exactly.

    `sizes` and `sensitivities` map every module name to {bits: stored bytes} and {bits: estimated loss increase}
    over the same widths (e.g. HAWQ's Ω, as `choose_bit_widths` computes it). Solved as an integer linear program
    (one binary per module and width, one width per module, the byte budget) by scipy's HiGHS with no optimality gap,
    as HAWQ-V3 (arXiv:2011.10680) allocates. Ties between equally sensitive plans are the solver's choice.
    Raises ValueError when the two maps differ in modules or widths, or when even the smallest widths do not fit.
    """
    names = list(sizes)
    shapes = {n: sorted(sizes[n]) for n in names}
    given = {n: sorted(v) for n, v in sensitivities.items()}
    require(given == shapes, "sensitivities", "other modules or widths than sizes", f"the same as sizes: {shapes}")
    options = [(name, bits) for name in names for bits in sorted(sizes[name])]
    cost = np.array([float(sensitivities[n][b]) for n, b in options])
    nbytes = np.array([float(sizes[n][b]) for n, b in options])
    one_width = np.array([[float(n == name) for n, _ in options] for name in names])
    fewest = sum(min(sizes[n].values()) for n in names)
    if fewest > budget_bytes:
        raise invalid("budget_bytes", budget_bytes, f"at least {fewest} (every module at its smallest width)")
    # HiGHS stops within an absolute objective gap of 1e-6: scale so that any plan's total is at least 1 (the sum of
    # every module's smallest sensitivity bounds it below), which makes that gap a relative 1e-6 at most.
    floor = sum(min(sensitivities[n].values()) for n in names)
    scale = floor if floor > 0 else (cost.max() if cost.max() > 0 else 1.0)
    limit = budget_bytes
    for _ in range(4):
        result = milp(
            cost / scale,
            integrality=np.ones(len(options)),
            bounds=Bounds(0, 1),
            constraints=[LinearConstraint(one_width, 1, 1), LinearConstraint(nbytes[None, :], -np.inf, limit)],
            options={"mip_rel_gap": 0.0},
        )
        if result.x is None:  # cannot happen for a feasible budget; say what the solver said rather than guess
            raise RuntimeError(f"the bit-width program found no plan: {result.message}")
        chosen = result.x > 0.5
        spent = float(nbytes[chosen].sum())
        if spent <= budget_bytes:
            return {name: bits for (name, bits), take in zip(options, chosen) if take}
        # The solver's integrality tolerance (1e-6) times a large module's bytes can overshoot by a few bytes once
        # rounded: solve again with that overshoot taken off the limit.
        limit -= spent - budget_bytes
    raise RuntimeError(f"the bit-width program kept exceeding budget_bytes={budget_bytes} after rounding")


def planned_megabytes(model: nn.Module, bits: dict[str, int], group_size: int | None = None) -> float:
    """Megabytes (1e6 bytes) the modules of a {name: bits} plan take stored: packed codes plus fp32 scales."""
    return sum(stored_bytes(*_shape(model.get_submodule(n)), b, group_size) for n, b in bits.items()) / 1e6
