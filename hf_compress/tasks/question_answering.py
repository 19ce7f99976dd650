"""Extractive question answering: answer spans of a context; EM and F1 by the packaged squad / squad_v2 metrics.

Which SQuAD applies is decided from the data when it is loaded, before training: when some question has no gold
answer (SQuAD 2.0), windows without an answer point at [CLS] (as everywhere), a question is answered "" when its null
margin (null score - best span score) is above a threshold chosen on the validation split (the one maximising F1
there; run_qa's 0.0 when the data has no validation split), and scores come from the squad_v2 metric, overall and
for the answerable (HasAns) and unanswerable (NoAns) questions apart. Otherwise (SQuAD v1.1) every question is
answered and scored by the squad metric.

Agreement with a reference model is the fraction of questions whose predicted answer equals the reference model's
after SQuAD normalisation (lower case, no punctuation or articles): the squad metric's exact match with the reference
model's answer as the gold one, so "the Eiffel Tower" and "Eiffel Tower" agree, as they score the same ("" and ""
agree: both say there is no answer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from datasets import Dataset, DatasetDict
from transformers import AutoModelForQuestionAnswering, DataCollatorWithPadding

from ..checks import invalid
from .qa_postprocessing import best_spans, window_features
from .tokenizer_checks import SAMPLE_EXAMPLES, check_known_words, right_padded, sample_words

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
RECORD_FILES = {".jsonl": "json", ".parquet": "parquet"}  # local files of Hub-schema records (.json is SQuAD's own)
SPAN_LABELS = 2  # a QA head's `num_labels`: one start and one end logit per token
DEFAULT_NULL_THRESHOLD = 0.0  # run_qa's null_score_diff_threshold, when there is no validation split to choose on
SQUAD_CARD = (("exact_match", "exact_match", "Exact Match (squad)"), ("f1", "f1", "F1 (squad)"))
SQUAD_V2_CARD = (("exact_match", "exact_match", "Exact Match (squad_v2)"), ("f1", "f1", "F1 (squad_v2)"))
# squad_v2's keys -> the report's (the same names as SQuAD v1.1's where they mean the same)
SQUAD_V2_KEYS = {
    "exact": "exact_match",
    "f1": "f1",
    "HasAns_exact": "HasAns_exact_match",
    "HasAns_f1": "HasAns_f1",
    "NoAns_exact": "NoAns_exact_match",
    "NoAns_f1": "NoAns_f1",
}


def has_unanswerable(raw: DatasetDict) -> bool:
    """Whether some question of some split has no gold answer (SQuAD 2.0 data)."""
    return any(not answers["text"] for ds in raw.values() for answers in ds["answers"])


@dataclass
class QAEvalData:
    """What the report scores: the questions (id, context, answers), their windows (`window_features`, eval) and the
    span search settings; for SQuAD 2.0 data (`unanswerable`), the split's name and the validation questions the null
    threshold is chosen on (None: on these questions when they are the validation split, else run_qa's 0.0)."""

    examples: Dataset
    features: Dataset
    n_best_size: int = 20
    max_answer_length: int = 30
    unanswerable: bool = False
    split: str | None = None
    validation: QAEvalData | None = None


class QAPredictions(list):
    """Predicted answer texts ("" = no answer), with the null threshold they were cut at (SQuAD 2.0)."""

    def __init__(self, texts, null_threshold: float | None = None):
        super().__init__(texts)
        self.null_threshold = null_threshold


class QuestionAnswering:
    """Extractive QA (`AutoModelForQuestionAnswering`), scored by SQuAD F1 (and exact match)."""

    name = "question-answering"
    auto_class = AutoModelForQuestionAnswering
    primary_metric = "f1"
    pipeline_tag = "question-answering"
    unanswerable: bool | None = None  # SQuAD 2.0 data: set by `load`; None until data is loaded

    @property
    def card_metrics(self) -> tuple:
        """(score key, model-index metric type, display name) of what the card states: squad's or squad_v2's."""
        return SQUAD_V2_CARD if self.unanswerable else SQUAD_CARD

    # ---- data ----

    def load(self, recipe) -> tuple[DatasetDict, None]:
        """SQuAD-format questions as a DatasetDict (`id`, `context`, `question`, `answers`); no label names.

        A local SQuAD v1.1 or 2.0 JSON file or folder (or `task-data://squad-v1.1`) goes through `load_squad`; a local
        JSONL or Parquet file of records in the Hub's `squad` / `squad_v2` schema, or a Hub id, through
        `load_dataset`. Decides which SQuAD applies (`unanswerable`): 2.0 when some question has no gold answer.
        """
        from ..data import load_squad
        from .common import read_task_data

        raw = read_task_data(recipe.dataset_name, RECORD_FILES, load_squad)
        for split, ds in raw.items():
            missing = [c for c in ("id", "context", "question", "answers") if c not in ds.column_names]
            if missing:
                raise invalid(
                    "dataset_name",
                    recipe.dataset_name,
                    f"SQuAD-format data with id, context, question and answers columns (split {split!r} lacks "
                    f"{missing})",
                )
        self.unanswerable = has_unanswerable(raw)
        return raw, None

    def _unanswerable(self, raw: DatasetDict) -> bool:
        """SQuAD 2.0 as `load` decided it, or from `raw` when this task loaded no data."""
        return has_unanswerable(raw) if self.unanswerable is None else self.unanswerable

    def num_labels(self, raw: DatasetDict, names: None) -> int:
        """Two: a start and an end score per token."""
        return SPAN_LABELS

    def label_kwargs(self, names: None, num_labels: int) -> dict:
        """`from_pretrained` keywords of a new QA head (2 labels, no names)."""
        return {"num_labels": SPAN_LABELS}

    def label_kwargs_from(self, config) -> dict:
        """`from_pretrained` keywords of a student head shaped like the teacher's."""
        return {"num_labels": SPAN_LABELS}

    def check_model_labels(self, config, names: None, num_labels: int, field: str) -> None:
        """A QA head scores a start and an end per token: num_labels must be 2."""
        if config.num_labels != SPAN_LABELS:
            raise invalid(field, config.name_or_path, f"a QA model with num_labels=2 (it has {config.num_labels})")

    def check_model_for_data(self, model, model_dir: str, data: QAEvalData) -> None:
        """The report's check: an extractive QA model."""
        from .common import check_head

        check_head(model, model_dir, self)

    def prepare_splits(self, raw: DatasetDict, tokenizer, recipe) -> DatasetDict:
        """Every split as training windows with answer positions; evaluation splits cut to max_eval_samples questions.

        The train split is cut first to the questions training can use: with max_train_samples set, a seeded
        (split_seed) sample of max(max_train_samples, teacher_max_train_samples) questions, whose windows run_recipe
        then samples max_train_samples of (the *_max_train_samples fields count windows, as they count features in
        every task). Tokenising all 87,599 SQuAD questions would take minutes for a run that reads a few thousand.
        Raises ValueError, before anything is tokenised, for a tokenizer that makes most of the data's words unknown.
        """
        first = raw["train"] if "train" in raw else next(iter(raw.values()))
        sample = first.select(range(min(SAMPLE_EXAMPLES, len(first))))
        check_known_words(tokenizer, sample_words([*sample["question"], *sample["context"]]))
        out = {}
        for split, ds in raw.items():
            if split == "train":
                ds = self._train_pool(ds, recipe)
            else:
                ds = self._cut(ds, recipe)
            out[split] = window_features(ds, tokenizer, recipe.max_length, recipe.doc_stride)
        return DatasetDict(out)

    @staticmethod
    def _train_pool(ds: Dataset, recipe) -> Dataset:
        wanted = [recipe.max_train_samples]
        if recipe.finetune_teacher:
            wanted.append(recipe.teacher_max_train_samples)
        if any(n is None for n in wanted) or max(wanted) >= len(ds):
            return ds
        return ds.shuffle(seed=recipe.split_seed).select(range(max(wanted)))

    @staticmethod
    def _cut(ds: Dataset, recipe) -> Dataset:
        return ds.select(range(min(recipe.max_eval_samples, len(ds)))) if recipe.max_eval_samples else ds

    def prepare_eval(self, raw: DatasetDict, tokenizer, recipe, split: str | None = None) -> QAEvalData:
        """The evaluation questions (cut to max_eval_samples) and their windows with ids and context offsets.

        SQuAD 2.0 data also carries the validation questions (cut the same way), on which `predict` chooses each
        model's null threshold, unless the questions scored are the validation split themselves.
        """
        split = split or recipe.eval_split
        examples = self._cut(raw[split], recipe)
        features = window_features(examples, tokenizer, recipe.max_length, recipe.doc_stride, for_eval=True)
        unanswerable = self._unanswerable(raw)
        data = QAEvalData(examples, features, recipe.n_best_size, recipe.max_answer_length, unanswerable, split)
        if data.unanswerable and split != "validation" and "validation" in raw:
            data.validation = self.prepare_eval(raw, tokenizer, recipe, split="validation")
        return data

    def collator(self, tokenizer):
        """Pads each batch of windows (on the right) to its longest; `start_positions`/`end_positions` are one int."""
        return DataCollatorWithPadding(right_padded(tokenizer))

    def trainer_metrics(self, raw_validation, tokenizer, recipe):
        """`compute_metrics` for Trainer's evaluation of the validation windows that `prepare_splits` made.

        Trainer passes EvalPrediction((start_logits, end_logits), ...) over those windows, in order; the same windows
        are rebuilt here with their question ids and offsets (same function, same cut, so the same rows), then
        post-processed and scored as `score` does.
        """
        if raw_validation is None:
            return None
        data = self.prepare_eval(DatasetDict(validation=raw_validation), tokenizer, recipe, split="validation")

        def compute_metrics(eval_pred) -> dict[str, float]:
            start_logits, end_logits = eval_pred.predictions[:2]
            texts, margins = best_spans(
                data.examples,
                data.features,
                start_logits,
                end_logits,
                data.n_best_size,
                data.max_answer_length,
                null_margins=True,
            )
            if data.unanswerable:  # scored on the validation split: the threshold is chosen on it
                texts = cut_at(texts, margins, null_threshold(texts, margins, data))
            return self.score(texts, data)

        return compute_metrics

    # ---- scoring ----

    @torch.inference_mode()
    def predict(self, model, data: QAEvalData, tokenizer, batch_size: int = 64) -> list[str]:
        """The predicted answer text of every question, in order (best span over its windows, `best_spans`).

        SQuAD 2.0 data: "" for a question whose null margin is above the model's null threshold, chosen on the
        validation questions (`QAPredictions.null_threshold`).
        """
        texts, margins = self._search(model, data, tokenizer, batch_size)
        if not data.unanswerable:
            return texts
        if data.validation is not None:
            threshold = null_threshold(*self._search(model, data.validation, tokenizer, batch_size), data.validation)
        elif data.split == "validation":
            threshold = null_threshold(texts, margins, data)
        else:
            threshold = DEFAULT_NULL_THRESHOLD
        return cut_at(texts, margins, threshold)

    def _search(self, model, data: QAEvalData, tokenizer, batch_size: int) -> tuple[list[str], list[float]]:
        """Best span text and null margin of every question of `data` (`best_spans` over the model's logits)."""
        model.eval()
        collator = DataCollatorWithPadding(right_padded(tokenizer))  # logits are read from position 0 on
        features = data.features
        keys = [k for k in INPUT_KEYS if k in features.column_names]
        device = next(model.parameters()).device
        starts, ends = [], []
        for first in range(0, len(features), batch_size):
            rows = features[first : first + batch_size]
            lengths = [len(ids) for ids in rows["input_ids"]]
            batch = collator([{k: rows[k][i] for k in keys} for i in range(len(lengths))])
            out = model(**{k: v.to(device) for k, v in batch.items()})
            for i, n in enumerate(lengths):
                starts.append(out.start_logits[i, :n].float().cpu().numpy())
                ends.append(out.end_logits[i, :n].float().cpu().numpy())
        return best_spans(
            data.examples, features, starts, ends, data.n_best_size, data.max_answer_length, null_margins=True
        )

    def score(self, predictions: list[str], data: QAEvalData) -> dict[str, float]:
        """Exact match and F1, in percent: SQuAD v1.1's (squad metric), or SQuAD 2.0's overall, HasAns and NoAns
        (squad_v2 metric) with the null threshold the predictions were cut at."""
        from ..metrics import load_metric

        ids = list(data.examples["id"])
        references = [{"id": i, "answers": a} for i, a in zip(ids, data.examples["answers"])]
        if not data.unanswerable:
            return load_metric("squad").compute(
                predictions=[{"id": i, "prediction_text": t} for i, t in zip(ids, predictions)], references=references
            )
        result = load_metric("squad_v2").compute(
            predictions=[
                {"id": i, "prediction_text": t, "no_answer_probability": 0.0} for i, t in zip(ids, predictions)
            ],
            references=references,
        )
        scores = {ours: result[theirs] for theirs, ours in SQUAD_V2_KEYS.items() if theirs in result}
        if getattr(predictions, "null_threshold", None) is not None:
            scores["null_threshold"] = predictions.null_threshold
        return scores

    def agreement(self, predictions: list[str], reference: list[str]) -> float:
        """Fraction of questions whose answer equals the reference model's, SQuAD-normalised (squad exact match)."""
        from ..metrics import load_metric

        if not predictions:
            return 0.0
        ids = [str(i) for i in range(len(predictions))]
        result = load_metric("squad").compute(
            predictions=[{"id": i, "prediction_text": t} for i, t in zip(ids, predictions)],
            references=[{"id": i, "answers": {"text": [r], "answer_start": [0]}} for i, r in zip(ids, reference)],
        )
        return result["exact_match"] / 100

    def num_examples(self, data) -> int:
        """Questions (not windows) in the evaluation data."""
        return len(data.examples) if isinstance(data, QAEvalData) else len(data)


def cut_at(texts: list[str], margins: list[float], threshold: float) -> QAPredictions:
    """The texts, with "" (no answer) where the null margin is above `threshold`."""
    return QAPredictions([t if m <= threshold else "" for t, m in zip(texts, margins)], threshold)


def null_threshold(texts: list[str], margins: list[float], data: QAEvalData) -> float:
    """The null threshold maximising SQuAD 2.0 F1 on `data`'s questions (squad_v2's best_f1_thresh): answer "" when the
    margin is above it. When answering no question is best, a value just below the lowest margin (finite, for JSON)."""
    from ..metrics import load_metric

    result = load_metric("squad_v2").compute(
        predictions=[
            {"id": i, "prediction_text": t, "no_answer_probability": m}
            for i, t, m in zip(data.examples["id"], texts, margins)
        ],
        references=[{"id": i, "answers": a} for i, a in zip(data.examples["id"], data.examples["answers"])],
        no_answer_threshold=math.inf,
    )
    threshold = result["best_f1_thresh"]
    return threshold if math.isfinite(threshold) else math.nextafter(min(margins, default=0.0), -math.inf)
