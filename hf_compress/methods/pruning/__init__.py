"""Unstructured pruning while training: movement, Taylor or magnitude importance on a cubic schedule (masks)."""

from __future__ import annotations

from ..method import Method

# The pruners of both pruning methods are built together (the unstructured one prunes what FFN pruning leaves) and
# finalized together, once: PruningMixin's `_setup_pruning` and `_finalize_pruning` are idempotent.
METHOD = Method(
    name="pruning",
    label="pruning (unstructured and/or FFN neurons)",
    tags=("pruning",),
    stages=("train", "finalize"),
    enabled=lambda args: getattr(args, "target_sparsity", 0) > 0,
    setup=lambda trainer: trainer._setup_pruning(),
    finalize=lambda trainer: trainer._finalize_pruning(),
)
