"""Callbacks that drive compression state from Trainer's loop at the right moments."""

from __future__ import annotations

from transformers import TrainerCallback


class PruningCallback(TrainerCallback):
    """Drives the pruners: fix the schedule at train begin, score before each optimizer step, mask after it.

    Order inside one optimizer step (Trainer's): clip gradients → `on_pre_optimizer_step` (score from the clipped,
    DDP-synchronised gradients, then zero the gradients of pruned entries) → optimizer.step → `on_optimizer_step`
    (re-zero pruned entries: AdamW momentum and weight decay would revive them) → `on_step_end` (mask updates due).
    """

    def __init__(self, pruners: list, heads, schedule):
        self.pruners = pruners  # the FFN pruner first: unstructured pruning then counts what it leaves
        self.heads = heads
        self.schedule = schedule

    def on_train_begin(self, args, state, control, **kwargs):
        self.schedule.resolve(state.max_steps)  # a point the run cannot reach is an error before the first step
        for pruner in self.pruners:
            pruner.apply_masks()  # a resumed run starts from its checkpoint's masks

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        self.heads.before_optimizer_step()
        for pruner in self.pruners:
            pruner.before_optimizer_step()

    def on_optimizer_step(self, args, state, control, **kwargs):
        for pruner in self.pruners:
            pruner.apply_masks()

    def on_step_end(self, args, state, control, **kwargs):
        for pruner in self.pruners:
            pruner.on_step_end(state.global_step)
