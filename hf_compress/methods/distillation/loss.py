"""The distillation loss of every head: which logits a head scores, which positions carry a loss, what an item is.

Three head kinds cover the encoders' tasks:
- "sequence" (text classification, multiple choice): logits (batch, classes); one item per example.
- "token" (token classification): logits (batch, tokens, classes); one item per labelled token (label != -100), or per
  real token when the data has no labels; padding and sub-word positions labelled -100 carry no loss.
Transfer text carries UNLABELLED (-1) where a gold label would be: KD counts it as an item, CE skips it.
- "span" (extractive QA): start and end logits (batch, tokens); one item per example. KD is T²·KL on the start and on
  the end distribution over the real (unpadded) positions, averaged; CE is the mean of the start and end
  cross-entropies, as transformers' QA heads compute it.
- "embedding" (a base model, sentence embeddings): the pooled last hidden state (batch, hidden); one item per example;
  the terms are `losses.embedding_terms` (no labels, no temperature).
Every term is a sum over items, divided by the caller, so gradient accumulation and padding do not change it.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from .losses import ce_loss, embedding_terms, kd_loss

# The label of an item that carries no gold label but is distilled (transfer text): the teacher's soft targets train
# on it, the cross-entropy does not. datasets' ClassLabel uses -1 for "no label" too; -100 stays "no item at all"
# (special tokens, later sub-words, padding).
UNLABELLED = -1
SPAN_KEYS = ("start_logits", "end_logits")
SPAN_LABELS = ("start_positions", "end_positions")


def head_kind(model) -> str:
    """'span', 'token', 'sequence' or 'embedding' (a base model: its pooled last hidden state is the output)."""
    name = type(model).__name__
    if name.endswith("ForQuestionAnswering"):
        return "span"
    if name.endswith("ForTokenClassification"):
        return "token"
    if getattr(model, "base_model", None) is model:
        return "embedding"
    return "sequence"


def head_logits(outputs) -> dict[str, torch.Tensor]:
    """The logits a head is scored on: {'logits': ...} or {'start_logits': ..., 'end_logits': ...}."""
    if getattr(outputs, "start_logits", None) is not None:
        return {key: getattr(outputs, key) for key in SPAN_KEYS}
    logits = getattr(outputs, "logits", None)
    if logits is None:
        raise ValueError(
            f"the model returned {type(outputs).__name__} without logits; distillation needs a task head "
            "(sequence or token classification, question answering)"
        )
    return {"logits": logits}


def unlabel(batch: dict) -> dict:
    """A `datasets.map(batched=True)` function: every label of the batch's examples becomes UNLABELLED (token
    labels: only where an item is, -100 stays)."""
    labels = batch["labels"] if "labels" in batch else batch["label"]
    key = "labels" if "labels" in batch else "label"
    if labels and isinstance(labels[0], list):
        return {key: [[UNLABELLED if y != -100 else y for y in row] for row in labels]}
    return {key: [UNLABELLED] * len(labels)}


def pop_labels(inputs: dict) -> dict[str, torch.Tensor]:
    """Remove and return the hard labels of any head: `labels`, or QA's start/end positions."""
    return {k: inputs.pop(k) for k in ("labels", *SPAN_LABELS) if k in inputs}


def logit_terms(
    kind: str,
    student: dict[str, torch.Tensor],
    teacher: dict[str, torch.Tensor],
    labels: dict[str, torch.Tensor],
    attention_mask: torch.Tensor | None,
    temperature: float,
    want_kd: bool,
    want_ce: bool,
    embedding: tuple[str, ...] = (),
) -> tuple[dict[str, torch.Tensor], int]:
    """The KD and CE sums of one batch for a head kind (the `embedding` terms for an embedding model), and the number
    of items they are summed over."""
    terms: dict[str, torch.Tensor] = {}
    if kind == "embedding":
        return embedding_terms(student["embedding"], teacher["embedding"], embedding), student["embedding"].shape[0]
    if kind == "span":
        mask = torch.ones_like(student["start_logits"], dtype=torch.bool) if attention_mask is None else attention_mask
        mask = mask.bool()
        if want_kd:
            terms["kd_loss"] = sum(kd_loss(student[k], teacher[k], temperature, mask) for k in SPAN_KEYS) / 2
        if want_ce and all(k in labels for k in SPAN_LABELS):
            length = student["start_logits"].shape[-1]
            gold = [labels[k].clamp(-100, length).masked_fill(labels[k] >= length, -100) for k in SPAN_LABELS]
            terms["ce_loss"] = sum(ce_loss(student[k], y, mask) for k, y in zip(SPAN_KEYS, gold)) / 2
        return terms, student["start_logits"].shape[0]
    s, t = student["logits"], teacher["logits"]
    y = labels.get("labels")
    if kind == "token" or s.dim() == 3:
        if y is not None:
            rows = y != -100
        elif attention_mask is not None:
            rows = attention_mask.bool()
        else:
            rows = torch.ones(s.shape[:2], dtype=torch.bool, device=s.device)
        s, t = s[rows], t[rows]
        y = y[rows] if y is not None else None
    if want_kd:
        terms["kd_loss"] = kd_loss(s, t, temperature)
    if want_ce and y is not None:
        terms["ce_loss"] = ce_loss(s, y.masked_fill(y == UNLABELLED, -100))  # transfer text: no gold label
    return terms, s.shape[0]


def count_items(batch: dict, kind: str) -> int:
    """Items of a batch without `labels` (Trainer counts labelled ones itself): examples, or real tokens."""
    if kind == "token" and "attention_mask" in batch:
        return int(batch["attention_mask"].sum())
    return int(batch["input_ids"].shape[0])


class LossTermLog:
    """Running loss terms, logged so that they recombine to the loss Trainer logs.

    Training: each micro-batch adds what it added to the loss (its sum / the step's item count, times the DDP scale),
    so a term's log is its mean per optimizer step, as Trainer's `loss` is: gradient accumulation does not change it.
    Evaluation: sums and item counts over the whole evaluation, so each term is its mean per item.
    """

    def __init__(self):
        self.train: dict[str, float] = defaultdict(float)
        self.rates: dict[str, list[float]] = defaultdict(list)
        self.eval_sums: dict[str, float] = defaultdict(float)
        self.eval_items = 0

    def add_train(self, name: str, value: float) -> None:
        """Add one micro-batch's contribution to the loss (its sum / the step's items, times the DDP scale)."""
        self.train[name] += value

    def add_eval(self, terms: dict[str, torch.Tensor], items: int) -> None:
        """Add one evaluation batch's term sums and its item count."""
        for name, value in terms.items():
            self.eval_sums[name] += float(value.detach())
        self.eval_items += items

    def pop_train(self, steps: int, reduce) -> dict[str, float]:
        """The train terms since the last log, per optimizer step; `reduce` averages a tensor over processes."""
        names = sorted(self.train)
        out = {}
        if names and steps > 0:
            values = reduce(torch.tensor([self.train[n] for n in names], dtype=torch.float64))
            out = {n: float(v) / steps for n, v in zip(names, values)}
        out.update({n: sum(v) / len(v) for n, v in self.rates.items() if v})
        self.train.clear()
        self.rates.clear()
        return out

    def eval_means(self) -> dict[str, float]:
        """The evaluation terms accumulated so far, per item (this process only)."""
        return {n: v / max(self.eval_items, 1) for n, v in self.eval_sums.items()}

    def pop_eval(self, reduce_sum) -> dict[str, float]:
        """The evaluation terms per item; `reduce_sum` sums a tensor over processes."""
        names = sorted(self.eval_sums)
        out = {}
        if names:
            totals = reduce_sum(
                torch.tensor([self.eval_sums[n] for n in names] + [self.eval_items], dtype=torch.float64)
            )
            items = max(float(totals[-1]), 1.0)
            out = {n: float(v) / items for n, v in zip(names, totals[:-1])}
        self.eval_sums.clear()
        self.eval_items = 0
        return out
