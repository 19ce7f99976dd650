"""Structured FFN pruning: whole intermediate neurons removed, while training or one-shot (`prune_ffn_`)."""

from __future__ import annotations

from ..method import Method
from ..pruning import finalize, setup

METHOD = Method(
    name="ffn_pruning",
    label="one-shot FFN neuron pruning",
    tags=("pruning",),
    stages=("train", "finalize"),
    enabled=lambda args: getattr(args, "ffn_sparsity", 0) > 0,
    setup=setup,
    finalize=finalize,
)
