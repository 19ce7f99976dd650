"""Knowledge distillation: soft teacher targets, hard labels and intermediate-layer terms (DistillationTrainer)."""

from __future__ import annotations

from ..method import Method


def _finalize(trainer) -> None:
    trainer._finalize_distillation()


METHOD = Method(
    name="distillation",
    label="knowledge distillation",
    tags=("distillation",),
    stages=("train", "finalize"),
    # Any arguments class that carries a teacher and the loss mixture is a distillation run.
    enabled=lambda args: hasattr(args, "temperature") and hasattr(args, "alpha"),
    finalize=_finalize,
)
