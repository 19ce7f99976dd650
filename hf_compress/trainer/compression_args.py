"""Arguments of CompressionTrainer: every method of the table that a run can turn on, in one flat class."""

from __future__ import annotations

from dataclasses import dataclass

from ..config_fields import config_field
from ..methods.albert.config import AlbertArguments
from ..methods.distillation.config import DistillationTrainingArguments
from ..methods.int8.config import Int8Arguments
from ..methods.low_bit.config import LowBitArguments
from ..methods.low_rank.config import LowRankArguments
from ..methods.pruning.config import PruningTrainingArguments


@dataclass
class CompressionTrainingArguments(
    Int8Arguments,
    LowBitArguments,
    LowRankArguments,
    AlbertArguments,
    PruningTrainingArguments,
    DistillationTrainingArguments,
):
    """Every DistillationTrainingArguments and PruningTrainingArguments field, plus the fields of each method of
    `hf_compress.methods.METHODS` (ALBERT-style conversion, low-rank, low-bit, int8, vocabulary pruning).

    Each method is off unless its fields turn it on (pruning: target_sparsity > 0 or ffn_sparsity > 0; ALBERT:
    embedding_size or num_hidden_groups; low-rank: low_rank_ratio; low-bit: weight_bits or bit_budget_mb; int8:
    quantization; vocabulary: prune_vocabulary). Each method checks its fields and the combinations it refuses once,
    here; the trainer applies the enabled ones in the table's order.
    """

    target_sparsity: float = config_field(
        0.0, "Final fraction of pruned weights among the targets, in [0, 1); 0 turns pruning off."
    )
