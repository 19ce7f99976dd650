"""The tokenizer properties a task's preparation relies on: set right for BERT-style encoders, or refused with the fix.

- Pre-split words (token classification, `is_split_into_words=True`) must be tokenised as they are in running text.
  A byte-level BPE tokenizer saved with `add_prefix_space=False` (as roberta-base ships) reads every word as a
  sentence start (`Lopez` -> `L op ez`, not `ĠL op ez`); transformers 4 refused it, transformers 5 does it silently.
  `for_pre_split_words` returns a copy with the prefix space on (what run_ner does with `add_prefix_space=True`,
  transformers PR #12116), checked on a probe sentence.
- Word-to-token maps (`word_ids()`) and character offsets need a fast tokenizer (`require_fast`).
- Padding goes on the right (`right_padded`): BERT-style absolute positions count from the first token, and the
  scoring code reads logits by position.
- `max_length` must fit the tokenizer's `model_max_length` (`check_max_length`).
- The tokenizer must know the data's words (`check_known_words`): a model folder without tokenizer files gets a
  5-token tokenizer from transformers 5, which makes every word unknown.
"""

from __future__ import annotations

import copy
import json

from ..checks import invalid, require

PROBE = ["Maria", "Lopez", "flew", "to", "Boston"]  # pre-split vs running text: words 2..n must agree
UNSET_MAX_LENGTH = 10**6  # transformers sets model_max_length to ~1e30 when the checkpoint names none
MOST = 0.5  # a tokenizer that makes more than this share of the sampled words unknown is refused
SAMPLE_EXAMPLES, SAMPLE_WORDS = 200, 2000


def require_fast(tokenizer, why: str) -> None:
    """A fast (Rust `tokenizers`) tokenizer, or a ValueError naming `why` it is needed and the fix."""
    require(
        getattr(tokenizer, "is_fast", False),
        "tokenizer",
        type(tokenizer).__name__,
        f"a fast tokenizer ({why}): save the model's tokenizer with a tokenizer.json (AutoTokenizer.from_pretrained "
        "converts one when the `tokenizers` library is installed)",
    )


def _prefix_space_on(node, changed: list) -> None:
    """Turn the prefix space on in every ByteLevel / Metaspace / RobertaProcessing of a tokenizer.json subtree."""
    if isinstance(node, list):
        for item in node:
            _prefix_space_on(item, changed)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in ("ByteLevel", "RobertaProcessing") and node.get("add_prefix_space") is False:
            node["add_prefix_space"] = True
            changed.append(kind)
        if kind == "Metaspace" and node.get("prepend_scheme") in ("first", "never"):
            node["prepend_scheme"] = "always"
            changed.append(kind)
        for value in node.values():
            _prefix_space_on(value, changed)


def _splits_like_running_text(tokenizer) -> bool:
    """Words 2..n of PROBE get the same tokens pre-split as in the running text " ".join(PROBE)."""
    pre_split = tokenizer(PROBE, is_split_into_words=True, add_special_tokens=False)
    running = tokenizer(" ".join(PROBE), add_special_tokens=False)

    def by_word(encoding) -> list[list[int]]:
        words = [[] for _ in PROBE]
        for token, word in zip(encoding["input_ids"], encoding.word_ids()):
            if word is not None and word < len(PROBE):
                words[word].append(token)
        return words

    return by_word(pre_split)[1:] == by_word(running)[1:]


def for_pre_split_words(tokenizer):
    """`tokenizer`, or a copy of it with the prefix space on, that tokenises pre-split words as in running text.

    The tokenizer given is never changed (it is the one saved with the model). A tokenizer that cannot be made to
    agree on the probe sentence is refused, naming the fix (`add_prefix_space=True`).
    """
    require_fast(tokenizer, "token classification maps sub-tokens back to words with word_ids()")
    if _splits_like_running_text(tokenizer):
        return tokenizer
    fixed, changed = copy.deepcopy(tokenizer), []
    state = json.loads(fixed.backend_tokenizer.to_str())
    for part in ("pre_tokenizer", "post_processor"):
        _prefix_space_on(state.get(part), changed)
    if changed:
        from tokenizers import Tokenizer

        fixed._tokenizer = Tokenizer.from_str(json.dumps(state))
        fixed.add_prefix_space = True
    if not changed or not _splits_like_running_text(fixed):
        raise invalid(
            "tokenizer",
            getattr(tokenizer, "name_or_path", type(tokenizer).__name__),
            "a tokenizer that tokenises pre-split words as in running text (this one reads every word as a sentence "
            "start): load it with AutoTokenizer.from_pretrained(..., add_prefix_space=True) and save it beside the "
            "model",
        )
    return fixed


def right_padded(tokenizer):
    """`tokenizer`, or a copy padding on the right: BERT-style positions count from the first token, and the scoring
    code reads each example's logits from position 0."""
    if tokenizer is None or getattr(tokenizer, "padding_side", "right") == "right":
        return tokenizer
    fixed = copy.deepcopy(tokenizer)
    fixed.padding_side = "right"
    return fixed


def check_max_length(tokenizer, max_length: int) -> None:
    """`max_length` within the tokenizer's `model_max_length` (when the checkpoint sets one)."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and limit < UNSET_MAX_LENGTH:
        require(
            max_length <= limit,
            "max_length",
            max_length,
            f"at most {limit}, the tokenizer's model_max_length (the model has no position beyond it)",
        )


def check_known_words(tokenizer, words: list[str]) -> None:
    """Refuse a tokenizer that makes most of `words` unknown (only its unknown token, or no token at all).

    transformers 5 gives a model folder without tokenizer files a tokenizer of its 5 special tokens: every word is
    `[UNK]` (WordPiece) or nothing (byte-level BPE), and fine-tuning would start without a word of the data.
    """
    words = list(dict.fromkeys(w for w in words if w.strip()))[:SAMPLE_WORDS]
    if not words:
        return
    unk = tokenizer.unk_token_id
    encoded = tokenizer(words, add_special_tokens=False)["input_ids"]
    unknown = [w for w, ids in zip(words, encoded) if not ids or all(i == unk for i in ids)]
    share = len(unknown) / len(words)
    if share > MOST:
        raise invalid(
            "tokenizer",
            getattr(tokenizer, "name_or_path", type(tokenizer).__name__),
            f"a tokenizer that knows the data's words (it makes {share:.0%} of {len(words)} sampled words unknown, "
            f"e.g. {unknown[:3]}; its vocabulary has {len(tokenizer)} tokens): save the model's own tokenizer "
            "beside it (tokenizer.json or vocab.txt); a folder without tokenizer files gets an empty vocabulary",
        )


def sample_words(texts) -> list[str]:
    """Whitespace-separated words of texts (or of word lists), up to SAMPLE_WORDS of them."""
    words = []
    for text in texts:
        words.extend(text if isinstance(text, list) else str(text or "").split())
        if len(words) >= SAMPLE_WORDS:
            break
    return words[:SAMPLE_WORDS]
