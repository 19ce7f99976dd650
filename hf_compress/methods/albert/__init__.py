"""ALBERT-style conversion: factorised embeddings (V×E·E×H) and cross-layer sharing, into a stock `albert` model."""

from __future__ import annotations

from ..method import Method
from .config import AlbertArguments, check_albert_arguments


def token_weights(args, model, train_dataset):
    """Vocabulary row weights for the factorisation, counted over the training data's input_ids (None: uniform)."""
    if args.embedding_weighting == "uniform" or args.embedding_size is None:
        return None
    if train_dataset is None or "input_ids" not in getattr(train_dataset, "column_names", ()):
        raise ValueError(
            f"embedding_weighting={args.embedding_weighting!r} is invalid without a tokenised train_dataset; "
            "allowed: 'uniform', or give the trainer a train_dataset with input_ids"
        )
    from .transform import token_frequencies

    counts = token_frequencies(train_dataset["input_ids"], model.config.vocab_size)
    return counts if args.embedding_weighting == "frequency" else (counts > 0).double()


def convert(args, model, train_dataset):
    """Before Trainer.__init__, so that the optimizer holds the shared, factorised parameters."""
    if model is None or model.config.model_type == "albert":
        return model
    from .transform import to_albert

    weights = token_weights(args, model, train_dataset)
    return to_albert(model, args.embedding_size, args.num_hidden_groups, args.sharing_init, weights)


METHOD = Method(
    name="albert",
    label="ALBERT-style embedding factorisation and layer sharing",
    tags=("albert", "parameter-sharing"),
    arguments=AlbertArguments,
    stages=("convert",),
    enabled=lambda args: args.albert_conversion,
    check=check_albert_arguments,
    before_trainer=convert,
)
