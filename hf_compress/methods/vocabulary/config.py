"""The field of vocabulary pruning, the last step of every run that asks for it."""

from __future__ import annotations

from dataclasses import dataclass

from ...checks import require
from ...config_fields import config_field


@dataclass
class VocabularyArguments:
    """Off unless prune_vocabulary: at finalization, after every other step, the word embeddings keep only the rows
    of tokens the train dataset uses (`prune_vocabulary_`), and the trainer's tokenizer becomes the matching one."""

    prune_vocabulary: bool = config_field(
        False,
        "After training, keep only the word embeddings of tokens the training split uses (plus what keeps "
        "every text spellable) and save a matching stock tokenizer: a smaller model, same outputs on text made "
        "of kept tokens, other words split into kept pieces.",
    )


def check_vocabulary_arguments(args: VocabularyArguments) -> None:
    """prune_vocabulary is a bool (YAML and argparse can hand other things)."""
    require(isinstance(args.prune_vocabulary, bool), "prune_vocabulary", args.prune_vocabulary, "true or false")
