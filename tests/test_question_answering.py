"""Extractive QA as a task: windows and answer positions, span post-processing, SQuAD scores, Trainer metrics, CLI."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from datasets import Dataset, DatasetDict
from transformers import AutoModelForQuestionAnswering, BertForQuestionAnswering, Trainer, TrainingArguments

from hf_compress.cli import main
from hf_compress.cli.recipe import RecipeArguments
from hf_compress.tasks import QAEvalData, get_task
from hf_compress.tasks.qa_postprocessing import best_spans, window_features
from tests.test_token_classification import cli_recipe, reload_in_fresh_process, report_command
from tests.testing_utils import tiny_bert_config, tiny_tokenizer, training_args

CONTEXT = " ".join(f"w{i}" for i in range(30))  # one token per word with tiny_tokenizer


def squad_rows(items: list[tuple[str, str, str]]) -> Dataset:
    """Questions in the Hub `squad` schema from (question, context, answer) triples (answer found in the context)."""
    return Dataset.from_dict(
        {
            "id": [f"q{i}" for i in range(len(items))],
            "question": [q for q, _, _ in items],
            "context": [c for _, c, _ in items],
            "answers": [{"text": [a], "answer_start": [c.index(a)]} for _, c, a in items],
        }
    )


def write_squad(path, items: list[tuple[str, str, str]]) -> str:
    """A SQuAD v1.1 JSON file with one paragraph per (question, context, answer)."""
    paragraphs = [
        {"context": c, "qas": [{"id": f"q{i}", "question": q, "answers": [{"text": a, "answer_start": c.index(a)}]}]}
        for i, (q, c, a) in enumerate(items)
    ]
    with open(path, "w") as f:
        json.dump({"version": "1.1", "data": [{"title": "tiny", "paragraphs": paragraphs}]}, f)
    return str(path)


def recipe(dataset: str = "unused", **overrides) -> RecipeArguments:
    return RecipeArguments(task="question-answering", dataset_name=dataset, **overrides)


# ---- windows ----


def test_windows_point_at_the_answer_or_at_cls(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    # [CLS] w100 w101 [SEP] + 11 context tokens + [SEP] = 16; windows share 4 context tokens: 0-10, 7-17, 14-24, 21-29.
    examples = squad_rows([("w100 w101", CONTEXT, "w9 w10 w11")])
    features = window_features(examples, tokenizer, max_length=16, doc_stride=4)
    first_context_word = [int(tokenizer.decode(f["input_ids"][4:5])[1:]) for f in features]
    assert first_context_word == [0, 7, 14, 21]
    # Window 1 holds w9 w10 but not w11 (the answer crosses its end): [CLS]. Window 2 holds all of it at 4 + 2.
    positions = list(zip(features["start_positions"], features["end_positions"]))
    assert positions == [(0, 0), (6, 8), (0, 0), (0, 0)]
    window = features[1]["input_ids"]
    assert tokenizer.decode(window[6:9]) == "w9 w10 w11"


def test_answer_starting_before_a_window_is_cls_there(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    examples = squad_rows([("w100 w101", CONTEXT, "w6 w7 w8")])  # windows 0-10 (holds it) and 7-17 (holds w7 w8)
    features = window_features(examples, tokenizer, max_length=16, doc_stride=4)
    positions = list(zip(features["start_positions"], features["end_positions"]))
    assert positions == [(10, 12), (0, 0), (0, 0), (0, 0)]


def test_evaluation_windows_keep_ids_and_only_context_offsets(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    examples = squad_rows([("w100 w101", CONTEXT, "w9 w10 w11"), ("w5", "w1 w2 w3", "w2")])
    features = window_features(examples, tokenizer, max_length=16, doc_stride=4, for_eval=True)
    assert features["example_id"] == ["q0"] * 4 + ["q1"]
    first = features[0]["offset_mapping"]
    assert first[:4] == [None] * 4 and first[-1] is None  # [CLS], question, [SEP]; final [SEP]
    assert [CONTEXT[s:e] for s, e in first[4:-1]] == [f"w{i}" for i in range(11)]
    assert features[4]["offset_mapping"] == [None, None, None, [0, 2], [3, 5], [6, 8], None]


# ---- post-processing ----

# context "alpha beta gamma delta"; one window: [CLS] question [SEP] alpha beta gamma delta [SEP] + 2 padded logits
OFFSETS = [None, None, None, (0, 5), (6, 10), (11, 16), (17, 22), None]
SPAN_CASES = {
    # name: (start logits, end logits, max_answer_length, expected)
    "best pair": ([0, 0, 0, 1, 5, 2, 0, 0, 0, 0], [0, 0, 0, 0, 1, 6, 2, 0, 0, 0], 30, "beta gamma"),
    "question tokens ignored": ([9, 9, 9, 1, 5, 2, 0, 9, 0, 0], [9, 9, 9, 0, 1, 6, 2, 9, 0, 0], 30, "beta gamma"),
    "padding ignored": ([0, 0, 0, 1, 5, 2, 0, 0, 99, 99], [0, 0, 0, 0, 1, 6, 2, 0, 99, 99], 30, "beta gamma"),
    "too long": ([0, 0, 0, 5, 1, -1, -1, 0, 0, 0], [0, 0, 0, 0, 1, 0, 6, 0, 0, 0], 2, "alpha beta"),
    "end before start": ([0, 0, 0, 0, 0, 7, 1, 0, 0, 0], [0, 0, 0, 0, 6, 0, 1, 0, 0, 0], 30, "gamma delta"),
    "length one": ([0, 0, 0, 3, 0, 0, 0, 0, 0, 0], [0, 0, 0, 4, 5, 0, 0, 0, 0, 0], 1, "alpha"),
}


@pytest.mark.parametrize("start,end,max_answer_length,expected", SPAN_CASES.values(), ids=SPAN_CASES.keys())
def test_best_span_from_hand_logits(start, end, max_answer_length, expected):
    examples = Dataset.from_dict({"id": ["q"], "context": ["alpha beta gamma delta"]})
    features = Dataset.from_dict({"example_id": ["q"], "offset_mapping": [OFFSETS]})
    spans = best_spans(examples, features, [np.array(start, float)], [np.array(end, float)], 20, max_answer_length)
    assert spans == [expected]


def test_best_span_over_all_windows_of_an_example():
    context = "alpha beta gamma delta epsilon"
    examples = Dataset.from_dict({"id": ["q", "other"], "context": [context, "zeta"]})
    windows = [[None, (0, 5), (6, 10), (11, 16), None], [None, (11, 16), (17, 22), (23, 30), None]]
    features = Dataset.from_dict(
        {"example_id": ["q", "q", "other"], "offset_mapping": [*windows, [None, (0, 4), None]]}
    )
    start = [np.array([0, 4, 0, 0, 0.0]), np.array([0, 0, 5, 0, 0.0]), np.array([0, 1, 0.0])]
    end = [np.array([0, 0, 4, 0, 0.0]), np.array([0, 0, 0, 5, 0.0]), np.array([0, 1, 0.0])]
    # Window 1's best is alpha-beta (8); window 2's is delta-epsilon (10): the example takes the better one.
    assert best_spans(examples, features, start, end) == ["delta epsilon", "zeta"]
    with pytest.raises(ValueError, match="2/3 windows; the features hold 3"):
        best_spans(examples, features, start[:2], end)


def test_question_tokens_are_never_an_answer_through_the_windows(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    examples = squad_rows([("w7 w8", "w1 w2 w3 w4", "w3")])
    features = window_features(examples, tokenizer, max_length=32, doc_stride=4, for_eval=True)
    # [CLS] w7 w8 [SEP] w1 w2 w3 w4 [SEP]: the question tokens get the highest logits, then w3.
    start = np.array([0, 9, 9, 0, 0, 0, 5, 0, 0.0])
    assert best_spans(examples, features, [start], [start.copy()]) == ["w3"]


# ---- metrics ----


def test_scores_and_agreement_through_the_task_against_hand_values():
    task = get_task("question-answering")
    examples = Dataset.from_dict(
        {
            "id": ["a", "b", "c"],
            "context": ["x"] * 3,
            "answers": [
                {"text": ["Eiffel Tower", "the tower"], "answer_start": [0, 0]},
                {"text": ["in 1889"], "answer_start": [0]},
                {"text": ["Paris"], "answer_start": [0]},
            ],
        }
    )
    data = QAEvalData(examples, Dataset.from_dict({"example_id": [], "offset_mapping": []}))
    scores = task.score(["the Eiffel Tower", "1889 or 1890", "Lyon"], data)
    # a: exact after normalisation; b: 1 shared token of 3 predicted and 2 gold, F1 = 2·(1/3)(1/2)/(1/3 + 1/2) = 0.4.
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 0.4) / 3)
    # Agreement: the same answer after SQuAD normalisation (case, articles, punctuation), per question.
    assert task.agreement(["The Eiffel tower.", "1889", ""], ["Eiffel Tower", "in 1889", ""]) == pytest.approx(2 / 3)


def test_trainer_metrics_equal_the_report_scores(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    rng = random.Random(0)
    items = []
    for _ in range(12):
        words = [f"w{rng.randrange(40)}" for _ in range(rng.randint(8, 30))]
        k = rng.randrange(len(words) - 2)
        items.append(("w50 w51", " ".join(words), " ".join(words[k : k + 3])))
    raw = DatasetDict(train=squad_rows(items[:4]), validation=squad_rows(items))
    task = get_task("question-answering")
    args = recipe(max_length=16, doc_stride=4, max_eval_samples=10, n_best_size=5, max_answer_length=4)
    torch.manual_seed(0)
    model = BertForQuestionAnswering(tiny_bert_config(num_labels=2)).eval()
    with torch.no_grad():
        model.qa_outputs.weight.mul_(30)
    trainer = Trainer(
        model=model,
        args=training_args(TrainingArguments, tmp_path / "out", per_device_eval_batch_size=3),
        eval_dataset=task.prepare_splits(raw, tokenizer, args)["validation"],
        data_collator=task.collator(tokenizer),
        compute_metrics=task.trainer_metrics(raw["validation"], tokenizer, args),
    )
    metrics = trainer.evaluate()
    data = task.prepare_eval(raw, tokenizer, args, split="validation")
    texts = task.predict(model, data, tokenizer)
    expected = task.score(texts, data)
    assert task.num_examples(data) == 10 and len(data.features) > 10  # several windows per question
    assert all(1 <= len(t.split()) <= 4 for t in texts) and 0 < expected["f1"] < 100
    assert metrics["eval_exact_match"] == pytest.approx(expected["exact_match"])
    assert metrics["eval_f1"] == pytest.approx(expected["f1"])


# ---- loading and checks ----


def test_squad_file_loads_as_a_train_split_and_non_qa_models_are_refused(tmp_path):
    path = write_squad(tmp_path / "squad.json", [("w1", "w1 w2", "w2")])
    task = get_task("question-answering")
    raw, names = task.load(recipe(path))
    assert list(raw) == ["train"] and names is None and raw["train"][0]["answers"]["text"] == ["w2"]
    assert task.label_kwargs(names, task.num_labels(raw, names)) == {"num_labels": 2}
    with pytest.raises(ValueError, match="MODEL_DIR='clf' is invalid; allowed: a question-answering model"):
        task.check_model_for_data(torch.nn.Linear(1, 1), "clf", None)
    records = tmp_path / "hub.jsonl"
    records.write_text(json.dumps({"id": "a", "question": "w1", "context": "w2"}) + "\n")
    with pytest.raises(ValueError, match="lacks \\['answers'\\]"):
        task.load(recipe(str(records)))


# ---- SQuAD 2.0: unanswerable questions ----


def v2_rows(items: list[tuple[str, str, str | None]], prefix: str = "q") -> Dataset:
    """Questions in the Hub `squad_v2` schema from (question, context, answer or None for unanswerable)."""
    return Dataset.from_dict(
        {
            "id": [f"{prefix}{i}" for i in range(len(items))],
            "question": [q for q, _, _ in items],
            "context": [c for _, c, _ in items],
            "answers": [
                {"text": [a], "answer_start": [c.index(a)]} if a else {"text": [], "answer_start": []}
                for _, c, a in items
            ],
        }
    )


class OracleForQuestionAnswering(torch.nn.Module):
    """A stand-in QA model: every token's start and end logit is a fixed value of its id (exact margins)."""

    def __init__(self, logit_of_token: dict[int, float], vocab_size: int = 1000):
        super().__init__()
        table = torch.zeros(vocab_size, 1)
        for token, logit in logit_of_token.items():
            table[token] = logit
        self.table = torch.nn.Embedding.from_pretrained(table)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        from transformers.modeling_outputs import QuestionAnsweringModelOutput

        logits = self.table(input_ids)[..., 0]
        return QuestionAnsweringModelOutput(start_logits=logits, end_logits=logits.clone())


def oracle_qa(tokenizer) -> OracleForQuestionAnswering:
    # [CLS] 2 + 2: null score 4. Spans: w39 alone 5 + 5 = 10 (margin -6), w38 6 (margin -2), w37 2 (margin +2).
    vocab = tokenizer.get_vocab()
    return OracleForQuestionAnswering({vocab["[CLS]"]: 2, vocab["w39"]: 5, vocab["w38"]: 3, vocab["w37"]: 1})


V2_VALIDATION = [("w50", "w1 w39 w2", "w39"), ("w50", "w1 w38 w2", None), ("w50", "w1 w37 w2", "w37")]
V2_TEST = [
    ("w50", "w1 w38 w2", "w38"),  # margin -2: above the threshold -6, so "" (wrong: it has an answer)
    ("w50", "w3 w39 w4", None),  # margin -6: answered "w39" (wrong: it has none)
    ("w50", "w39 w2 w5", "w39 w2"),  # answered "w39": exact 0, F1 2 * 1 * (1/2) / (1 + 1/2) = 2/3
    ("w50", "w5 w37 w6", None),  # margin +2: "" (right)
]


def test_null_threshold_is_chosen_on_validation_and_scores_equal_a_hand_computation(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    raw = DatasetDict(validation=v2_rows(V2_VALIDATION, "v"), test=v2_rows(V2_TEST, "t"))
    task = get_task("question-answering")  # no data loaded: SQuAD 2.0 is decided from `raw`
    args = recipe(max_length=16, doc_stride=4, eval_split="test")
    data = task.prepare_eval(raw, tokenizer, args)
    predictions = task.predict(oracle_qa(tokenizer), data, tokenizer)
    # Validation margins -6 (answer w39, right), -2 (none; answering is wrong), +2 (answer w37, right). Answering
    # none: 1 of 3 right; up to -6: 2; up to -2: 1; up to +2: 2 (not better). The threshold is -6.
    assert predictions.null_threshold == -6.0
    assert list(predictions) == ["", "w39", "w39", ""]
    scores = task.score(predictions, data)
    assert scores == {
        "exact_match": pytest.approx(100 * 1 / 4),
        "f1": pytest.approx(100 * (0 + 0 + 2 / 3 + 1) / 4),
        "HasAns_exact_match": pytest.approx(0.0),
        "HasAns_f1": pytest.approx(100 * (0 + 2 / 3) / 2),
        "NoAns_exact_match": pytest.approx(50.0),
        "NoAns_f1": pytest.approx(50.0),
        "null_threshold": -6.0,
    }
    # On the validation split itself, the threshold is chosen there too; without one, run_qa's 0.0 applies.
    on_validation = task.predict(
        oracle_qa(tokenizer), task.prepare_eval(raw, tokenizer, args, "validation"), tokenizer
    )
    assert on_validation.null_threshold == -6.0 and list(on_validation) == ["w39", "", ""]
    alone = task.prepare_eval(DatasetDict(test=raw["test"]), tokenizer, args)
    assert list(task.predict(oracle_qa(tokenizer), alone, tokenizer)) == ["w38", "w39", "w39", ""]
    assert data.unanswerable and task.unanswerable is None


def test_squad_v2_data_is_decided_when_loaded_and_the_card_names_squad_v2(tmp_path):
    task = get_task("question-answering")
    assert task.card_metrics[1] == ("f1", "f1", "F1 (squad)")
    rows = v2_rows(V2_TEST)
    path = tmp_path / "v2.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    raw, _ = task.load(recipe(str(path)))
    assert task.unanswerable is True and raw["train"]["answers"][1] == {"text": [], "answer_start": []}
    assert task.card_metrics == (
        ("exact_match", "exact_match", "Exact Match (squad_v2)"),
        ("f1", "f1", "F1 (squad_v2)"),
    )


def test_squad_v1_data_keeps_the_squad_metric_and_the_unanswerable_window_points_at_cls(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    task = get_task("question-answering")
    raw, _ = task.load(recipe(write_squad(tmp_path / "v1.json", [("w5", "w1 w2", "w2")])))
    assert task.unanswerable is False and task.card_metrics[1] == ("f1", "f1", "F1 (squad)")
    data = task.prepare_eval(raw, tokenizer, recipe(eval_split="train"))
    assert task.score(["w2"], data) == {"exact_match": 100.0, "f1": 100.0}  # no HasAns/NoAns, no threshold
    features = window_features(v2_rows([("w5", "w1 w2 w3", None)]), tokenizer, max_length=16, doc_stride=4)
    assert features["start_positions"] == features["end_positions"] == [0]  # [CLS]: the no-answer target


def test_best_spans_null_margin_is_the_lowest_cls_score_minus_the_best_span():
    examples = Dataset.from_dict({"id": ["q", "none"], "context": ["alpha beta gamma", "zeta"]})
    windows = [[None, (0, 5), (6, 10), None], [None, (6, 10), (11, 16), None], [None, None, None]]
    features = Dataset.from_dict({"example_id": ["q", "q", "none"], "cls_index": [0, 0, 0], "offset_mapping": windows})
    start = [np.array([3, 4, 0, 0.0]), np.array([1, 0, 2, 0.0]), np.array([9, 0, 0.0])]
    end = [np.array([2, 0, 5, 0.0]), np.array([0, 0, 1, 0.0]), np.array([9, 0, 0.0])]
    texts, margins = best_spans(examples, features, start, end, null_margins=True)
    # q: best span alpha-beta 4 + 5 = 9; null min(3 + 2, 1 + 0) = 1: margin -8. "none": no context token, margin inf.
    assert texts == ["alpha beta", ""] and margins == [-8.0, np.inf]


def test_left_padding_tokenizer_windows_and_predictions_are_those_of_right_padding(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    raw = DatasetDict(test=v2_rows(V2_TEST, "t"))
    task = get_task("question-answering")
    args = recipe(max_length=16, doc_stride=4, eval_split="test")
    right = task.prepare_eval(raw, tokenizer, args)
    expected = task.predict(oracle_qa(tokenizer), right, tokenizer)
    tokenizer.padding_side = "left"
    left = task.prepare_eval(raw, tokenizer, args)
    assert left.features["input_ids"] == right.features["input_ids"]  # the question first, as BERT is trained
    assert task.predict(oracle_qa(tokenizer), left, tokenizer) == expected
    batch = task.collator(tokenizer)([{"input_ids": [2, 5, 3]}, {"input_ids": [2, 3]}])
    assert batch["input_ids"][1].tolist() == [2, 3, 0] and tokenizer.padding_side == "left"


def tiny_squad_v2(path, n: int = 90, seed: int = 0) -> str:
    """JSONL records in the Hub `squad_v2` schema: a third of the questions have no answer (no "w39" in context)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = [f"w{rng.randrange(30)}" for _ in range(rng.randint(10, 20))]
        if i % 3:
            words.insert(rng.randrange(len(words)), "w39")
        context = " ".join(words)
        answers = (
            {"text": ["w39"], "answer_start": [context.index("w39")]} if i % 3 else {"text": [], "answer_start": []}
        )
        rows.append({"id": f"q{i}", "question": "w35 w36", "context": context, "answers": answers})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_distill_recipe_end_to_end_on_squad_v2_data(tmp_path, capsys):
    data = tiny_squad_v2(tmp_path / "squad_v2.jsonl", n=114)
    recipe_path = cli_recipe(  # 32 test examples: at least MIN_EXAMPLES, so the scores are results, not flagged
        tmp_path,
        "question-answering",
        data,
        eval_split="test",
        test_size=32,
        max_length=24,
        doc_stride=8,
        max_answer_length=5,
    )
    assert main(["distill", recipe_path]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "compression_report.json").read_text())
    keys = {"exact_match", "f1", "HasAns_exact_match", "HasAns_f1", "NoAns_exact_match", "NoAns_f1", "null_threshold"}
    for row in report:
        assert row["metric"] == "f1" and set(row["metrics"]) == keys
        assert f"| {row['name']} | {row['score']:.4f} | " in out
    assert "| model | f1 | vs ref | exact_match | HasAns_exact_match |" in out
    teacher = report[0]["metrics"]
    assert teacher["HasAns_exact_match"] > 50 and teacher["NoAns_exact_match"] > 50  # it learnt both kinds
    card = (tmp_path / "out" / "README.md").read_text()
    assert "name: F1 (squad_v2)" in card and f"value: {report[1]['score']}" in card


# ---- the CLI, end to end ----


def tiny_squad(path, n: int = 60, seed: int = 0) -> str:
    """Contexts of random words holding one "w39": the answer, which a tiny model learns to point at."""
    rng = random.Random(seed)
    items = []
    for _ in range(n):
        words = [f"w{rng.randrange(30)}" for _ in range(rng.randint(10, 30))]
        words.insert(rng.randrange(len(words)), "w39")
        items.append(("w35 w36", " ".join(words), "w39"))
    return write_squad(path, items)


def test_distill_recipe_end_to_end_on_a_tiny_squad_file(tmp_path, capsys):
    data = tiny_squad(tmp_path / "squad.json", n=104)
    recipe_path = cli_recipe(  # 32 test examples: at least MIN_EXAMPLES, so the scores are results, not flagged
        tmp_path,
        "question-answering",
        data,
        eval_split="test",
        test_size=32,
        max_length=24,
        doc_stride=8,
        max_answer_length=5,
    )
    assert main(["distill", recipe_path]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| model |"))
    assert header.startswith("| model | f1 | vs ref | exact_match |")
    report = json.loads((tmp_path / "out" / "compression_report.json").read_text())
    for row in report:
        assert row["metric"] == "f1" and set(row["metrics"]) == {"exact_match", "f1"} and row["accuracy"] is None
        assert f"| {row['name']} | {row['score']:.4f} | " in out
        assert f" | {row['metrics']['exact_match']:.4f} | " in out
    assert report[0]["metrics"]["exact_match"] > 50  # the teacher learnt to point at w39 (windows without it: CLS)

    card = (tmp_path / "out" / "README.md").read_text()
    assert "pipeline_tag: question-answering" in card and "type: question-answering" in card
    assert "type: exact_match" in card and "type: f1" in card and f"value: {report[1]['score']}" in card

    rows = report_command(tmp_path, "question-answering", data, "--max-length", "48")  # above doc_stride 32
    assert rows[1]["metric"] == "f1" and set(rows[1]["metrics"]) == {"exact_match", "f1"}

    fresh = reload_in_fresh_process(tmp_path, "QuestionAnswering", '"w35 w36", "w1 w39 w2"', ["start_logits"])
    assert not fresh["hf_compress"]
    student = AutoModelForQuestionAnswering.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        expected = student(**tiny_tokenizer(tmp_path / "tok")("w35 w36", "w1 w39 w2", return_tensors="pt"))
    assert torch.allclose(torch.tensor(fresh["outputs"][0]), expected.start_logits, atol=1e-5)


# ---- real data ----


@pytest.mark.slow
def test_squad_windows_and_best_spans_recover_the_real_answers():
    from transformers import AutoTokenizer

    from hf_compress import task_data
    from hf_compress.data import minilm_path

    try:
        task_data.squad_dir()
    except task_data.TaskDataUnavailable as error:
        pytest.skip(f"SQuAD v1.1 is not cached and cannot be fetched: {error}")
    task = get_task("question-answering")
    args = recipe("task-data://squad-v1.1", eval_split="validation", max_eval_samples=400, max_length=128)
    raw, _ = task.load(args)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    data = task.prepare_eval(raw, tokenizer, args)
    assert len(data.features) > 400  # long contexts overflow into several windows
    # Oracle logits: 1 at each window's gold start/end (the first gold answer), 0 elsewhere. The span search must
    # read back a gold answer wherever the first one fits in a window.
    starts, ends = [], []
    for feature in data.features:
        start, end = np.zeros(len(feature["input_ids"])), np.zeros(len(feature["input_ids"]))
        start[feature["start_positions"]], end[feature["end_positions"]] = 1, 1
        starts.append(start)
        ends.append(end)
    texts = best_spans(data.examples, data.features, starts, ends, 20, 30)
    scores = task.score(texts, data)
    # Measured: 97.5 / 97.5. The misses are gold answers that are part of a word ("8" of "18", "gold" of "golden"):
    # no token span holds them; their questions' other gold answers ("eight") sit elsewhere in the context.
    assert scores["exact_match"] > 96 and scores["f1"] > 96
