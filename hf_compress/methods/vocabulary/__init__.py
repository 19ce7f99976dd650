"""Vocabulary pruning: word-embedding rows and tokenizer entries of tokens the task never uses are cut."""

from __future__ import annotations

from ..method import Method
from .config import VocabularyArguments, check_vocabulary_arguments


def validate(trainer) -> None:
    """Before training: the tokens kept are those of the train split, so both must be there."""
    from ...checks import invalid

    dataset = trainer.train_dataset
    if trainer.processing_class is None or dataset is None or "input_ids" not in getattr(dataset, "column_names", ()):
        raise invalid(
            "prune_vocabulary",
            True,
            "false without a tokenizer (processing_class) and a tokenised train_dataset (input_ids): the tokens "
            "kept are those the train split uses",
        )


def prune(trainer) -> None:
    """Last: every other step has run, so the rows cut are the final (possibly int8 or packed) ones."""
    from .transform import prune_vocabulary_

    ids = trainer.train_dataset["input_ids"]
    trainer.processing_class = prune_vocabulary_(trainer.model, trainer.processing_class, ids)


METHOD = Method(
    name="vocabulary",
    label="vocabulary pruning",
    tags=("vocabulary-pruning",),
    arguments=VocabularyArguments,
    stages=("finalize",),
    enabled=lambda args: args.prune_vocabulary,
    check=check_vocabulary_arguments,
    validate=validate,
    finalize=prune,
)
