"""How a Linear's float weight becomes int8 codes that fbgemm's x86 kernel computes without saturating.

x86 int8 dot products without VNNI (vpmaddubsw, fbgemm's AVX2 path and the machine this project benchmarks on)
multiply uint8 activations by int8 weights and add each *pair* of products, input channels (2k, 2k+1), in a
saturating int16. Full 8-bit codes overflow it (255 * 127 * 2 > 2**15; measured on MiniLM: 29.7 dB logits SQNR
against 33.6 dB for 7-bit codes). quantize_dynamic and ONNX Runtime avoid this with 7-bit activations (reduce_range),
and this project until 2026-11-30 with 7-bit weights ([-63, 63]). Both give a bit away everywhere to guard against
the few pairs where two large weights meet.

Here the guard is put only where it is needed: codes use [-127, 127], and each pair satisfies
|c[2k]| + |c[2k+1]| <= PAIR_LIMIT = 128, so that 255 * 128 = 32640 < 2**15 for any activations. The few pairs above the
limit are moved to the nearest point that fits (both magnitudes shrink equally; an L2 projection). Each row's scale is
absmax / q for the q in SCALE_GRID whose codes give the row the smallest error after that fit (a smaller q makes fewer
pairs collide; a larger one rounds finer). Measured on the tweets MiniLM (benchmarks/int8_kernel.py): +2.8 to +5.0 dB
of weight SQNR over 7-bit codes in every encoder Linear. Machines with VNNI accumulate in int32 and never saturate:
the limit costs them almost nothing.
The on-disk format is unchanged (int8 codes, one fp32 scale per row): older checkpoints with 7-bit codes load and
compute as before.
"""

from __future__ import annotations

import torch

# A row whose largest |w| is below qmax * MIN_SCALE is stored coarser; an all-zero (pruned) row gets codes 0.
MIN_SCALE = 1e-10
LINEAR_QMAX = 127
PAIR_LIMIT = 128
# absmax / q for q in this grid: 63 is the 7-bit codes' scale (no pair can exceed the limit), 127 the full range.
SCALE_GRID = (63, 72, 80, 88, 96, 104, 112, 120, 127)


def _paired(codes: torch.Tensor) -> torch.Tensor:
    """(rows, in) -> (rows, ceil(in / 2), 2): channels (2k, 2k+1) side by side; an odd last channel gets a zero
    partner."""
    if codes.shape[1] % 2:
        codes = torch.cat([codes, codes.new_zeros(codes.shape[0], 1)], dim=1)
    return codes.view(codes.shape[0], -1, 2)


def fit_pairs(unit: torch.Tensor) -> torch.Tensor:
    """Integer codes (float tensor, same shape) nearest to `unit` (rows, in; weights in code units, |unit| <= 127)
    with |c[2k]| + |c[2k+1]| <= PAIR_LIMIT in every row."""
    rows, columns = unit.shape
    u = _paired(unit)
    codes = torch.round(u).clamp_(-LINEAR_QMAX, LINEAR_QMAX)
    over = codes.abs().sum(dim=-1, keepdim=True) > PAIR_LIMIT
    if not bool(over.any()):
        return codes.view(rows, -1)[:, :columns]
    # Nearest point of the L1 ball: shrink both magnitudes by the same amount (|u| <= 127 < PAIR_LIMIT keeps both
    # non-negative), floor them, and give the one unit left over (fractions sum to 0 or 1) to the larger fraction.
    magnitude = u.abs()
    shrink = ((magnitude.sum(dim=-1, keepdim=True) - PAIR_LIMIT) / 2).clamp(min=0)
    target = (magnitude - shrink).clamp(min=0)
    floor = target.floor()
    fraction = target - floor
    room = PAIR_LIMIT - floor.sum(dim=-1, keepdim=True)
    larger = torch.nn.functional.one_hot(fraction.argmax(dim=-1), 2).bool()
    fitted = floor + (larger & (room >= 1) & (fraction > 0)).to(floor.dtype)
    codes = torch.where(over, torch.sign(u) * fitted, codes)
    return codes.reshape(rows, -1)[:, :columns]


def pair_room(partner: torch.Tensor) -> torch.Tensor:
    """The largest |code| an odd channel may take beside its partner's codes (rows,)."""
    return PAIR_LIMIT - partner.abs()


@torch.no_grad()
def linear_codes(
    weight: torch.Tensor, hessian: torch.Tensor | None = None, per_tensor: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Round-to-nearest int8 codes (out, in) in [-127, 127] that fit the pair limit, and one fp32 scale per row.

    Each row's scale is chosen from SCALE_GRID by the row's error after `fit_pairs`: ‖ΔW_row‖², or ΔW_row H ΔW_rowᵀ
    (the output error on inputs with H = E[x xᵀ], (in, in)) when `hessian` is given. With `per_tensor`, every row
    gets the same scale (the whole weight's absmax / q, q chosen by the summed error), still stored once per row: the
    kernel then runs fbgemm's per-tensor path (as torch's quantize_dynamic does), faster at large batches than
    per-row scales, at a coarser rounding of the rows with small weights.
    """
    w = weight.detach().double()
    h = None if hessian is None else hessian.detach().to(w.device, torch.float64)
    absmax = w.abs().amax(dim=1)
    if per_tensor:
        absmax = absmax.amax().expand_as(absmax)
    best_error = best_codes = best_scale = None
    for q in SCALE_GRID:
        scale = (absmax / q).clamp(min=MIN_SCALE)
        codes = fit_pairs(w / scale[:, None])
        delta = codes * scale[:, None] - w
        error = delta.square().sum(dim=1) if h is None else ((delta @ h) * delta).sum(dim=1)
        if per_tensor:
            error = error.sum().expand_as(error)  # one choice for the whole weight
        if best_error is None:
            best_error, best_codes, best_scale = error, codes, scale
            continue
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best_codes = torch.where(better[:, None], codes, best_codes)
        best_scale = torch.where(better, scale, best_scale)
    return best_codes.to(torch.int8), best_scale.float()


def pairs_fit(codes: torch.Tensor) -> bool:
    """Whether int8 codes (out, in) keep every pair within the limit (7-bit codes always do)."""
    return bool((_paired(codes.int()).abs().sum(dim=-1) <= PAIR_LIMIT).all())
