"""Token classification (NER) as a task: loading, label alignment, word-level scoring, Trainer metrics, the CLI."""

from __future__ import annotations

import json
import os
import random

import pytest
import torch
from datasets import DatasetDict
from torch import nn
from transformers import (
    AutoModelForTokenClassification,
    BertConfig,
    BertForTokenClassification,
    BertModel,
    BertTokenizerFast,
    Trainer,
    TrainingArguments,
)
from transformers.modeling_outputs import TokenClassifierOutput

from hf_compress.cli import main
from hf_compress.cli.recipe import RecipeArguments
from hf_compress.data import CONLL2003_LABELS
from hf_compress.tasks import get_task
from hf_compress.tasks.token_classification import align_labels, word_predictions
from tests.family_models import TOKENIZERS, family_tokenizer
from tests.testing_utils import run_python, tiny_bert_config, tiny_tokenizer, training_args

NAMES = CONLL2003_LABELS  # O, B-PER, I-PER, B-ORG, I-ORG, B-LOC, I-LOC, B-MISC, I-MISC
PIECES = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "john", "lives", "in", "new", "york", "##er", "##s", "is"]


def piece_tokenizer(directory) -> BertTokenizerFast:
    """A WordPiece tokenizer that splits "yorker" into "york" "##er" and "johns" into "john" "##s"."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "vocab.txt")
    with open(path, "w") as f:
        f.write("\n".join(PIECES) + "\n")
    return BertTokenizerFast(vocab=path)


def write_conll(path, sentences: list[list[tuple[str, str]]]) -> str:
    """A CoNLL-2003-style file: `token POS chunk tag` lines, blank lines between sentences."""
    with open(path, "w") as f:
        f.write("-DOCSTART- -X- -X- O\n\n")
        for sentence in sentences:
            f.write("".join(f"{word} NN I-NP {tag}\n" for word, tag in sentence) + "\n")
    return str(path)


def tiny_conll(path, n: int = 60, seed: int = 0, words: int = 40) -> str:
    """Sentences of w<i> words (i < `words`) whose tag is decided by the word alone (i % 4: O, B-PER, B-LOC, O), so
    a tiny model learns it from a few dozen sentences."""
    rng = random.Random(seed)
    tags = ["O", "B-PER", "B-LOC", "O"]
    sentences = []
    for _ in range(n):
        sentence = [rng.randrange(words) for _ in range(rng.randint(3, 9))]
        sentences.append([(f"w{word}", tags[word % 4]) for word in sentence])
    return write_conll(path, sentences)


def recipe(dataset: str, **overrides) -> RecipeArguments:
    return RecipeArguments(task="token-classification", dataset_name=dataset, **overrides)


class OracleForTokenClassification(nn.Module):
    """A stand-in token classifier whose logits are a fixed tag per token id (no learning, exact predictions)."""

    def __init__(self, tag_of_token: dict[int, int], names: list[str], vocab_size: int):
        super().__init__()
        self.config = BertConfig(num_labels=len(names), id2label=dict(enumerate(names)))
        table = torch.zeros(vocab_size, len(names))
        for token, tag in tag_of_token.items():
            table[token, tag] = 10.0
        self.table = nn.Embedding.from_pretrained(table)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return TokenClassifierOutput(logits=self.table(input_ids))


# ---- alignment ----


def test_first_sub_token_of_each_word_carries_its_label(tmp_path):
    tokenizer = piece_tokenizer(tmp_path / "tok")
    path = write_conll(
        tmp_path / "train.txt",
        [[("johns", "B-PER"), ("lives", "O"), ("in", "O"), ("new", "B-LOC"), ("yorker", "I-LOC")]],
    )
    task, args = get_task("token-classification"), recipe(path, max_length=32)
    raw, names = task.load(args)
    features = task.prepare_splits(raw, tokenizer, args)["train"][0]
    tokens = tokenizer.convert_ids_to_tokens(features["input_ids"])
    assert tokens == ["[CLS]", "john", "##s", "lives", "in", "new", "york", "##er", "[SEP]"]
    per, loc, i_loc = names.index("B-PER"), names.index("B-LOC"), names.index("I-LOC")
    assert features["labels"] == [-100, per, -100, 0, 0, loc, i_loc, -100, -100]


def test_align_labels_skips_repeated_words_and_special_tokens():
    assert align_labels([None, 0, 0, 1, None, 2, 2, 2, None], [3, 4, 5]) == [
        -100,
        3,
        -100,
        4,
        -100,
        5,
        -100,
        -100,
        -100,
    ]


def test_words_cut_off_by_truncation_are_scored_as_missed(tmp_path):
    tokenizer = piece_tokenizer(tmp_path / "tok")
    path = write_conll(tmp_path / "train.txt", [[("john", "B-PER"), ("lives", "O"), ("in", "O"), ("new", "B-LOC")]])
    task, args = get_task("token-classification"), recipe(path, eval_split="train", max_length=5)  # CLS + 3 + SEP
    raw, names = task.load(args)
    data = task.prepare_eval(raw, tokenizer, args)
    vocab = tokenizer.get_vocab()
    oracle = OracleForTokenClassification(
        {vocab["john"]: names.index("B-PER"), vocab["new"]: names.index("B-LOC")}, names, len(PIECES)
    )
    predictions = task.predict(oracle, data, tokenizer)
    assert predictions == [[names.index("B-PER"), 0, 0, 0]]  # "new" never reached the model: "O", not dropped
    scores = task.score(predictions, data)
    assert scores["precision"] == 1.0 and scores["recall"] == 0.5 and scores["f1"] == pytest.approx(2 / 3)


def test_word_predictions_take_the_first_sub_token():
    # word ids of [CLS] w0 w1 w1 w2 [SEP], then padding beyond the word ids (Trainer pads logits with -100)
    assert word_predictions([9, 1, 2, 3, 4, 9, 0, 0], [-1, 0, 1, 1, 2, -1], num_words=4, missing=7) == [1, 2, 4, 7]


def test_a_later_sub_token_never_decides_the_word(tmp_path):
    tokenizer = piece_tokenizer(tmp_path / "tok")
    path = write_conll(tmp_path / "train.txt", [[("johns", "B-PER"), ("yorker", "B-LOC")]])
    task, args = get_task("token-classification"), recipe(path, eval_split="train")
    raw, names = task.load(args)
    data = task.prepare_eval(raw, tokenizer, args)
    vocab = tokenizer.get_vocab()
    # "john" and "york" say the right tags; the "##s" and "##er" pieces say other ones.
    table = {vocab["john"]: 1, vocab["##s"]: 3, vocab["york"]: 5, vocab["##er"]: 7}
    oracle = OracleForTokenClassification(table, names, len(PIECES))
    assert task.predict(oracle, data, tokenizer) == [[names.index("B-PER"), names.index("B-LOC")]]
    assert task.score(task.predict(oracle, data, tokenizer), data)["f1"] == 1.0


# ---- tokenizer properties ----


def ner_rows(words: list[str], tags: list[str]):
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    features = Features({"tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=NAMES))})
    return Dataset.from_dict({"tokens": [words], "ner_tags": [[NAMES.index(t) for t in tags]]}, features=features)


SENTENCE = ["The", "quick", "fox", "jumps", "over", "the", "lazy", "dog", "near", "Zeppelin"]
SENTENCE_TAGS = ["O", "O", "B-PER", "O", "O", "O", "O", "B-LOC", "O", "B-ORG"]


@pytest.mark.parametrize("family", list(TOKENIZERS))
def test_pre_split_words_are_tokenised_as_in_running_text_in_every_family(tmp_path, family):
    tokenizer = family_tokenizer(family, tmp_path / family)
    features = get_task("token-classification").prepare(
        ner_rows(SENTENCE, SENTENCE_TAGS), tokenizer, recipe("unused"), word_ids=True
    )[0]
    running = tokenizer(" ".join(SENTENCE))
    pieces = {}
    for token, word in zip(running["input_ids"], running.word_ids()):
        if word is not None:
            pieces.setdefault(word, []).append(token)
    for w in range(1, len(SENTENCE)):  # every word after the first, as in the running text
        assert [t for t, i in zip(features["input_ids"], features["word_ids"]) if i == w] == pieces[w], SENTENCE[w]
    firsts = [i for i, w in enumerate(features["word_ids"]) if w >= 0 and features["word_ids"][i - 1] != w]
    assert [features["labels"][i] for i in firsts] == [NAMES.index(t) for t in SENTENCE_TAGS]
    assert all(label == -100 for i, label in enumerate(features["labels"]) if i not in firsts)


def test_roberta_tokenizer_with_and_without_prefix_space_gives_the_same_word_aligned_labels(tmp_path):
    from transformers import AutoTokenizer

    without = family_tokenizer("roberta", tmp_path / "roberta")  # saved with add_prefix_space=False, as roberta-base
    with_space = AutoTokenizer.from_pretrained(tmp_path / "roberta", add_prefix_space=True)
    task, data = get_task("token-classification"), ner_rows(SENTENCE, SENTENCE_TAGS)
    a, b = (task.prepare(data, tok, recipe("unused"), word_ids=True)[0] for tok in (without, with_space))
    assert a == b
    assert without.convert_ids_to_tokens(a["input_ids"])[2] == "Ġquick"  # a word inside the sentence, not a start
    assert without.add_prefix_space is False  # the tokenizer given (saved with the model) is not changed
    assert without.convert_ids_to_tokens(without(["a", "quick"], is_split_into_words=True)["input_ids"])[2] != (
        "Ġquick"
    )


def test_a_tokenizer_that_cannot_split_words_as_running_text_is_refused_with_the_fix(tmp_path):
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "a": 1, "b": 2, " b": 3}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(" ?[a-z]+"), behavior="isolated")  # " b" keeps its space
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    with pytest.raises(ValueError, match=r"tokenizer=.* is invalid; allowed: .*add_prefix_space=True"):
        get_task("token-classification").prepare(ner_rows(["a", "b"], ["O", "O"]), tokenizer, recipe("unused"))


def test_left_padding_tokenizer_pads_on_the_right_and_scores_the_same(tmp_path):
    tokenizer = piece_tokenizer(tmp_path / "tok")
    sentences = [[("john", "B-PER")], [("lives", "O"), ("in", "O"), ("new", "B-LOC"), ("york", "I-LOC")]]
    path = write_conll(tmp_path / "train.txt", sentences)
    task, args = get_task("token-classification"), recipe(path, eval_split="train")
    raw, names = task.load(args)
    vocab = tokenizer.get_vocab()
    table = {vocab["john"]: names.index("B-PER"), vocab["new"]: names.index("B-LOC"), vocab["york"]: 6}
    oracle = OracleForTokenClassification(table, names, len(PIECES))
    right = task.predict(oracle, task.prepare_eval(raw, tokenizer, args), tokenizer)
    tokenizer.padding_side = "left"
    left = task.predict(oracle, task.prepare_eval(raw, tokenizer, args), tokenizer)
    assert left == right == [[names.index("B-PER")], [0, 0, names.index("B-LOC"), names.index("I-LOC")]]
    batch = task.collator(tokenizer)(
        [{"input_ids": [2, 5, 3], "labels": [-100, 1, -100]}, {"input_ids": [2, 3], "labels": [-100, -100]}]
    )
    assert batch["input_ids"][1].tolist() == [2, 3, 0] and batch["labels"][1].tolist() == [-100, -100, -100]
    assert tokenizer.padding_side == "left"  # the tokenizer given is not changed


def test_max_length_beyond_the_tokenizers_model_max_length_is_refused(tmp_path):
    tokenizer = piece_tokenizer(tmp_path / "tok")
    tokenizer.model_max_length = 16
    data = ner_rows(["john"], ["B-PER"])
    with pytest.raises(ValueError, match="max_length=32 is invalid; allowed: at most 16, the tokenizer's model_max"):
        get_task("token-classification").prepare(data, tokenizer, recipe("unused", max_length=32))


def test_a_tokenizer_that_makes_most_words_unknown_is_refused_before_training(tmp_path, capsys):
    data = tiny_conll(tmp_path / "train.txt", n=40)
    recipe_path = cli_recipe(tmp_path, "token-classification", data, eval_split="test", max_length=16)
    for name in os.listdir(tmp_path / "teacher"):  # a teacher folder without its tokenizer files
        if "tokenizer" in name or name in ("vocab.txt", "special_tokens_map.json"):
            os.remove(tmp_path / "teacher" / name)
    assert main(["distill", recipe_path]) == 2
    out, err = capsys.readouterr()
    assert "tokenizer=" in err and "is invalid; allowed: a tokenizer that knows the data's words" in err
    assert "100% of 40 sampled words unknown" in err and "Stage 1" not in out
    assert not (tmp_path / "out" / "teacher").exists()  # nothing was trained
    with pytest.raises(ValueError, match="knows the data's words"):
        get_task("token-classification").prepare_splits(
            get_task("token-classification").load(recipe(data))[0], piece_tokenizer(tmp_path / "tok"), recipe(data)
        )


# ---- loading ----


def test_default_columns_map_to_tokens_and_ner_tags_and_string_tags_get_conll_ids(tmp_path):
    rows = [{"words": ["john", "lives"], "tags": ["B-PER", "O"]}, {"words": ["in", "new"], "tags": ["O", "B-LOC"]}]
    path = tmp_path / "ner.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = get_task("token-classification")
    raw, names = task.load(recipe(str(path), text_column="words", label_column="tags"))
    assert names == NAMES  # tags inside CoNLL-2003's set keep the Hub's ids
    assert raw["train"]["ner_tags"] == [[1, 0], [0, 5]] and raw["train"]["tokens"] == [r["words"] for r in rows]

    hub_style = tmp_path / "hub.jsonl"  # the Hub's conll2003 column names, under the recipe's defaults
    hub_style.write_text("".join(json.dumps({"tokens": r["words"], "ner_tags": r["tags"]}) + "\n" for r in rows))
    raw, names = task.load(recipe(str(hub_style)))
    assert raw["train"]["ner_tags"] == [[1, 0], [0, 5]]

    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"tokens": ["a", "b"], "ner_tags": ["B-X", "O"]}) + "\n")
    assert task.load(recipe(str(odd)))[1] == ["O", "B-X"]  # outside CoNLL-2003: O first, the rest sorted


def test_task_data_scheme_names_the_benchmark_cache(tmp_path, monkeypatch):
    from hf_compress import task_data
    from hf_compress.loading import check_path_or_id, task_data_dir

    monkeypatch.delenv("HF_COMPRESS_TASK_DATA", raising=False)
    monkeypatch.setenv("HF_COMPRESS_CACHE", str(tmp_path / "cache"))
    assert task_data_dir() == task_data.cache_dir() == str(tmp_path / "cache" / "task-data")
    monkeypatch.setenv("HF_COMPRESS_TASK_DATA", str(tmp_path / "data"))
    assert task_data_dir() == task_data.cache_dir() == str(tmp_path / "data")  # one rule, in task_data

    folder = tmp_path / "data" / "conll2003-en"
    folder.mkdir(parents=True)
    write_conll(folder / "train.txt", [[("john", "B-PER"), ("lives", "O")]])
    assert check_path_or_id("dataset_name", "task-data://conll2003-en", kind="dataset") == str(folder)
    raw, names = get_task("token-classification").load(recipe("task-data://conll2003-en"))
    assert raw["train"]["tokens"] == [["john", "lives"]] and names == NAMES
    missing = r"dataset_name='task-data://squad-v1.1' is invalid.*python -m hf_compress.task_data"
    with pytest.raises(ValueError, match=missing):
        check_path_or_id("dataset_name", "task-data://squad-v1.1", kind="dataset")
    with pytest.raises(ValueError, match="a folder of the task-data cache"):
        check_path_or_id("dataset_name", "task-data://../outside", kind="dataset")


@pytest.mark.parametrize(
    "row,overrides,message",
    [
        ({"tokens": ["a"], "ner_tags": [1]}, {}, "label_column='ner_tags' is invalid"),
        ({"tokens": ["a"], "ner_tags": ["O"]}, {"label_column": "tags"}, "label_column='tags' is invalid"),
        ({"words": ["a"], "ner_tags": ["O"]}, {}, "text_column='tokens' is invalid"),
    ],
)
def test_data_the_task_cannot_score_is_refused_with_the_column(tmp_path, row, overrides, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match=message):
        get_task("token-classification").load(recipe(str(path), **overrides))


def test_report_check_refuses_a_model_with_other_tags(tmp_path):
    tokenizer = piece_tokenizer(tmp_path / "tok")
    path = write_conll(tmp_path / "train.txt", [[("john", "B-PER")]])
    task, args = get_task("token-classification"), recipe(path, eval_split="train")
    raw, names = task.load(args)
    data = task.prepare_eval(raw, tokenizer, args)
    task.check_model_for_data(OracleForTokenClassification({}, names, 5), "ok", data)
    with pytest.raises(ValueError, match="MODEL_DIR='other' is invalid.*9 labels"):
        task.check_model_for_data(OracleForTokenClassification({}, names[:5], 5), "other", data)
    with pytest.raises(ValueError, match="MODEL_DIR='renamed' is invalid"):
        task.check_model_for_data(OracleForTokenClassification({}, names[::-1], 5), "renamed", data)
    with pytest.raises(ValueError, match="a token-classification model"):
        task.check_model_for_data(BertModel(tiny_bert_config()), "base", data)


# ---- metrics ----


def test_scores_and_agreement_through_the_task_against_hand_values(tmp_path):
    tokenizer = piece_tokenizer(tmp_path / "tok")
    words = [("john", "B-PER"), ("lives", "O"), ("in", "O"), ("new", "B-LOC"), ("york", "I-LOC")]
    path = write_conll(tmp_path / "train.txt", [words, [("john", "B-PER"), ("is", "O")]])
    task, args = get_task("token-classification"), recipe(path, eval_split="train")
    raw, names = task.load(args)
    data = task.prepare_eval(raw, tokenizer, args)
    ids = {n: names.index(n) for n in names}
    # Sentence 1: PER right, LOC cut short (B-LOC O); sentence 2: PER right, a spurious LOC on "is".
    predicted = [[ids["B-PER"], 0, 0, ids["B-LOC"], 0], [ids["B-PER"], ids["B-LOC"]]]
    scores = task.score(predicted, data)
    # Entities: gold PER, LOC(new york), PER; predicted PER, LOC(new), PER, LOC(is) -> 2 of 4 right, 2 of 3 found.
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * (1 / 2) * (2 / 3) / (1 / 2 + 2 / 3))
    assert scores["token_accuracy"] == pytest.approx(5 / 7)
    reference = [[ids["B-PER"], 0, 0, ids["B-LOC"], ids["I-LOC"]], [ids["B-PER"], 0]]
    assert task.agreement(predicted, reference) == pytest.approx(5 / 7)  # per word, not per sentence


def test_trainer_metrics_equal_the_report_scores(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    path = tiny_conll(tmp_path / "train.txt", n=40)
    task, args = get_task("token-classification"), recipe(path, max_length=8, max_eval_samples=9)
    raw, names = task.load(args)
    raw = DatasetDict(train=raw["train"].select(range(20)), validation=raw["train"].select(range(20, 40)))
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_bert_config(num_labels=len(names))).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(50)  # varied tags per token, so entities are found and missed
    trainer = Trainer(
        model=model,
        args=training_args(TrainingArguments, tmp_path / "out", per_device_eval_batch_size=4),
        eval_dataset=task.prepare_splits(raw, tokenizer, args)["validation"],
        data_collator=task.collator(tokenizer),
        compute_metrics=task.trainer_metrics(raw["validation"], tokenizer, args),
    )
    metrics = trainer.evaluate()
    data = task.prepare_eval(raw, tokenizer, args, split="validation")
    expected = task.score(task.predict(model, data, tokenizer), data)
    assert task.num_examples(data) == 9
    assert 0 < expected["recall"] < 1 and 0 < expected["token_accuracy"] < 1  # a non-trivial comparison
    for key, value in expected.items():
        assert metrics[f"eval_{key}"] == pytest.approx(value), key


# ---- the CLI, end to end ----


def headless_teacher(directory, **overrides) -> str:
    """A tiny base checkpoint (no head, as all-MiniLM-L6-v2) with its tokenizer, for finetune_teacher: true."""
    torch.manual_seed(0)
    BertModel(tiny_bert_config(num_hidden_layers=4, **overrides)).save_pretrained(directory)
    tiny_tokenizer(directory).save_pretrained(directory)
    return str(directory)


def write_recipe(tmp_path, lines: dict) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in lines.items()) + "\n")
    return str(path)


def cli_recipe(tmp_path, task: str, dataset: str, **extra) -> str:
    """A distill recipe for a tiny headless teacher on a tiny local data file (shared with the QA tests)."""
    lines = {
        "task": task,
        "teacher_model_name_or_path": headless_teacher(tmp_path / "teacher"),
        "finetune_teacher": True,
        "teacher_learning_rate": 3e-3,
        "teacher_num_train_epochs": 6,
        "dataset_name": dataset,
        "student_num_hidden_layers": 2,
        "num_train_epochs": 4,
        "learning_rate": 3e-3,
        "per_device_train_batch_size": 8,
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "save_strategy": "no",
        "report_latency_repeats": 2,
        "output_dir": str(tmp_path / "out"),
        **extra,
    }
    return write_recipe(tmp_path, lines)


def report_command(tmp_path, task: str, data: str, *flags: str) -> list[dict]:
    """`hf-compress report` on the saved teacher and student, scored on the data file's train split."""
    from hf_compress.cli.report import main as report_main

    out, where = tmp_path / "out", tmp_path / "report"
    argv = [str(out), "--teacher", str(out / "teacher"), "--task", task, "--dataset", data, "--split", "train"]
    assert report_main([*argv, "--repeats", "1", "--batch-sizes", "2", "--output", str(where), *flags]) == 0
    rows = json.loads((where / "compression_report.json").read_text())
    assert [r["name"] for r in rows] == ["teacher", "out"] and 0 <= rows[1]["agreement_with_reference"] <= 1
    return rows


RELOAD = """
    import json, sys
    import torch
    from transformers import AutoModelFor{head}, AutoTokenizer
    model = AutoModelFor{head}.from_pretrained("out").eval()
    tokenizer = AutoTokenizer.from_pretrained("out")
    with torch.no_grad():
        out = model(**tokenizer({text}, return_tensors="pt"))
    print(json.dumps({{"hf_compress": any(m.startswith("hf_compress") for m in sys.modules),
                       "id2label": model.config.id2label,
                       "outputs": [out[k].tolist() for k in {keys}]}}))
"""


def reload_in_fresh_process(tmp_path, head: str, text: str, keys: list[str]) -> dict:
    """Load the saved student where hf_compress was never imported; return its outputs on `text`."""
    proc = run_python(RELOAD.format(head=head, text=text, keys=keys), cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_distill_recipe_end_to_end_on_a_tiny_conll_file(tmp_path, capsys):
    data = tiny_conll(tmp_path / "train.txt", n=104)
    # 32 test sentences: at least MIN_EXAMPLES, so the scores are results, not flagged
    recipe_path = cli_recipe(tmp_path, "token-classification", data, eval_split="test", test_size=32, max_length=16)
    assert main(["distill", recipe_path]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| model |"))
    assert header.startswith("| model | f1 | vs ref | precision | recall | token_accuracy |")
    report = json.loads((tmp_path / "out" / "compression_report.json").read_text())
    assert [r["name"] for r in report] == ["teacher", "student"]
    for row in report:
        assert row["metric"] == "f1" and row["score"] == row["metrics"]["f1"] and row["accuracy"] is None
        assert f"| {row['name']} | {row['score']:.4f} |" in out
    assert report[1]["parameters"] < report[0]["parameters"]
    assert report[0]["score"] > 0.5  # the teacher learnt the word -> tag rule: the metric measures something

    card = (tmp_path / "out" / "README.md").read_text()
    assert "pipeline_tag: token-classification" in card and "type: token-classification" in card
    assert f"value: {report[1]['score']}" in card and "name: Entity F1 (seqeval)" in card
    assert "AutoModelForTokenClassification.from_pretrained" in card

    assert report_command(tmp_path, "token-classification", data, "--max-length", "16")[1]["metric"] == "f1"

    fresh = reload_in_fresh_process(tmp_path, "TokenClassification", '"w1 w2 w3"', ["logits"])
    assert not fresh["hf_compress"]
    assert fresh["id2label"] == {str(i): name for i, name in enumerate(NAMES)}
    student = AutoModelForTokenClassification.from_pretrained(tmp_path / "out").eval()
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    with torch.no_grad():
        expected = student(**tokenizer("w1 w2 w3", return_tensors="pt")).logits
    assert torch.allclose(torch.tensor(fresh["outputs"][0]), expected, atol=1e-5)


# ---- real data ----


@pytest.mark.slow
def test_conll2003_quickstart_runs_on_a_slice_of_the_real_data(tmp_path, capsys):
    from hf_compress import task_data

    try:
        task_data.conll2003_dir()
    except task_data.TaskDataUnavailable as error:
        pytest.skip(f"CoNLL-2003 is not cached and cannot be fetched: {error}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    flags = ["--max_train_samples", "64", "--teacher_max_train_samples", "64", "--max_eval_samples", "40"]
    flags += ["--report_latency_repeats", "2", "--output_dir", str(tmp_path / "out")]
    assert main(["distill", os.path.join(root, "recipes", "conll2003-quickstart.yaml"), *flags]) == 0
    out = capsys.readouterr().out
    assert "| model | f1 | vs ref | precision | recall |" in out
    report = json.loads((tmp_path / "out" / "compression_report.json").read_text())
    student = AutoModelForTokenClassification.from_pretrained(tmp_path / "out")
    assert student.config.id2label == dict(enumerate(NAMES))
    assert report[1]["parameters"] < report[0]["parameters"] and 0 <= report[1]["score"] <= 1
