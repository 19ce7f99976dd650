"""The cubic sparsity schedule of Zhu & Gupta 2017 (arXiv:1710.01878), shared by every pruner of a run."""

from __future__ import annotations

from dataclasses import dataclass

from ...checks import invalid, require


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


@dataclass
class SparsitySchedule:
    """When a pruner updates its masks and to which fraction of its final sparsity.

    `start` and `end` are fractions of training (< 1) or optimizer steps (>= 1); masks are updated every `frequency`
    steps in between and always at `end`. The step numbers are fixed by `resolve(max_steps)` once Trainer knows how
    long the run is; a point the run cannot reach is an error then, before the first step.
    """

    start: float
    end: float
    frequency: int
    start_step: int = 0
    end_step: int = 0

    def __post_init__(self):
        require(self.start >= 0, "pruning_start", self.start, "a fraction in [0, 1) or a step >= 1")
        require(self.end >= 0, "pruning_end", self.end, "a fraction in [0, 1) or a step >= 1")
        if (self.start < 1) == (self.end < 1):  # comparable only in the same unit; resolve() checks the rest
            require(self.end >= self.start, "pruning_end", self.end, f"a point at or after pruning_start={self.start}")
        require(
            isinstance(self.frequency, int) and self.frequency >= 1,
            "pruning_frequency",
            self.frequency,
            "an integer >= 1",
        )

    def resolve(self, max_steps: int) -> None:
        """Fix the step numbers for a run of `max_steps` optimizer steps; refuse points the run cannot reach.

        Raises:
            ValueError: pruning_start, pruning_end or pruning_frequency beyond the run's last step (the target
                sparsity would silently not be reached), or an end before the start once both are steps.
        """
        start, end = resolve_step(self.start, max_steps), resolve_step(self.end, max_steps)
        allowed = f"a step <= {max_steps} (this run's optimizer steps) or a fraction of training < 1"
        if start > max_steps:
            raise invalid("pruning_start", self.start, allowed)
        if end > max_steps:
            raise invalid("pruning_end", self.end, allowed)
        if end < start:
            raise invalid("pruning_end", self.end, f"a point at or after pruning_start={self.start} (step {start})")
        if self.frequency > max_steps:
            raise invalid("pruning_frequency", self.frequency, f"an integer in [1, {max_steps}] (this run's steps)")
        self.start_step, self.end_step = start, end

    def sparsity_at(self, step: int, target: float) -> float:
        """The scheduled fraction of `target` reached after `step` optimizer steps."""
        return cubic_sparsity(step, self.start_step, self.end_step, target)

    def due(self, step: int) -> bool:
        """Whether masks are updated after `step`."""
        return update_due(step, self.start_step, self.end_step, self.frequency)
