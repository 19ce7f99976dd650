"""Knowledge distillation: soft teacher targets, hard labels and intermediate-layer terms (DistillationTrainer)."""

from __future__ import annotations

from ..method import Method

METHOD = Method(
    name="distillation",
    label="knowledge distillation",
    tags=("distillation",),
    stages=("train", "finalize"),
    # Any arguments class that carries a teacher and the loss mixture is a distillation run; the trainer is the
    # method's training hook, and finalize() detaches its projection and records it.
    enabled=lambda args: hasattr(args, "temperature") and hasattr(args, "alpha"),
    finalize=lambda trainer: trainer._finalize_distillation(),
)
