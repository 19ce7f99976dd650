"""Token classification (NER): one IOB tag per word; entity-level P/R/F1 by seqeval; agreement = same tag per word.

Words are tokenised as given (`is_split_into_words=True`) and each word is scored once, by its first sub-token, as in
transformers' run_ner and the BERT paper's NER set-up (Devlin et al. 2019, arXiv:1810.04805, section 5.3): the first
sub-token of a word carries the word's label, the other sub-tokens and the special tokens carry -100 (no loss).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Sequence
from transformers import AutoModelForTokenClassification, DataCollatorForTokenClassification, DataCollatorWithPadding

from ..checks import invalid, require
from .text_classification import TextClassification
from .tokenizer_checks import (
    SAMPLE_EXAMPLES,
    check_known_words,
    check_max_length,
    for_pre_split_words,
    right_padded,
    sample_words,
)

IGNORE = -100  # the label of positions that carry no loss (transformers' CrossEntropyLoss ignore_index)
NO_WORD = -1  # `word_ids` of special tokens, stored as int in Arrow (None cannot share a column with ints)
TOKENS, TAGS = "tokens", "ner_tags"  # the column names inside the task (the Hub's conll2003 names)
INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
RECORD_FILES = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}  # local files of records, not CoNLL columns


def align_labels(word_ids: list[int | None], tags: list[int]) -> list[int]:
    """Token labels for one tokenised sentence: the first sub-token of word w gets tags[w]; the rest get -100.

    `word_ids` is what a fast tokenizer's `BatchEncoding.word_ids(i)` returns (None for special tokens). A word cut
    off by truncation has no token and so no label.
    """
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE if word is None or word == previous else tags[word])
        if word is not None:
            previous = word
    return labels


def word_predictions(token_predictions, word_ids: list[int], num_words: int, missing: int) -> list[int]:
    """Word-level predictions from token-level ones: each word takes its first sub-token's prediction.

    Words without a token (cut off by `max_length`, or words the tokenizer drops entirely) get `missing`, so the
    references keep every entity and such words count as missed, not as absent.
    """
    words = [missing] * num_words
    seen = set()
    for position, word in enumerate(word_ids):
        if word != NO_WORD and word not in seen and position < len(token_predictions):
            words[word] = int(token_predictions[position])
            seen.add(word)
    return words


@dataclass
class NerEvalData:
    """What the report scores: tokenised sentences with their `word_ids`, and the word-level tag references."""

    features: Dataset  # input ids per sentence (no padding) and `word_ids` (-1 for special tokens)
    tags: list[list[int]]  # reference tag ids per word
    names: list[str]  # tag names, by id


class TokenClassification(TextClassification):
    """Token classification (`AutoModelForTokenClassification`), scored by entity-level F1 (seqeval)."""

    name = "token-classification"
    auto_class = AutoModelForTokenClassification
    primary_metric = "f1"
    pipeline_tag = "token-classification"
    label_column = TAGS
    card_metrics = (("f1", "f1", "Entity F1 (seqeval)"),)  # (score key, model-index metric type, display name)

    # ---- data ----

    def load(self, recipe) -> tuple[DatasetDict, list[str]]:
        """The recipe's data as a DatasetDict with `tokens` (word lists) and `ner_tags` (Sequence(ClassLabel)).

        A local CoNLL file or folder (or `task-data://conll2003-en`) goes through `load_conll`, a local JSON(L) or
        Parquet file of word and tag lists through `load_dataset`, as does anything else (a Hub id). The recipe's
        defaults `text_column: text` and `label_column: label` read as `tokens` and `ner_tags` when the data has no
        such column (the Hub's conll2003 names).
        """

        from ..data import load_conll
        from .common import read_task_data

        raw = read_task_data(recipe.dataset_name, RECORD_FILES, load_conll)
        columns = next(iter(raw.values())).column_names
        words = TOKENS if recipe.text_column == "text" and "text" not in columns else recipe.text_column
        tags = TAGS if recipe.label_column == "label" and "label" not in columns else recipe.label_column
        for split, ds in raw.items():
            for field, column, holds in (("text_column", words, "word lists"), ("label_column", tags, "tag lists")):
                require(column in ds.column_names, field, column, f"a {holds} column of {split!r}: {ds.column_names}")
        raw = raw.select_columns([words, tags])
        if words != TOKENS:
            raw = raw.rename_column(words, TOKENS)
        if tags != TAGS:
            raw = raw.rename_column(tags, TAGS)
        return self.encode_tags(raw, tags)

    def encode_tags(self, raw: DatasetDict, column: str) -> tuple[DatasetDict, list[str]]:
        """Tag names from the `Sequence(ClassLabel)` feature; string tags become one (CoNLL-2003 order when they fit).

        Integer tags without names are refused: entity scores need the IOB names.
        """
        from ..data import conll_label_names

        feature = next(iter(raw.values())).features[TAGS]
        inner = getattr(feature, "feature", None)
        if isinstance(inner, ClassLabel):
            return raw, list(inner.names)
        values = {tag for ds in raw.values() for sentence in ds[TAGS] for tag in sentence}
        require(
            bool(values) and all(isinstance(v, str) for v in values),
            "label_column",
            column,
            "a column of IOB tag names ('B-PER', 'O') or a Sequence(ClassLabel) with names (entity scores need "
            f"names; this one holds {sorted(map(str, values))[:5]})",
        )
        names = conll_label_names(values)
        return raw.cast_column(TAGS, Sequence(ClassLabel(names=names))), names

    def num_labels(self, raw: DatasetDict, names: list[str]) -> int:
        """One label per tag name."""
        return len(names)

    def check_model_for_data(self, model, model_dir: str, data: NerEvalData) -> None:
        """The report's check: a token classifier predicting exactly the data's tags."""
        from .common import check_head

        check_head(model, model_dir, self)
        config, names = model.config, data.names
        named = {int(k): v for k, v in (config.id2label or {}).items() if not str(v).startswith("LABEL_")}
        if config.num_labels != len(names) or named and named != dict(enumerate(names)):
            raise invalid(
                "MODEL_DIR",
                model_dir,
                f"a model with {len(names)} labels named {names} for --dataset (it has {config.num_labels}: "
                f"{config.id2label})",
            )

    def prepare_splits(self, raw: DatasetDict, tokenizer, recipe) -> DatasetDict:
        """Every split tokenised with aligned `labels`; the evaluation splits cut to max_eval_samples.

        Raises ValueError, before anything is tokenised, for a tokenizer that makes most of the data's words unknown.
        """
        first = raw["train"] if "train" in raw else next(iter(raw.values()))
        check_known_words(tokenizer, sample_words(first.select(range(min(SAMPLE_EXAMPLES, len(first))))[TOKENS]))
        return DatasetDict(
            {split: self.prepare(self._cut(ds, split, recipe), tokenizer, recipe) for split, ds in raw.items()}
        )

    def prepare_eval(self, raw: DatasetDict, tokenizer, recipe, split: str | None = None) -> NerEvalData:
        """The evaluation split cut to max_eval_samples, with `word_ids` and the word-level references."""
        ds = self._cut(raw[split or recipe.eval_split], "eval", recipe)
        features = self.prepare(ds, tokenizer, recipe, word_ids=True)
        names = list(ds.features[TAGS].feature.names)
        return NerEvalData(features, [list(t) for t in ds[TAGS]], names)

    @staticmethod
    def _cut(ds: Dataset, split: str, recipe) -> Dataset:
        if split != "train" and recipe.max_eval_samples:
            ds = ds.select(range(min(recipe.max_eval_samples, len(ds))))
        return ds

    def prepare(self, dataset: Dataset, tokenizer, recipe, word_ids: bool = False) -> Dataset:
        """Tokenise the word lists (`is_split_into_words`, truncated to max_length) and align the tags as `labels`.

        Every word is tokenised as it is in running text (`for_pre_split_words`: a byte-level BPE tokenizer saved
        without the prefix space gets it, on a copy). With `word_ids`, each row also keeps the word index of every
        token (-1 for special tokens), for scoring words.
        Raises ValueError for a slow tokenizer (only fast ones map tokens back to words), one that cannot tokenise
        pre-split words as running text, and a max_length beyond the tokenizer's model_max_length.
        """
        tokenizer = for_pre_split_words(tokenizer)
        check_max_length(tokenizer, recipe.max_length)

        def encode(batch):
            enc = tokenizer(batch[TOKENS], is_split_into_words=True, truncation=True, max_length=recipe.max_length)
            ids = [enc.word_ids(i) for i in range(len(batch[TOKENS]))]
            enc["labels"] = [align_labels(w, tags) for w, tags in zip(ids, batch[TAGS])]
            if word_ids:
                enc["word_ids"] = [[NO_WORD if w is None else w for w in row] for row in ids]
            return enc

        return dataset.map(encode, batched=True, remove_columns=dataset.column_names)

    def collator(self, tokenizer):
        """Pads inputs (on the right) and pads the word labels with -100, which the losses skip."""
        return DataCollatorForTokenClassification(right_padded(tokenizer))

    def trainer_metrics(self, raw_validation, tokenizer, recipe):
        """`compute_metrics` for Trainer's evaluation of the validation split that `prepare_splits` made.

        Trainer passes (logits, labels) over those features in order, logits padded with -100 across batches; the
        words of each sentence are scored as `score` scores them (first sub-token, seqeval, words cut off = "O").
        """
        if raw_validation is None:
            return None
        data = self.prepare_eval(DatasetDict(validation=raw_validation), tokenizer, recipe, split="validation")

        def compute_metrics(eval_pred) -> dict[str, float]:
            logits = eval_pred.predictions
            logits = logits[0] if isinstance(logits, tuple) else logits
            if len(logits) != len(data.tags):
                raise ValueError(
                    f"compute_metrics got {len(logits)} sentences; the validation split prepare_splits made has "
                    f"{len(data.tags)}: evaluate on that split (same max_eval_samples, same order)"
                )
            return self.score(self._words(np.asarray(logits).argmax(-1), data), data)

        return compute_metrics

    # ---- scoring ----

    def _words(self, token_predictions, data: NerEvalData) -> list[list[int]]:
        missing = data.names.index("O") if "O" in data.names else NO_WORD
        return [
            word_predictions(row, word_ids, len(tags), missing)
            for row, word_ids, tags in zip(token_predictions, data.features["word_ids"], data.tags)
        ]

    @torch.inference_mode()
    def predict(self, model, data: NerEvalData, tokenizer, batch_size: int = 64) -> list[list[int]]:
        """Predicted tag id per word (its first sub-token's argmax), per sentence, in dataset order."""
        model.eval()
        collator = DataCollatorWithPadding(right_padded(tokenizer))  # logits are read by position from the left
        features = data.features
        keys = [k for k in INPUT_KEYS if k in features.column_names]
        device = next(model.parameters()).device
        tokens = []
        for start in range(0, len(features), batch_size):
            rows = features[start : start + batch_size]
            batch = collator([{k: rows[k][i] for k in keys} for i in range(len(rows[keys[0]]))])
            argmax = model(**{k: v.to(device) for k, v in batch.items()}).logits.argmax(-1).cpu().numpy()
            tokens.extend(argmax)
        return self._words(tokens, data)

    def score(self, predictions: list[list[int]], data: NerEvalData) -> dict[str, float]:
        """Entity-level micro precision, recall and F1 (conlleval rules) and token accuracy, by packaged seqeval."""
        from ..metrics import load_metric

        def tags(ids):
            return [data.names[i] if i != NO_WORD else "O" for i in ids]

        scores = load_metric("seqeval").compute(
            predictions=[tags(p) for p in predictions], references=[tags(r) for r in data.tags]
        )
        return {
            "precision": scores["overall_precision"],
            "recall": scores["overall_recall"],
            "f1": scores["overall_f1"],
            "token_accuracy": scores["overall_accuracy"],
        }

    def agreement(self, predictions: list[list[int]], reference: list[list[int]]) -> float:
        """Fraction of words whose predicted tag equals the reference model's (packaged `agreement` module)."""
        from ..metrics import load_metric

        flat = [tag for sentence in predictions for tag in sentence]
        ref = [tag for sentence in reference for tag in sentence]
        return load_metric("agreement").compute(predictions=flat, references=ref)["agreement"]

    def num_examples(self, data) -> int:
        """Sentences in the evaluation data."""
        return len(data.tags) if isinstance(data, NerEvalData) else len(data)
