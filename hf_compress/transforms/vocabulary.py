"""prune_vocabulary_: keep only the word-embedding rows a task uses, with a stock tokenizer that matches them."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Sequence

import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedModel

from ..provenance import record


def tokens_to_keep(tokenizer, token_ids: Iterable[Sequence[int]]) -> list[int]:
    """Old ids to keep, ascending: the special tokens, every id in `token_ids`, and every single-character piece.

    The single characters (and their '##' continuations) keep every word spellable, so a word outside the kept
    vocabulary is split into smaller pieces rather than turned into [UNK].
    """
    vocab = tokenizer.get_vocab()
    keep = set(tokenizer.all_special_ids)
    for ids in token_ids:
        keep.update(int(i) for i in ids)
    prefix = "##"
    for token, index in vocab.items():
        if len(token) == 1 or (token.startswith(prefix) and len(token) == len(prefix) + 1):
            keep.add(index)
    bad = [i for i in keep if not 0 <= i < len(vocab)]
    if bad:
        raise ValueError(f"token_ids hold ids outside the tokenizer's vocabulary of {len(vocab)}: {sorted(bad)[:5]}")
    return sorted(keep)


def _pruned_tokenizer(tokenizer, keep: list[int]):
    """The same tokenizer with only `keep` in its WordPiece vocabulary, ids renumbered in the same order."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        path = os.path.join(tmp, "tokenizer.json")
        if not os.path.exists(path):
            raise ValueError(f"{type(tokenizer).__name__} has no tokenizer.json; only fast WordPiece tokenizers work")
        with open(path) as f:
            spec = json.load(f)
        if spec["model"]["type"] != "WordPiece":
            raise ValueError(f"tokenizer model {spec['model']['type']!r} is not supported; allowed: WordPiece")
        new_id = {old: new for new, old in enumerate(keep)}
        by_id = {i: t for t, i in spec["model"]["vocab"].items()}
        spec["model"]["vocab"] = {by_id[old]: new for old, new in new_id.items()}
        for token in spec["added_tokens"]:
            token["id"] = new_id[token["id"]]
        post = spec.get("post_processor") or {}
        for special in (post.get("special_tokens") or {}).values():
            special["ids"] = [new_id[i] for i in special["ids"]]
        if spec.get("padding"):
            spec["padding"]["pad_id"] = new_id[spec["padding"]["pad_id"]]
        with open(path, "w") as f:
            json.dump(spec, f, ensure_ascii=False)
        with open(os.path.join(tmp, "vocab.txt"), "w") as f:  # for anything that reads the slow format
            f.write("\n".join(by_id[old] for old in keep) + "\n")
        return AutoTokenizer.from_pretrained(tmp)


def prune_vocabulary_(model: PreTrainedModel, tokenizer, token_ids: Iterable[Sequence[int]]):
    """Keep the embedding rows of the tokens in `token_ids` (e.g. the train split's input_ids); return the tokenizer.

    The model is changed in place (smaller word embeddings, config.vocab_size and pad_token_id renumbered) and
    stays a stock checkpoint; the returned tokenizer is a stock fast tokenizer over the kept tokens. Text made of
    kept tokens gives the same logits as before; other words are split into kept pieces. Apply it before int8.
    """
    if model.get_output_embeddings() is not None:
        raise ValueError(
            f"{type(model).__name__} has an output vocabulary layer; prune_vocabulary_ supports encoders and "
            "classifiers whose only vocabulary table is the input embedding"
        )
    embedding = model.get_input_embeddings()
    if type(embedding) is not nn.Embedding:
        raise ValueError(
            f"the input embedding is a {type(embedding).__name__}, not nn.Embedding: prune the vocabulary before "
            "quantizing"
        )
    if embedding.num_embeddings != len(tokenizer):
        raise ValueError(
            f"the model has {embedding.num_embeddings} embedding rows but the tokenizer has {len(tokenizer)} tokens: "
            "they must describe the same vocabulary"
        )
    keep = tokens_to_keep(tokenizer, token_ids)
    new_tokenizer = _pruned_tokenizer(tokenizer, keep)
    index = torch.tensor(keep)
    old_pad = embedding.padding_idx
    new_pad = keep.index(old_pad) if old_pad is not None else None
    smaller = nn.Embedding(len(keep), embedding.embedding_dim, padding_idx=new_pad, device=embedding.weight.device)
    with torch.no_grad():
        smaller.weight.copy_(embedding.weight[index])
    model.set_input_embeddings(smaller)
    before = model.config.vocab_size
    model.config.vocab_size = len(keep)
    if getattr(model.config, "pad_token_id", None) is not None:
        model.config.pad_token_id = keep.index(model.config.pad_token_id)
    record(model.config, "vocabulary", {"vocab_size": {"before": before, "after": len(keep)}})
    return new_tokenizer
