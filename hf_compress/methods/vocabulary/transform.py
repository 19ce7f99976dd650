"""prune_vocabulary_: keep only the word-embedding rows a task uses, with a stock tokenizer that matches them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn
from transformers import PreTrainedModel

from ...checks import invalid
from ...provenance import record
from .tokenizer import pruned_tokenizer, tokenizer_kind, tokenizer_spec, tokens_to_keep

__all__ = ["prune_vocabulary_", "tokens_to_keep"]


def _config_token_ids(config) -> dict[str, int | list[int]]:
    """The config's token ids (pad_token_id, bos_token_id, ...): they name rows of the embedding, so they move too."""
    ids = {}
    for key, value in config.to_dict().items():
        if not key.endswith("_token_id") or value is None:
            continue
        if isinstance(value, int) or (isinstance(value, list) and all(isinstance(v, int) for v in value)):
            ids[key] = value
    return ids


def _flat(ids: dict[str, int | list[int]]) -> list[int]:
    return [i for v in ids.values() for i in (v if isinstance(v, list) else [v])]


def _copy_rows(weight: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """`weight[rows]` as a new ordinary tensor, even when `weight` is an inference tensor or we run in inference_mode.

    Outside inference mode an inference tensor cannot be edited in place, and a tensor made inside it cannot be
    trained afterwards, so the new table is built outside inference mode from a read of the old one.
    """
    with torch.inference_mode(False), torch.no_grad():
        return weight.detach()[rows.to(weight.device)].clone()


def _embedding_like(old: nn.Embedding, weight: torch.Tensor, padding_idx: int | None) -> nn.Embedding:
    """An nn.Embedding with `weight` (not re-initialised: the RNG is left alone) and `old`'s options."""
    with torch.inference_mode(False):
        new = nn.Embedding.from_pretrained(
            weight,
            freeze=not old.weight.requires_grad,
            padding_idx=padding_idx,
            max_norm=old.max_norm,
            norm_type=old.norm_type,
            scale_grad_by_freq=old.scale_grad_by_freq,
            sparse=old.sparse,
        )
    return new.train(old.training)


def _int8_rows(old: nn.Module, rows: torch.Tensor, padding_idx: int | None) -> nn.Module:
    """An Int8Embedding holding `old`'s rows `rows`: codes and per-row scales are selected, never re-quantized."""
    from ..int8.modules import Int8Embedding

    with torch.inference_mode(False), torch.no_grad():
        new = Int8Embedding(len(rows), old.embedding_dim, padding_idx, device=old.weight.device)
        new.weight = nn.Parameter(old.int8_weight()[rows.to(old.weight.device)].reshape(-1).clone(), False)
        new.weight_scale = old.weight_scale[rows.to(old.weight.device)].clone()
    return new


def _owner(model: nn.Module, module: nn.Module) -> nn.Module | None:
    """The module that holds `module` as a direct child."""
    for parent in model.modules():
        if any(child is module for child in parent.children()):
            return parent
    return None


def _shift_position_offset_(embeddings: nn.Module, old_pad: int, new_pad: int) -> None:
    """Keep RoBERTa-style position ids: they start at pad_token_id + 1 (fairseq), so moving the pad id moves them.

    Row new_pad + k of the new position table is row old_pad + k of the old one, so every token gets the position
    vector it had before. The table keeps its size; its last old_pad - new_pad rows (positions the model could not
    reach before) keep their old values.
    """
    old = embeddings.position_embeddings
    weight = _copy_rows(old.weight, torch.arange(old.num_embeddings))
    with torch.inference_mode(False), torch.no_grad():
        weight[new_pad : new_pad + old.num_embeddings - old_pad] = old.weight.detach()[old_pad:]
    embeddings.position_embeddings = _embedding_like(old, weight, new_pad)
    embeddings.padding_idx = new_pad


def prune_vocabulary_(model: PreTrainedModel, tokenizer, token_ids: Iterable[Sequence[int]]):
    """Keep the embedding rows of the tokens in `token_ids` (e.g. the train split's input_ids); return the tokenizer.

    `model`: a classifier or encoder whose only vocabulary table is its input embedding, with as many rows as
    `len(tokenizer)` (BERT, DistilBERT, RoBERTa, XLM-R, ELECTRA, DeBERTa-v2, ALBERT, ...). `tokenizer`: a fast
    tokenizer whose model is WordPiece, byte-level BPE or Unigram (see `tokenizer_pruning` for what each kind always
    keeps). `token_ids`: sequences of old ids. Every special and added token and every config token id is kept too.

    The model is changed in place: word embeddings of shape (kept, E), config.vocab_size and every config
    ``*_token_id`` renumbered (RoBERTa-style position tables shifted so that positions, which start after the pad id,
    are unchanged). The returned tokenizer is a stock fast tokenizer over the kept tokens, ids in their old order, with
    ``len(new_tokenizer) == config.vocab_size``. Text made of kept tokens gives the same tokens and logits as before;
    other words are split into kept pieces. Works under torch.no_grad() and torch.inference_mode(), before or after
    int8 or low-bit quantization (a quantized table keeps its codes and scales, so the result is the same).
    Raises ValueError (before changing anything) for a model with an output vocabulary layer, another embedding
    module, a tokenizer of another size or kind, or ids outside the tokenizer.
    Method: vocabulary trimming of multilingual models (Abdaoui et al., 2020, https://arxiv.org/abs/2010.05609).
    """
    if model.get_output_embeddings() is not None:
        raise invalid(
            "model",
            type(model).__name__,
            "an encoder or classifier without an output vocabulary layer (prune_vocabulary_ supports models whose "
            "only vocabulary table is the input embedding)",
        )
    embedding = model.get_input_embeddings()
    int8 = type(embedding).__name__ == "Int8Embedding"  # rows are independent (one scale each): select them as well
    low_bit = type(embedding).__name__ == "LowBitEmbedding"  # packed rows, whole bytes each, scales per row or group
    if type(embedding) is not nn.Embedding and not int8 and not low_bit:
        raise invalid(
            "input embedding",
            type(embedding).__name__,
            "nn.Embedding or hf_compress's Int8Embedding / LowBitEmbedding",
        )
    if embedding.num_embeddings != len(tokenizer):
        raise invalid(
            "len(tokenizer)",
            len(tokenizer),
            f"{embedding.num_embeddings}, the model's embedding rows: they must describe the same vocabulary",
        )
    spec = tokenizer_spec(tokenizer)
    kind = tokenizer_kind(spec)
    config_ids = _config_token_ids(model.config)
    for key, value in config_ids.items():
        if not all(0 <= i < len(tokenizer) for i in _flat({key: value})):
            raise invalid(f"config.{key}", value, f"ids in [0, {len(tokenizer)}), the tokenizer's ids")
    old_pad = embedding.padding_idx
    extra = _flat(config_ids) + ([old_pad] if old_pad is not None else [])
    # RoBERTa-style embeddings number positions from their padding_idx (see _shift_position_offset_).
    owner = _owner(model, embedding)
    positions_follow_pad = hasattr(owner, "create_position_ids_from_input_ids") and old_pad is not None
    if positions_follow_pad and getattr(owner, "padding_idx", None) != old_pad:
        padding_idx = getattr(owner, "padding_idx", None)
        raise invalid(f"{type(owner).__name__}.padding_idx", padding_idx, f"the word embeddings' {old_pad}")
    keep = tokens_to_keep(tokenizer, token_ids, extra_ids=extra, spec=spec)
    new_tokenizer = pruned_tokenizer(tokenizer, spec, keep)  # may refuse: all checks come before the model changes
    new_id = {old: new for new, old in enumerate(keep)}

    new_pad = new_id[old_pad] if old_pad is not None else None
    if int8:
        model.set_input_embeddings(_int8_rows(embedding, torch.tensor(keep), new_pad))
    elif low_bit:
        model.set_input_embeddings(embedding.select_rows(torch.tensor(keep), new_pad))
    else:
        model.set_input_embeddings(
            _embedding_like(embedding, _copy_rows(embedding.weight, torch.tensor(keep)), new_pad)
        )
    if positions_follow_pad and new_pad != old_pad:
        _shift_position_offset_(owner, old_pad, new_pad)
    before = model.config.vocab_size
    model.config.vocab_size = len(keep)
    for key, value in config_ids.items():
        setattr(model.config, key, [new_id[v] for v in value] if isinstance(value, list) else new_id[value])
    record(model.config, "vocabulary", {"tokenizer": kind, "vocab_size": {"before": before, "after": len(keep)}})
    return new_tokenizer
