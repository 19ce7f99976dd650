"""Text (sequence) classification: one label per text; accuracy and macro-F1; agreement = same predicted class."""

from __future__ import annotations

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from ..checks import invalid
from .tokenizer_checks import SAMPLE_EXAMPLES, check_known_words, check_max_length, right_padded, sample_words


class TextClassification:
    """Sequence classification (`AutoModelForSequenceClassification`), scored by accuracy."""

    name = "text-classification"
    auto_class = AutoModelForSequenceClassification
    primary_metric = "accuracy"
    pipeline_tag = "text-classification"
    label_column = "label"
    card_metrics = (("accuracy", "accuracy", "Accuracy"),)  # (score key, model-index metric type, display name)

    # ---- data ----

    def load(self, recipe) -> tuple[DatasetDict, list[str] | None]:
        """The recipe's dataset as a DatasetDict with a `label` column (class ids) and the class names, if any."""
        from ..data import load_text_classification

        raw = load_text_classification(recipe.dataset_name, recipe.text_column, recipe.label_column)
        return self.encode_labels(raw, recipe.label_column)

    def check_model_labels(self, config, names: list[str] | None, num_labels: int, field: str) -> None:
        """A fine-tuned model must predict the data's classes: same count, same names when both are named."""
        if config.num_labels != num_labels:
            raise invalid(
                field,
                config.name_or_path,
                f"a model with {num_labels} labels, as the data has (it has "
                f"{config.num_labels}); or finetune_teacher: true to give it a new head",
            )
        named = {int(k): v for k, v in (config.id2label or {}).items() if not str(v).startswith("LABEL_")}
        if names and named and named != dict(enumerate(names)):
            raise invalid(
                field,
                config.name_or_path,
                f"a model whose id2label is {dict(enumerate(names))}, as the data's labels (it has {named})",
            )

    def check_model_for_data(self, model, model_dir: str, data: Dataset) -> None:
        """The report's check: a sequence classifier whose labels cover the data's."""
        from .common import check_head

        check_head(model, model_dir, self)
        top = max(data["label"]) if len(data) else 0
        if top >= model.config.num_labels:
            raise invalid(
                "MODEL_DIR",
                model_dir,
                f"a model with at least {top + 1} labels for --dataset (it has {model.config.num_labels})",
            )

    def label_kwargs(self, names: list[str] | None, num_labels: int) -> dict:
        """from_pretrained keyword arguments giving a new head the data's classes."""
        kwargs = {"num_labels": num_labels}
        if names:
            kwargs.update(id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
        return kwargs

    def label_kwargs_from(self, config) -> dict:
        """from_pretrained keyword arguments labelling a new head like `config`'s."""
        return {"num_labels": config.num_labels, "id2label": config.id2label, "label2id": config.label2id}

    def prepare_splits(self, raw: DatasetDict, tokenizer, recipe) -> DatasetDict:
        """Every split tokenised; the evaluation splits cut to max_eval_samples.

        Raises ValueError, before anything is tokenised, for a tokenizer that makes most of the data's words unknown.
        """
        first = raw["train"] if "train" in raw else next(iter(raw.values()))
        texts = first.select(range(min(SAMPLE_EXAMPLES, len(first))))[recipe.text_column]
        check_known_words(tokenizer, sample_words(texts))
        out = {}
        for split, ds in raw.items():
            if split != "train" and recipe.max_eval_samples:
                ds = ds.select(range(min(recipe.max_eval_samples, len(ds))))
            out[split] = self.prepare(ds, tokenizer, recipe.text_column, recipe.max_length)
        return DatasetDict(out)

    def prepare_eval(self, raw: DatasetDict, tokenizer, recipe, split: str | None = None) -> Dataset:
        """The one evaluation split, prepared with `tokenizer` (the report calls it once per tokenizer)."""
        ds = raw[split or recipe.eval_split]
        if recipe.max_eval_samples:
            ds = ds.select(range(min(recipe.max_eval_samples, len(ds))))
        return self.prepare(ds, tokenizer, recipe.text_column, recipe.max_length)

    def trainer_metrics(self, raw_validation, tokenizer, recipe):
        """`compute_metrics` for Trainer's evaluation: accuracy and macro-F1 from (logits, labels)."""
        from ..metrics import classification_metrics

        return classification_metrics

    def encode_labels(self, raw: DatasetDict, label_column: str) -> tuple[DatasetDict, list[str] | None]:
        """Rename the label column to `label`; string labels become a ClassLabel (sorted names). Returns the names."""
        if label_column != "label":
            raw = raw.rename_column(label_column, "label")
        split = next(iter(raw.values()))
        feature = split.features["label"]
        if isinstance(feature, ClassLabel):
            return raw, list(feature.names)
        values = [v for ds in raw.values() for v in ds["label"]]
        if any(isinstance(v, str) for v in values):
            if not all(isinstance(v, str) for v in values):
                raise invalid(label_column, "<mixed>", "one kind of label: all class names or all class ids")
            names = sorted(set(values))
            raw = raw.cast_column("label", ClassLabel(names=names))
            return raw, names
        if any(v is None or isinstance(v, float) and not float(v).is_integer() for v in values):
            raise invalid(label_column, "<non-integer labels>", "class ids 0..N-1 or class names")
        return raw, None

    def num_labels(self, raw: DatasetDict, names: list[str] | None) -> int:
        """How many classes the data has (names, or the largest class id + 1)."""
        if names is not None:
            return len(names)
        return int(max(max(ds["label"]) for ds in raw.values() if len(ds))) + 1

    def prepare(self, dataset: Dataset, tokenizer, text_column: str, max_length: int) -> Dataset:
        """Tokenise the text column (no padding: the collator pads per batch); keep `label`.

        Raises ValueError for a max_length beyond the tokenizer's model_max_length.
        """
        from ..data import tokenize

        check_max_length(tokenizer, max_length)
        return tokenize(dataset, tokenizer, text_column, max_length)

    def collator(self, tokenizer):
        """Pads each batch to its longest example, on the right (no padding is stored in the prepared data)."""
        return DataCollatorWithPadding(right_padded(tokenizer))

    # ---- scoring ----

    @torch.inference_mode()
    def predict(self, model, data: Dataset, tokenizer, batch_size: int = 128) -> np.ndarray:
        """Predicted class per example, in dataset order (padded on the right: BERT positions count from the left)."""
        from ..evaluation.measure import predict

        return predict(model, data, right_padded(tokenizer), batch_size).argmax(-1)

    def score(self, predictions: np.ndarray, data: Dataset) -> dict[str, float]:
        """Accuracy and macro-F1 against the labels, with the packaged evaluate modules."""
        from ..metrics import load_metric

        labels = np.asarray(data["label"])
        return {
            "accuracy": load_metric("accuracy").compute(predictions=predictions, references=labels)["accuracy"],
            "macro_f1": load_metric("macro_f1").compute(predictions=predictions, references=labels)["macro_f1"],
        }

    def agreement(self, predictions: np.ndarray, reference: np.ndarray) -> float:
        """Fraction of examples with the reference's predicted class (packaged `agreement` module)."""
        from ..metrics import load_metric

        return load_metric("agreement").compute(predictions=predictions, references=reference)["agreement"]

    def num_examples(self, data: Dataset) -> int:
        """How many examples the prepared evaluation data holds."""
        return len(data)
