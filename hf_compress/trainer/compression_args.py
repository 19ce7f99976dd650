"""Arguments of CompressionTrainer: distillation and pruning in one run."""

from __future__ import annotations

from dataclasses import dataclass, field

from .distillation_args import DistillationTrainingArguments
from .pruning_args import PruningTrainingArguments


@dataclass
class CompressionTrainingArguments(PruningTrainingArguments, DistillationTrainingArguments):
    """Every DistillationTrainingArguments and PruningTrainingArguments field; pruning is off unless asked for."""

    target_sparsity: float = field(
        default=0.0,
        metadata={"help": "Final fraction of pruned weights among the targets, in [0, 1); 0 turns pruning off."},
    )
