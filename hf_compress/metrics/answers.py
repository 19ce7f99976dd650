"""SQuAD answer normalisation and scores, shared by the squad (v1.1) and squad_v2 metric modules: one rule, as both
official evaluation scripts (evaluate-v1.1.py, evaluate-v2.0.py) have it, and the one place they differ (F1 of an
empty answer) as an argument."""

from __future__ import annotations

import re
import string
from collections import Counter

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """Lower-case, drop ASCII punctuation, drop the articles a/an/the, collapse whitespace (the official order)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal (both empty included), else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str, empty_matches_empty: bool) -> float:
    """Token-overlap F1 in [0, 1] of the normalised answers (a multiset intersection, as in the official scripts).

    An empty answer on either side: v1.1 (`empty_matches_empty=False`) scores 0 even when both are empty; v2.0 scores
    1 when both are empty and 0 when only one is."""
    prediction_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if empty_matches_empty and (not prediction_tokens or not gold_tokens):
        return float(prediction_tokens == gold_tokens)
    shared = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(prediction_tokens), shared / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)
