"""GPTQ rounding for int8 Linears: codes that minimise the layer's output error on calibration inputs.

Round-to-nearest rounds every weight on its own. GPTQ (Frantar et al., ICLR 2023, https://arxiv.org/abs/2210.17323,
after Optimal Brain Quantization) rounds one input column at a time and moves that column's rounding error onto the
columns not yet rounded, weighted by the inverse Hessian H = E[x x^T] of the layer's inputs, so that the errors
cancel in W x for the inputs the layer sees. The scales (one per output row, see rounding.py) and the on-disk format
are round-to-nearest's: only the codes change, so a GPTQ checkpoint loads exactly like any int8 one.

`calibrate_gptq_` collects H on a float model; `quantize_(model, calibration=...)` then rounds with it
(`Int8Linear.from_linear`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ... import provenance
from ...checks import check_positive_int, require
from .calibration import Int8Calibration
from .rounding import LINEAR_QMAX, linear_codes, pair_room
from .smoothquant import run_calibration
from .transform import check_not_quantized

# Added to H's diagonal, as a fraction of its mean: keeps the Cholesky factorisation defined when calibration
# inputs do not span every direction (the paper's default, 1%).
DAMPING = 0.01


@torch.no_grad()
def calibrate_gptq_(
    model: nn.Module,
    dataloader: Iterable[Mapping[str, torch.Tensor]],
    num_batches: int = 8,
    modules: list[str] | None = None,
) -> Int8Calibration:
    """Measure H = E[x x^T] (in_features, in_features; fp32) of the inputs of each nn.Linear, for quantize_.

    Runs up to `num_batches` batches of `dataloader` (dicts holding input_ids, e.g. from DataCollatorWithPadding) and
    returns H per Linear (`Int8Calibration.hessians`); with it `quantize_(model, calibration=...)` gives those
    Linears GPTQ's codes instead of round-to-nearest's. The model is not changed. Padding tokens are excluded
    (attention_mask).
    `modules`: names of the nn.Linear modules; None: every nn.Linear. Memory: in_features² floats per Linear (9 MB
    for a 1536-wide FFN down projection). Composes with smooth_activations_ and keep_outlier_channels_ in any order:
    quantize_ maps H to the inputs the int8 weight sees.
    Raises ValueError for a quantized model, a name that is not an nn.Linear, a bad num_batches, an empty dataloader
    or a batch without input_ids, before any work. Records the step in config.compression["gptq"].
    """
    check_positive_int("num_batches", num_batches)
    check_not_quantized(model)
    named = dict(model.named_modules())
    linears = [n for n, m in named.items() if isinstance(m, nn.Linear)]
    names = linears if modules is None else list(modules)
    wrong = [n for n in names if not isinstance(named.get(n), nn.Linear)]
    require(not wrong, "modules", wrong[:3], "names of nn.Linear modules of the model")
    require(bool(names), "modules", names, "at least one nn.Linear")
    start = time.perf_counter()
    sums: dict[str, torch.Tensor] = {}
    counts = dict.fromkeys(names, 0)
    mask: list[torch.Tensor | None] = [None]

    def hook(name):
        def record(module, args):
            x = args[0].detach()
            if mask[0] is not None and x.shape[:-1] == mask[0].shape:
                x = x[mask[0]]  # (tokens, in): real tokens only
            x = x.reshape(-1, x.shape[-1]).double()
            sums[name] = x.T @ x if name not in sums else sums[name].addmm_(x.T, x)
            counts[name] += x.shape[0]

        return record

    def set_mask(inputs):
        attention = inputs.get("attention_mask")
        mask[0] = None if attention is None else attention.bool()

    handles = [named[n].register_forward_pre_hook(hook(n)) for n in names]
    try:
        batches = run_calibration(model, dataloader, num_batches, before_forward=set_mask)
    finally:
        for handle in handles:
            handle.remove()
    # A Linear the batches never reached (e.g. an unused head) keeps round-to-nearest.
    calibration = Int8Calibration(hessians={n: (sums[n] / counts[n]).float() for n in names if counts[n]})
    provenance.record(
        model.config,
        "gptq",
        {
            "method": "gptq",
            "calibration_batches": batches,
            "linears": sum(1 for n in names if counts[n]),
            "damping": DAMPING,
            "seconds": round(time.perf_counter() - start, 2),
        },
    )
    return calibration


@torch.no_grad()
def gptq_quantize_rows(
    weight: torch.Tensor, hessian: torch.Tensor, per_tensor: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """GPTQ codes (int8, (out, in)) within rounding.py's pair limit, and one scale per row (out,), for `weight`.

    `hessian` (in, in): E[x x^T] of the inputs. Channels with zero input energy get codes 0 (they never reach the
    output). The scales are round-to-nearest's (`rounding.linear_codes` with this H and `per_tensor`). The
    sequential update follows the paper's Algorithm 1 with one column at a time (no lazy batching: BERT-sized layers
    take about a second); an odd column is rounded within the room its pair partner left, and its clipping error
    is spread like any other.
    """
    w = weight.detach().double().clone()
    h = hessian.detach().double().clone()
    dead = torch.diagonal(h) <= 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    h.diagonal().add_(DAMPING * torch.diagonal(h).mean())
    _, scale = linear_codes(w, h, per_tensor)
    step = scale.double()
    # Upper Cholesky factor of H^-1: row i holds the weights that spread column i's error over columns i+1.. .
    inverse = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes = torch.empty_like(w)
    for i in range(w.shape[1]):
        q = torch.round(w[:, i] / step)
        limit = pair_room(codes[:, i - 1]) if i % 2 else torch.full_like(q, LINEAR_QMAX)
        q = torch.maximum(torch.minimum(q, limit), -limit)
        codes[:, i] = q
        error = (w[:, i] - q * step) / inverse[i, i]
        w[:, i + 1 :].sub_(error[:, None] * inverse[i, i + 1 :][None, :])
    return codes.to(torch.int8), scale
