"""Fields of the ALBERT-style conversion (factorised embeddings, cross-layer sharing) and the rules they impose."""

from __future__ import annotations

from dataclasses import dataclass

from ...checks import check_choice, check_embedding_size, check_num_hidden_groups, check_sharing_init, invalid
from ...config_fields import config_field

EMBEDDING_WEIGHTINGS = ("uniform", "used", "frequency")


@dataclass
class AlbertArguments:
    """Off unless embedding_size or num_hidden_groups is set; the student is converted before training."""

    embedding_size: int | None = config_field(
        None, "ALBERT-style factorised embedding size E in [1, hidden_size] (V×H becomes V×E·E×H)."
    )
    num_hidden_groups: int | None = config_field(
        None, "ALBERT-style sharing: G groups of consecutive layers share weights; G divides the depth."
    )
    embedding_weighting: str = config_field(
        "uniform",
        "How the ALBERT-style factorisation weighs vocabulary rows: 'uniform' (every row alike), 'used' "
        "(only the tokens of the training data count: as if the vocabulary were pruned first) or 'frequency' "
        "(each token by how often the training data uses it).",
    )
    sharing_init: str = config_field(
        "first",
        "Initialise a shared layer from its members: 'first' (measured better than 'mean' on tweets), "
        "'mean', or a layer index in the group.",
    )

    @property
    def albert_conversion(self) -> bool:
        """Whether the student is converted to ALBERT before training."""
        return self.embedding_size is not None or self.num_hidden_groups is not None


def check_albert_arguments(args: AlbertArguments) -> None:
    """Field checks, and the one combination ALBERT refuses: activation checkpointing."""
    check_embedding_size(args.embedding_size)
    check_choice("embedding_weighting", args.embedding_weighting, EMBEDDING_WEIGHTINGS)
    check_num_hidden_groups(args.num_hidden_groups)
    if isinstance(args.sharing_init, str) and args.sharing_init.isdigit():
        args.sharing_init = int(args.sharing_init)  # a layer index within a group, from YAML or the CLI
    check_sharing_init(args.sharing_init)
    checkpointing = getattr(args, "activation_checkpointing", False) or getattr(args, "gradient_checkpointing", False)
    if args.albert_conversion and checkpointing:
        raise invalid(
            "gradient_checkpointing" if args.gradient_checkpointing else "activation_checkpointing",
            True,
            f"False with the ALBERT-style conversion (embedding_size={args.embedding_size}, num_hidden_groups="
            f"{args.num_hidden_groups}): transformers' ALBERT does not support activation checkpointing",
        )
