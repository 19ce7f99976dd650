"""Pruning a fast tokenizer's vocabulary: which tokens must stay, and the same tokenizer over only those tokens.

A fast tokenizer is one `tokenizer.json` (the `tokenizers` library's format); we edit that file and load it back with
`AutoTokenizer`, so the result is a stock tokenizer that reloads anywhere. Three kinds of model are supported:

- **WordPiece** (BERT, DistilBERT, ELECTRA): every single character and its continuation (``a``, ``##a``) stays, so
  a word whose pieces were dropped is spelled with smaller pieces instead of becoming [UNK].
- **Byte-level BPE** (RoBERTa, GPT-2): the 256 byte-level base pieces always stay, so no text is ever unknown. A kept
  token keeps its whole merge tree (both parts of every merge that produces it, down to the base pieces), and a merge
  stays iff its two parts and its result stay. So no kept token becomes unreachable, and a text whose tokens were all
  kept is tokenised exactly as before: every merge the old tokenizer applied to it is still there, and the merges left
  keep their order (BPE applies the lowest-ranked applicable merge first).
- **Unigram** (SentencePiece: XLM-R, DeBERTa-v3, ALBERT): pieces keep their scores; every single-character piece, the
  unk piece and (with ``byte_fallback``) the 256 ``<0xNN>`` byte pieces stay. A text whose best segmentation used kept
  pieces only keeps that segmentation (the best path over fewer pieces is the same path).

Every added token (special or not) stays and keeps its string. Ids are renumbered in their old order, so added
tokens still come after the model's vocabulary; the post-processor's special-token ids, the padding id and Unigram's
``unk_id`` follow.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from typing import Any

from tokenizers import pre_tokenizers
from transformers import AutoTokenizer
from transformers.tokenization_utils_tokenizers import TokenizersBackend

from ...checks import invalid

ALLOWED_KINDS = (
    "a fast tokenizer (tokenizer.json) whose model is WordPiece, byte-level BPE (ByteLevel pre-tokenizer) or Unigram"
)
_BYTE_PIECE = re.compile(r"^<0x[0-9A-F]{2}>$")
# The parts of tokenizer.json that decide how text becomes ids; a reloaded tokenizer must reproduce all of them.
_BEHAVIOUR = (
    "normalizer",
    "pre_tokenizer",
    "model",
    "post_processor",
    "decoder",
    "added_tokens",
    "padding",
    "truncation",
)
_SETTINGS = (
    "padding_side",
    "truncation_side",
    "model_max_length",
    "split_special_tokens",
    "clean_up_tokenization_spaces",
)
# Files a tokenizer may save besides tokenizer.json that spell out the old vocabulary (slow formats).
_OLD_VOCAB_FILES = ("vocab.txt", "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spm.model", "tokenizer.model")


def tokenizer_spec(tokenizer) -> dict[str, Any]:
    """The tokenizer's `tokenizer.json` as a dict; ValueError for a slow (Python) tokenizer."""
    if not isinstance(tokenizer, TokenizersBackend):
        raise invalid("tokenizer kind", f"slow {type(tokenizer).__name__}", ALLOWED_KINDS)
    return json.loads(tokenizer.backend_tokenizer.to_str())


def tokenizer_kind(spec: dict[str, Any]) -> str:
    """One of KINDS for a tokenizer.json dict; ValueError naming the kind for anything else."""
    model_type = spec["model"].get("type")
    if model_type == "BPE":
        if not _has_byte_level(spec.get("pre_tokenizer")):
            raise invalid("tokenizer kind", "BPE without a ByteLevel pre-tokenizer", ALLOWED_KINDS)
        return "byte-level BPE"
    if model_type in ("WordPiece", "Unigram"):
        return model_type
    raise invalid("tokenizer kind", model_type, ALLOWED_KINDS)


def _has_byte_level(pre_tokenizer: dict | None) -> bool:
    if not pre_tokenizer:
        return False
    if pre_tokenizer["type"] == "Sequence":
        return any(_has_byte_level(p) for p in pre_tokenizer["pretokenizers"])
    return pre_tokenizer["type"] == "ByteLevel"


def _vocab(spec: dict[str, Any]) -> dict[str, int]:
    """The model's own vocabulary (without added tokens outside it) as token -> id."""
    vocab = spec["model"]["vocab"]
    if spec["model"]["type"] == "Unigram":
        return {piece: i for i, (piece, _) in enumerate(vocab)}
    return dict(vocab)


def _merge_pairs(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """BPE merges as (left, right) pairs; tokenizer.json holds either pairs or "left right" strings."""
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]


def _merge_result(spec: dict[str, Any], left: str, right: str) -> str:
    # As the tokenizers library builds a BPE model: the right part loses the continuing-subword prefix, if any.
    prefix = spec["model"].get("continuing_subword_prefix") or ""
    return left + right[len(prefix) :]


def _always_kept(spec: dict[str, Any], kind: str) -> set[int]:
    """Ids every text needs to stay tokenisable as before (see the module docstring), for one kind."""
    vocab, model = _vocab(spec), spec["model"]
    keep: set[int] = set()
    if kind == "WordPiece":
        prefix = model.get("continuing_subword_prefix") or ""
        keep = {
            i
            for t, i in vocab.items()
            if len(t) == 1 or (prefix and t.startswith(prefix) and len(t) == len(prefix) + 1)
        }
    elif kind == "byte-level BPE":
        prefix, suffix = model.get("continuing_subword_prefix") or "", model.get("end_of_word_suffix") or ""
        for char in pre_tokenizers.ByteLevel.alphabet():
            keep.update(vocab[t] for t in {char, prefix + char, char + suffix} if t in vocab)
    else:  # Unigram
        keep = {i for t, i in vocab.items() if len(t) == 1}
        if model.get("byte_fallback"):
            keep.update(i for t, i in vocab.items() if _BYTE_PIECE.match(t))
        if model.get("unk_id") is not None:
            keep.add(model["unk_id"])
    if model.get("unk_token") is not None and model["unk_token"] in vocab:  # WordPiece and BPE name their unk token
        keep.add(vocab[model["unk_token"]])
    return keep


def _referenced_ids(spec: dict[str, Any]) -> set[int]:
    """Ids that tokenizer.json itself inserts: added tokens, the post-processor's special tokens, the padding id."""
    ids = {token["id"] for token in spec["added_tokens"]}

    def walk(post: dict | None) -> None:
        if not post:
            return
        if post["type"] == "Sequence":
            for p in post["processors"]:
                walk(p)
        elif post["type"] in ("BertProcessing", "RobertaProcessing"):
            ids.update((post["sep"][1], post["cls"][1]))
        elif post["type"] == "TemplateProcessing":
            for special in post["special_tokens"].values():
                ids.update(special["ids"])

    walk(spec.get("post_processor"))
    if spec.get("padding"):
        ids.add(spec["padding"]["pad_id"])
    return ids


def _with_merge_trees(spec: dict[str, Any], keep: set[int]) -> set[int]:
    """`keep` plus both parts of every merge that produces a kept token, recursively (BPE)."""
    vocab = _vocab(spec)
    producers: dict[str, list[tuple[str, str]]] = {}
    for left, right in _merge_pairs(spec):
        producers.setdefault(_merge_result(spec, left, right), []).append((left, right))
    token = {i: t for t, i in vocab.items()}
    todo = [token[i] for i in keep if i in token]
    keep = set(keep)
    while todo:
        for pair in producers.get(todo.pop(), ()):
            for part in pair:
                if part not in vocab:
                    raise invalid(
                        "tokenizer merge",
                        " ".join(pair),
                        f"merges whose parts are in the vocabulary ({part!r} is not)",
                    )
                if vocab[part] not in keep:
                    keep.add(vocab[part])
                    todo.append(part)
    return keep


def tokens_to_keep(
    tokenizer, token_ids: Iterable[Sequence[int]], extra_ids: Iterable[int] = (), spec: dict[str, Any] | None = None
) -> list[int]:
    """Old ids to keep, ascending: `token_ids`, `extra_ids`, every special and added token, and what the kind needs.

    What each kind needs is in the module docstring (single characters for WordPiece, the 256 byte-level pieces and
    every kept token's merge tree for byte-level BPE, single characters, unk and byte pieces for Unigram). `spec` is
    the tokenizer's tokenizer.json if already read. Raises ValueError for an id outside [0, len(tokenizer)) or a
    tokenizer kind that is not supported.
    """
    spec = spec or tokenizer_spec(tokenizer)
    kind = tokenizer_kind(spec)
    keep = set(tokenizer.all_special_ids) | {int(i) for i in extra_ids} | _referenced_ids(spec)
    for ids in token_ids:
        keep.update(int(i) for i in ids)
    bad = sorted(i for i in keep if not 0 <= i < len(tokenizer))
    if bad:
        raise invalid(
            "token_ids", bad[:5], f"ids in [0, {len(tokenizer)}); ids outside the tokenizer's vocabulary are refused"
        )
    keep |= _always_kept(spec, kind)
    if kind == "byte-level BPE":
        keep = _with_merge_trees(spec, keep)
    return sorted(keep)


def _renumber_post_processor(post: dict | None, new_id: dict[int, int]) -> None:
    if not post:
        return
    if post["type"] == "Sequence":
        for p in post["processors"]:
            _renumber_post_processor(p, new_id)
    elif post["type"] in ("BertProcessing", "RobertaProcessing"):
        post["sep"][1], post["cls"][1] = new_id[post["sep"][1]], new_id[post["cls"][1]]
    elif post["type"] == "TemplateProcessing":
        for special in post["special_tokens"].values():
            special["ids"] = [new_id[i] for i in special["ids"]]
    elif post["type"] != "ByteLevel":  # the only other post-processor, and it holds no ids
        raise invalid(
            "post_processor type",
            post["type"],
            "Sequence, BertProcessing, RobertaProcessing, TemplateProcessing, ByteLevel",
        )


def pruned_spec(spec: dict[str, Any], keep: list[int]) -> dict[str, Any]:
    """A copy of tokenizer.json over the ids in `keep` only (ascending old ids), renumbered 0.. in the same order."""
    spec = json.loads(json.dumps(spec))
    new_id = {old: new for new, old in enumerate(keep)}
    model = spec["model"]
    if model["type"] == "Unigram":
        model["vocab"] = [piece for old, piece in enumerate(model["vocab"]) if old in new_id]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    else:
        model["vocab"] = {t: new_id[i] for t, i in sorted(model["vocab"].items(), key=lambda x: x[1]) if i in new_id}
    if model["type"] == "BPE":
        vocab, pairs = model["vocab"], _merge_pairs(spec)
        kept = [
            merge
            for merge, (left, right) in zip(model["merges"], pairs)
            if left in vocab and right in vocab and _merge_result(spec, left, right) in vocab
        ]
        model["merges"] = kept
    for token in spec["added_tokens"]:
        token["id"] = new_id[token["id"]]
    _renumber_post_processor(spec.get("post_processor"), new_id)
    if spec.get("padding"):
        spec["padding"]["pad_id"] = new_id[spec["padding"]["pad_id"]]
    return spec


def _canonical(value: Any) -> Any:
    # The family classes rebuild their model with "" where tokenizer.json may say null (e.g. BPE's prefix): same thing.
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_canonical(v) for v in value]
    return "" if value is None else value


def _differences(tokenizer, spec: dict[str, Any]) -> list[str]:
    """The parts of tokenizer.json that `tokenizer` does not reproduce from `spec`."""
    got = json.loads(tokenizer.backend_tokenizer.to_str())
    return [key for key in _BEHAVIOUR if _canonical(got.get(key)) != _canonical(spec.get(key))]


def pruned_tokenizer(tokenizer, spec: dict[str, Any], keep: list[int]):
    """`tokenizer` over the ids in `keep`, as `AutoTokenizer.from_pretrained` gives it back from disk.

    The tokenizer's own class is kept when reloading through it reproduces every part of the pruned tokenizer.json
    (a family class rebuilds some parts from its arguments: e.g. XLMRobertaTokenizer fixes ``unk_id=3``). Otherwise
    the result is a `TokenizersBackend` (transformers' generic fast tokenizer), which reads tokenizer.json as it is,
    with the same special tokens. Raises ValueError if no class reproduces the pruned tokenizer.
    """
    new_spec = pruned_spec(spec, keep)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for name in _OLD_VOCAB_FILES:
            if os.path.exists(os.path.join(tmp, name)):
                os.remove(os.path.join(tmp, name))
        with open(os.path.join(tmp, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(new_spec, f, ensure_ascii=False)
        config_path = os.path.join(tmp, "tokenizer_config.json")
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
        if isinstance(config.get("unk_id"), int) and config["unk_id"] in keep:  # DeBERTa-v2 saves its unk id here
            config["unk_id"] = keep.index(config["unk_id"])
        # Settings changed after loading are not saved by save_pretrained; written here, they stay with the new one.
        config.update({key: getattr(tokenizer, key) for key in _SETTINGS if hasattr(tokenizer, key)})
        for attempt in ("own class", "TokenizersBackend"):
            if attempt == "TokenizersBackend":
                config["tokenizer_class"] = "TokenizersBackend"
            with open(config_path, "w", encoding="utf-8") as f:
                json.dump(config, f, ensure_ascii=False)
            new = AutoTokenizer.from_pretrained(tmp)
            differs = _differences(new, new_spec)
            if not differs and len(new) == len(keep):
                break
        else:
            raise invalid(
                "tokenizer",
                type(tokenizer).__name__,
                f"a tokenizer whose pruned tokenizer.json reloads as it is ({differs} differ)",
            )
    new.name_or_path = tokenizer.name_or_path  # not the temporary folder, which is gone
    return new
