"""Structured FFN pruning: whole intermediate neurons removed, while training or one-shot (`prune_ffn_`)."""

from __future__ import annotations

from ..method import Method
from ..pruning import METHOD as PRUNING

# While training it shares the pruning method's hooks (see there); one-shot, `prune_ffn_` records "ffn_pruning".
METHOD = Method(
    name="ffn_pruning",
    label="one-shot FFN neuron pruning",
    tags=PRUNING.tags,
    stages=PRUNING.stages,
    enabled=lambda args: getattr(args, "ffn_sparsity", 0) > 0,
    setup=PRUNING.setup,
    finalize=PRUNING.finalize,
)
