"""Extractive question answering (SQuAD v1.1): answer spans of a context; EM and F1 by the packaged squad metric.

Agreement with a reference model is the fraction of questions whose predicted answer equals the reference model's
after SQuAD normalisation (lower case, no punctuation or articles): the squad metric's exact match with the reference
model's answer as the gold one, so "the Eiffel Tower" and "Eiffel Tower" agree, as they score the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from datasets import Dataset, DatasetDict
from transformers import AutoModelForQuestionAnswering, DataCollatorWithPadding

from ..checks import invalid
from .qa_postprocessing import best_spans, window_features

INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
RECORD_FILES = {".jsonl": "json", ".parquet": "parquet"}  # local files of Hub-schema records (.json is SQuAD's own)
SPAN_LABELS = 2  # a QA head's `num_labels`: one start and one end logit per token


@dataclass
class QAEvalData:
    """What the report scores: the questions (id, context, answers), their windows (`window_features`, eval) and the
    span search settings."""

    examples: Dataset
    features: Dataset
    n_best_size: int = 20
    max_answer_length: int = 30


class QuestionAnswering:
    """Extractive QA (`AutoModelForQuestionAnswering`), scored by SQuAD F1 (and exact match)."""

    name = "question-answering"
    auto_class = AutoModelForQuestionAnswering
    primary_metric = "f1"
    pipeline_tag = "question-answering"
    card_metrics = (("exact_match", "exact_match", "Exact Match (squad)"), ("f1", "f1", "F1 (squad)"))

    # ---- data ----

    def load(self, recipe) -> tuple[DatasetDict, None]:
        """SQuAD-format questions as a DatasetDict (`id`, `context`, `question`, `answers`); no label names.

        A local SQuAD v1.1 JSON file or folder (or `task-data://squad-v1.1`) goes through `load_squad`; a local JSONL
        or Parquet file of records in the Hub's `squad` schema, or a Hub id, through `load_dataset`.
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
        return raw, None

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
        """
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
        """The evaluation questions (cut to max_eval_samples) and their windows with ids and context offsets."""
        examples = self._cut(raw[split or recipe.eval_split], recipe)
        features = window_features(examples, tokenizer, recipe.max_length, recipe.doc_stride, for_eval=True)
        return QAEvalData(examples, features, recipe.n_best_size, recipe.max_answer_length)

    def collator(self, tokenizer):
        """Pads each batch of windows to its longest; `start_positions`/`end_positions` are one int each."""
        return DataCollatorWithPadding(tokenizer)

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
            texts = best_spans(
                data.examples, data.features, start_logits, end_logits, data.n_best_size, data.max_answer_length
            )
            return self.score(texts, data)

        return compute_metrics

    # ---- scoring ----

    @torch.inference_mode()
    def predict(self, model, data: QAEvalData, tokenizer, batch_size: int = 64) -> list[str]:
        """The predicted answer text of every question, in order (best span over its windows, `best_spans`)."""
        model.eval()
        collator = DataCollatorWithPadding(tokenizer)
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
        return best_spans(data.examples, features, starts, ends, data.n_best_size, data.max_answer_length)

    def score(self, predictions: list[str], data: QAEvalData) -> dict[str, float]:
        """SQuAD v1.1 exact match and F1, in percent, by the packaged squad metric."""
        from ..metrics import load_metric

        ids = list(data.examples["id"])
        return load_metric("squad").compute(
            predictions=[{"id": i, "prediction_text": t} for i, t in zip(ids, predictions)],
            references=[{"id": i, "answers": a} for i, a in zip(ids, data.examples["answers"])],
        )

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
