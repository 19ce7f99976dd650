"""Arguments of CompressionTrainer: distillation, pruning and ALBERT-style conversion in one run."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..checks import check_choice, check_embedding_size, check_num_hidden_groups, check_sharing_init, invalid
from .distillation_args import DistillationTrainingArguments
from .pruning_args import PruningTrainingArguments

QUANTIZATIONS = ("none", "dynamic-int8")
EMBEDDING_WEIGHTINGS = ("uniform", "used", "frequency")


@dataclass
class CompressionTrainingArguments(PruningTrainingArguments, DistillationTrainingArguments):
    """Every DistillationTrainingArguments and PruningTrainingArguments field, plus the ALBERT-style transform.

    Pruning is off unless target_sparsity > 0 or ffn_sparsity > 0; the ALBERT conversion is off unless
    embedding_size or num_hidden_groups is set. The student is converted before training and distilled from the
    unconverted teacher.
    """

    target_sparsity: float = field(
        default=0.0,
        metadata={"help": "Final fraction of pruned weights among the targets, in [0, 1); 0 turns pruning off."},
    )
    embedding_size: int | None = field(
        default=None,
        metadata={"help": "ALBERT-style factorised embedding size E in [1, hidden_size] (V×H becomes V×E·E×H)."},
    )
    num_hidden_groups: int | None = field(
        default=None,
        metadata={"help": "ALBERT-style sharing: G groups of consecutive layers share weights; G divides the depth."},
    )
    embedding_weighting: str = field(
        default="uniform",
        metadata={
            "help": "How the ALBERT-style factorisation weighs vocabulary rows: 'uniform' (every row alike), 'used' "
            "(only the tokens of the training data count: as if the vocabulary were pruned first) or 'frequency' "
            "(each token by how often the training data uses it)."
        },
    )
    sharing_init: str = field(
        default="first",
        metadata={
            "help": "Initialise a shared layer from its members: 'first' (measured better than 'mean' on tweets), "
            "'mean', or a layer index in the group."
        },
    )

    quantization: str = field(
        default="none",
        metadata={
            "help": "Post-training quantization applied after training, before the final save and push: 'none' or "
            "'dynamic-int8' (int8 Linear weights per channel, activations quantized at run time; int8 embeddings)."
        },
    )
    quantization_modules_to_not_convert: list[str] | None = field(
        default=None, metadata={"help": "Modules kept in full precision when quantizing, e.g. ['classifier']."}
    )

    def __post_init__(self):
        super().__post_init__()
        check_choice("quantization", self.quantization, QUANTIZATIONS)
        check_embedding_size(self.embedding_size)
        check_choice("embedding_weighting", self.embedding_weighting, EMBEDDING_WEIGHTINGS)
        check_num_hidden_groups(self.num_hidden_groups)
        if isinstance(self.sharing_init, str) and self.sharing_init.isdigit():
            self.sharing_init = int(self.sharing_init)  # a layer index within a group, from YAML or the CLI
        check_sharing_init(self.sharing_init)
        checkpointing = self.activation_checkpointing or self.gradient_checkpointing
        if self.albert_conversion and checkpointing:
            raise invalid(
                "gradient_checkpointing" if self.gradient_checkpointing else "activation_checkpointing",
                True,
                f"False with the ALBERT-style conversion (embedding_size={self.embedding_size}, num_hidden_groups="
                f"{self.num_hidden_groups}): transformers' ALBERT does not support activation checkpointing",
            )

    @property
    def albert_conversion(self) -> bool:
        """Whether the student is converted to ALBERT before training."""
        return self.embedding_size is not None or self.num_hidden_groups is not None
