"""How many singular directions each factorised Linear keeps: one rank, a parameter ratio, an energy, or a budget.

A rank-r factorisation of an m×n (out×in) weight stores r(m + n) numbers instead of mn, so it only saves parameters
while r < mn / (m + n); a module whose rule asks for more stays a plain Linear (`None` below).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping

import torch


def factorised_size(out_features: int, in_features: int, rank: int) -> int:
    """Weight parameters of a rank-`rank` factorisation of an out×in weight (the bias is not counted)."""
    return rank * (out_features + in_features)


def saves_parameters(out_features: int, in_features: int, rank: int) -> bool:
    """True when rank r stores fewer weight parameters than the dense weight: r(m + n) < mn."""
    return factorised_size(out_features, in_features, rank) < out_features * in_features


def rank_for_ratio(out_features: int, in_features: int, ratio: float) -> int:
    """The largest rank (>= 1) whose factors hold at most `ratio` of the dense weight's parameters."""
    return max(1, math.floor(ratio * out_features * in_features / (out_features + in_features)))


def rank_for_energy(spectrum: torch.Tensor, energy: float) -> int:
    """The smallest rank whose singular values keep at least `energy` of the spectrum's energy Σσ².

    `spectrum`: singular values in descending order. An all-zero spectrum (a weight of zeros) needs rank 1.
    """
    squares = spectrum.double().square()
    total = float(squares.sum())
    if total == 0.0:
        return 1
    kept = torch.cumsum(squares, 0) / total
    # A small tolerance, so that energy=1.0 is met by the full rank despite rounding in the cumulative sum.
    return min(int(torch.searchsorted(kept, torch.tensor(energy - 1e-12, dtype=kept.dtype))) + 1, len(spectrum))


def allocate_budget(
    spectra: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int, int]], budget: float
) -> dict[str, int]:
    """Ranks that keep at most `budget` of the modules' weight parameters, spent where the loss is most sensitive.

    `spectra[name]`: singular values σ_k (descending) of the module's Fisher-weighted weight, scaled so that σ_k² is
    proportional to the estimated loss increase of dropping direction k (see "fisher" in `low_rank`); `shapes[name]`:
    (out, in).
    Every module starts at rank 1 (a rank-0 module would drop its input entirely); then directions are taken
    greedily, highest σ_k² per parameter cost (out + in) first, while they fit in the budget. Within a module the
    next direction is always its largest remaining σ, so greedy picks a prefix of each spectrum. A module that reaches
    the rank where factors stop saving parameters becomes dense (exact) and takes no more directions; its dense size
    is at most what was charged for it, so the budget still holds.
    Raises ValueError when the budget cannot give every module rank 1.
    """
    total = sum(out * inp for out, inp in shapes.values())
    allowance = budget * total
    ranks = {name: 1 for name in shapes}
    spent = sum(factorised_size(out, inp, 1) for out, inp in shapes.values())
    if spent > allowance:
        raise ValueError(
            f"budget={budget!r} is invalid; allowed: at least {spent / total:.4f} (rank 1 for each of the "
            f"{len(shapes)} selected modules)"
        )
    # Max-heap of (-gain per parameter, name); the gain of a module's next direction is its next squared σ.
    heap = []
    for name, (out, inp) in shapes.items():
        if len(spectra[name]) > 1:
            heap.append((-(float(spectra[name][1]) ** 2) / (out + inp), name))
    heapq.heapify(heap)
    while heap:
        _, name = heapq.heappop(heap)
        out, inp = shapes[name]
        if spent + out + inp > allowance:
            continue  # does not fit; a cheaper module (smaller out + in) may still fit
        ranks[name] += 1
        spent += out + inp
        rank = ranks[name]
        if saves_parameters(out, inp, rank) and rank < len(spectra[name]):
            heapq.heappush(heap, (-(float(spectra[name][rank]) ** 2) / (out + inp), name))
    return ranks
