"""Extractive QA: a question and its context cut into overlapping windows, and the best answer span back out of them.

The windowing and the span search follow transformers' `examples/pytorch/question-answering` (run_qa.py and
utils_qa.py), which follow BERT's SQuAD set-up (Devlin et al. 2019, arXiv:1810.04805, sections 4.2 and 4.3): a
question without an answer in a window (or at all, SQuAD 2.0) points at [CLS], and the null score of a question is
its lowest [CLS] start + end score over its windows.
"""

from __future__ import annotations

import numpy as np
from datasets import Dataset


def answer_token_span(
    offsets: list[tuple[int, int]],
    sequence_ids: list[int | None],
    context_id: int,
    start_char: int,
    end_char: int,
    cls_index: int = 0,
) -> tuple[int, int]:
    """(start, end) token positions of the answer characters [start_char, end_char) in one window.

    `offsets` are the window's character offsets into its sequence, `sequence_ids` say which sequence each token comes
    from (`context_id` for the context). When the answer is not entirely inside the window's part of the context,
    both positions are `cls_index`: the window is trained to point at [CLS] (no answer here).
    """
    context = [i for i, s in enumerate(sequence_ids) if s == context_id]
    if not context:
        return cls_index, cls_index
    first, last = context[0], context[-1]
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return cls_index, cls_index
    start = first
    while start <= last and offsets[start][0] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][1] >= end_char:
        end -= 1
    return start - 1, end + 1


def window_features(
    examples: Dataset, tokenizer, max_length: int, doc_stride: int, for_eval: bool = False, batch_size: int = 1000
) -> Dataset:
    """One row per window of max_length tokens ([CLS] question [SEP] context-part [SEP]), with answer positions.

    Long contexts overflow into windows that overlap by `doc_stride` tokens (`truncation="only_second"`, the question
    is never cut). Each window gets `start_positions` / `end_positions` of the first gold answer, or its [CLS] position
    when the answer is not inside it or the question has none (SQuAD 2.0). With `for_eval`, rows also keep
    `example_id` (the question's `id`), `cls_index` and `offset_mapping`, set to None outside the context so that no
    answer can be read from the question or the special tokens. Windows are padded on the right (`right_padded`), so
    the question comes first, as BERT-style QA models are trained.
    Raises ValueError for a slow tokenizer (windows need offsets and overflow), for doc_stride >= max_length and for
    a max_length beyond the tokenizer's model_max_length.
    """
    from ..checks import require
    from .tokenizer_checks import check_max_length, require_fast, right_padded

    require_fast(tokenizer, "QA windows need character offsets and overflowing tokens")
    require(doc_stride < max_length, "doc_stride", doc_stride, f"below max_length={max_length}")
    check_max_length(tokenizer, max_length)
    tokenizer = right_padded(tokenizer)
    pad_right = tokenizer.padding_side == "right"
    context_id = 1 if pad_right else 0

    def encode(batch):
        questions = [q.lstrip() for q in batch["question"]]  # leading spaces only waste window tokens
        pair = (questions, batch["context"]) if pad_right else (batch["context"], questions)
        enc = tokenizer(
            *pair,
            truncation="only_second" if pad_right else "only_first",
            max_length=max_length,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        sample = enc.pop("overflow_to_sample_mapping")
        offsets = enc.pop("offset_mapping")
        starts, ends, ids, kept, classes = [], [], [], [], []
        for i, window in enumerate(offsets):
            sequence_ids = enc.sequence_ids(i)
            input_ids = enc["input_ids"][i]
            cls = input_ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in input_ids else 0
            answers = batch["answers"][sample[i]]
            if answers["answer_start"]:
                start_char = answers["answer_start"][0]
                span = answer_token_span(
                    window, sequence_ids, context_id, start_char, start_char + len(answers["text"][0]), cls
                )
            else:  # no gold answer (SQuAD v2-style data): the window points at [CLS]
                span = (cls, cls)
            starts.append(span[0])
            ends.append(span[1])
            if for_eval:
                ids.append(batch["id"][sample[i]])
                classes.append(cls)
                kept.append([tuple(o) if s == context_id else None for o, s in zip(window, sequence_ids)])
        enc["start_positions"], enc["end_positions"] = starts, ends
        if for_eval:
            enc["example_id"], enc["cls_index"], enc["offset_mapping"] = ids, classes, kept
        return enc

    return examples.map(encode, batched=True, batch_size=batch_size, remove_columns=examples.column_names)


def best_spans(
    examples: Dataset,
    features: Dataset,
    start_logits: list[np.ndarray],
    end_logits: list[np.ndarray],
    n_best_size: int = 20,
    max_answer_length: int = 30,
    null_margins: bool = False,
) -> list[str] | tuple[list[str], list[float]]:
    """The predicted answer text of every example, in `examples` order (and, with `null_margins`, its null margin).

    For each window of an example, the `n_best_size` highest start and end logits are paired; a pair is valid when
    both tokens are in the context (their offset is not None), end >= start and the span has at most
    `max_answer_length` tokens. The valid pair with the highest start + end logit over all the example's windows wins,
    and its text is sliced from the context by character offsets. An example without a valid pair gets "".
    `features` are `window_features(..., for_eval=True)` rows; logits are per window, in `features` order, and may be
    longer than the window (Trainer pads them with -100 across batches): positions past the window are never chosen.

    With `null_margins`, returns (texts, margins): per example, null score - best span score (run_qa's
    `score_diff`). The null score is the lowest start + end logit at [CLS] (`cls_index`, 0 when the features do not
    say) over the example's windows; an example without a valid span has margin +inf. A SQuAD 2.0 model answers ""
    when the margin is above its null threshold (`QuestionAnswering` chooses it on the validation split).

    Raises ValueError when the logits and the windows do not pair up.
    """
    if len(start_logits) != len(features) or len(end_logits) != len(features):
        raise ValueError(
            f"start_logits/end_logits hold {len(start_logits)}/{len(end_logits)} windows; the features hold "
            f"{len(features)}: predict on the same features, in order"
        )
    windows: dict[str, list[int]] = {}
    for i, example_id in enumerate(features["example_id"]):
        windows.setdefault(example_id, []).append(i)
    offsets_of = features["offset_mapping"]
    cls_of = features["cls_index"] if "cls_index" in features.column_names else [0] * len(features)
    answers, margins = [], []
    for example_id, context in zip(examples["id"], examples["context"]):
        best, best_score, null_score = "", -np.inf, np.inf
        for i in windows.get(example_id, []):
            offsets = offsets_of[i]
            start, end = np.asarray(start_logits[i])[: len(offsets)], np.asarray(end_logits[i])[: len(offsets)]
            null_score = min(null_score, float(start[cls_of[i]] + end[cls_of[i]]))
            for s in np.argsort(start)[::-1][:n_best_size]:
                for e in np.argsort(end)[::-1][:n_best_size]:
                    if offsets[s] is None or offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                        continue
                    score = start[s] + end[e]
                    if score > best_score:
                        best, best_score = context[offsets[s][0] : offsets[e][1]], score
        answers.append(best)
        margins.append(float(null_score - best_score) if np.isfinite(best_score) else np.inf)
    return (answers, margins) if null_margins else answers
