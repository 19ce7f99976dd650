"""The packaged squad_v2 `evaluate` module (hf_compress/metrics/squad_v2): SQuAD 2.0 scores worked by hand."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import evaluate
import pytest

from hf_compress.metrics import METRICS, load_metric, metric_path

NONE = {"text": [], "answer_start": []}


def inputs(cases):
    """(prediction, no-answer score, gold texts) per question as squad_v2's predictions and references."""
    predictions = [
        {"id": f"q{i}", "prediction_text": p, "no_answer_probability": s} for i, (p, s, _) in enumerate(cases)
    ]
    references = [
        {"id": f"q{i}", "answers": {"text": golds, "answer_start": [0] * len(golds)}}
        for i, (_, _, golds) in enumerate(cases)
    ]
    return predictions, references


CASES = [
    ("Paris", -2.0, ["Paris"]),  # answerable, right: 1 / 1
    ("Lyon", 0.5, []),  # unanswerable, answered: 0 / 0
    ("", 0.0, []),  # unanswerable, "": 1 / 1
    ("big red fox", 3.0, ["a big red dog barks"]),  # answerable: exact 0, F1 2 * (2/3)(2/4) / (2/3 + 2/4) = 4/7
]


def test_squad_v2_is_packaged_and_loads_by_path():
    assert "squad_v2" in METRICS
    assert metric_path("squad_v2").endswith(os.path.join("hf_compress", "metrics", "squad_v2", "squad_v2.py"))
    metric = load_metric("squad_v2")
    assert isinstance(metric, evaluate.Metric) and metric.name == "squad_v2"
    assert set(metric.features) == {"predictions", "references"}


def test_overall_has_ans_and_no_ans_scores_worked_by_hand():
    predictions, references = inputs(CASES)
    result = load_metric("squad_v2").compute(
        predictions=predictions, references=references, no_answer_threshold=math.inf
    )
    assert result["exact"] == pytest.approx(100 * 2 / 4)
    assert result["f1"] == pytest.approx(100 * (1 + 0 + 1 + 4 / 7) / 4)
    assert result["HasAns_exact"] == pytest.approx(50.0) and result["HasAns_f1"] == pytest.approx(
        100 * (1 + 4 / 7) / 2
    )
    assert result["NoAns_exact"] == result["NoAns_f1"] == pytest.approx(50.0)
    assert (result["total"], result["HasAns_total"], result["NoAns_total"]) == (4, 2, 2)
    # The default threshold 1.0 (the Hub's): q3's score 3.0 is above it, so it counts as "" (0 for an answerable one).
    default = load_metric("squad_v2").compute(predictions=predictions, references=references)
    assert default["f1"] == pytest.approx(100 * 2 / 4) and default["HasAns_f1"] == pytest.approx(50.0)


def test_best_threshold_sweeps_the_no_answer_scores():
    predictions, references = inputs(CASES)
    result = load_metric("squad_v2").compute(predictions=predictions, references=references)
    # All "": q1 and q2 right (2). Answering in score order: q0 (-2.0) +1 -> 3; q2 (0.0) +0; q1 (0.5) -1 -> 2;
    # q3 (3.0) +0 (exact) or +4/7 (F1) -> below 3. Best: 3 of 4 at threshold -2.0.
    assert result["best_exact"] == pytest.approx(75.0) and result["best_exact_thresh"] == -2.0
    assert result["best_f1"] == pytest.approx(75.0) and result["best_f1_thresh"] == -2.0
    # Answering no question is best: the threshold is below every score.
    worst = [("Rome", 1.0, ["Paris"]), ("Lyon", 2.0, [])]
    predictions, references = inputs(worst)
    result = load_metric("squad_v2").compute(predictions=predictions, references=references)
    assert result["best_f1"] == pytest.approx(50.0) and result["best_f1_thresh"] == -math.inf


def test_questions_with_equal_scores_are_answered_together():
    # Both at 1.0: a threshold answers both (+1 - 1 = 0) or neither; answering only the first would be 2 of 2.
    tied = [("Paris", 1.0, ["Paris"]), ("Lyon", 1.0, [])]
    predictions, references = inputs(tied)
    result = load_metric("squad_v2").compute(predictions=predictions, references=references)
    assert result["best_exact"] == pytest.approx(50.0) and result["best_exact_thresh"] == -math.inf


def test_gold_answers_that_normalise_to_nothing_count_as_none_and_missing_predictions_score_zero():
    predictions, references = inputs([("", 0.0, ["the"]), ("Paris", 0.0, ["Paris"])])
    predictions[1]["id"] = "elsewhere"  # q1 answered under another id
    result = load_metric("squad_v2").compute(predictions=predictions, references=references)
    # q0's only gold answer normalises to "" (as in the official script: "" is right); q1 has no prediction: 0.
    assert result["exact"] == pytest.approx(50.0) and result["HasAns_exact"] == pytest.approx(50.0)


def test_rejects_duplicate_ids():
    predictions, references = inputs(CASES[:2])
    with pytest.raises(ValueError, match=r"predictions\[1\].id='q0' is invalid; allowed: each question id at most"):
        load_metric("squad_v2").compute(
            predictions=[predictions[0], {**predictions[1], "id": "q0"}], references=references
        )
    with pytest.raises(ValueError, match=r"references\[1\].id='q0' is invalid; allowed: each question id once"):
        load_metric("squad_v2").compute(
            predictions=predictions, references=[references[0], {**references[1], "id": "q0"}]
        )


def test_loads_offline_in_a_fresh_process(tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_ENDPOINT": "http://127.0.0.1:9",
    }
    code = textwrap.dedent(
        f"""
        import evaluate
        result = evaluate.load({metric_path("squad_v2")!r}, keep_in_memory=True).compute(
            predictions=[{{"id": "a", "prediction_text": "", "no_answer_probability": 0.0}}],
            references=[{{"id": "a", "answers": {NONE!r}}}],
        )
        print(result["exact"], result["NoAns_f1"])
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [float(x) for x in proc.stdout.split()[-2:]] == [100.0, 100.0]
