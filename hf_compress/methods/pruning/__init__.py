"""Unstructured pruning while training: movement, Taylor or magnitude importance on a cubic schedule (masks)."""

from __future__ import annotations

from ..method import Method


def setup(trainer) -> None:
    """The pruners of both pruning methods are built together (the unstructured one prunes what FFN pruning
    leaves), once."""
    trainer._setup_pruning()


def finalize(trainer) -> None:
    trainer._finalize_pruning()


METHOD = Method(
    name="pruning",
    label="pruning (unstructured and/or FFN neurons)",
    tags=("pruning",),
    stages=("train", "finalize"),
    enabled=lambda args: getattr(args, "target_sparsity", 0) > 0,
    setup=setup,
    finalize=finalize,
)
