"""The cubic sparsity schedule of Zhu & Gupta 2017 (arXiv:1710.01878)."""

from __future__ import annotations


def resolve_step(value: float, max_steps: int) -> int:
    """A schedule point given as a fraction of training (< 1) or as a step count (>= 1)."""
    return round(value * max_steps) if value < 1 else int(value)


def cubic_sparsity(step: int, start: int, end: int, target: float, initial: float = 0.0) -> float:
    """s_t = s_f + (s_i − s_f)·(1 − progress)³: fast pruning early, gentle near the end, then constant."""
    if step <= start:
        return initial if step < start or end > start else target
    if step >= end:
        return target
    progress = (step - start) / (end - start)
    return target + (initial - target) * (1.0 - progress) ** 3


def update_due(step: int, start: int, end: int, frequency: int) -> bool:
    """Whether masks are updated after `step`: every `frequency` steps from start, and always at end."""
    if step < start or step > end:
        return False
    return step == end or (step - start) % frequency == 0
