"""The packaged `evaluate` metric modules: loaded offline by path, numbers equal to independent computations."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import evaluate
import numpy as np
import pytest

from hf_compress.metrics import METRICS, classification_metrics, load_metric, metric_path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RNG = np.random.default_rng(0)
PREDICTIONS = RNG.integers(0, 4, 200)
REFERENCES = np.where(RNG.random(200) < 0.6, PREDICTIONS, RNG.integers(0, 4, 200))  # ~70% right, all classes


def numpy_macro_f1(predictions: np.ndarray, references: np.ndarray) -> float:
    """Per-class precision and recall from a confusion matrix, then the mean of 2PR/(P+R)."""
    n = int(max(predictions.max(), references.max())) + 1
    confusion = np.zeros((n, n))
    np.add.at(confusion, (references, predictions), 1)
    tp = np.diag(confusion)
    precision, recall = tp / confusion.sum(0), tp / confusion.sum(1)
    return float(np.mean(2 * precision * recall / (precision + recall)))


def test_every_metric_is_an_evaluate_metric_loaded_from_the_package():
    for name in METRICS:
        path = metric_path(name)
        assert path.startswith(os.path.join(REPO, "hf_compress", "metrics")) and os.path.isfile(path)
        metric = load_metric(name)
        assert isinstance(metric, evaluate.Metric) and metric.name == name
        assert set(metric.features) == {"predictions", "references"}
    with pytest.raises(ValueError, match="metric='f2'.*allowed: accuracy, macro_f1, agreement"):
        metric_path("f2")


def test_accuracy_matches_numpy_and_weights_count():
    result = load_metric("accuracy").compute(predictions=PREDICTIONS, references=REFERENCES)
    assert result == {"accuracy": pytest.approx(float((PREDICTIONS == REFERENCES).mean()), abs=1e-12)}
    assert 0.6 < result["accuracy"] < 0.8
    # Right on examples 0 and 2 only: weights 1, 2, 3, 4 give (1 + 3) / 10.
    weighted = load_metric("accuracy").compute(
        predictions=[1, 0, 2, 2], references=[1, 1, 2, 0], sample_weight=[1, 2, 3, 4]
    )
    assert weighted["accuracy"] == pytest.approx(0.4)


def test_macro_f1_on_a_case_worked_by_hand():
    # Class 0: TP 1, FP 1, FN 0 -> P 1/2, R 1, F1 2/3. Class 1: TP 2, FP 1, FN 1 -> P 2/3, R 2/3, F1 2/3.
    # Class 2: TP 0, FP 0, FN 1 -> F1 0. Macro: (2/3 + 2/3 + 0) / 3 = 4/9 (accuracy would say 3/5).
    result = load_metric("macro_f1").compute(predictions=[0, 0, 1, 1, 1], references=[0, 1, 1, 1, 2])
    assert result["macro_f1"] == pytest.approx(4 / 9)
    assert result["per_class_f1"] == pytest.approx({0: 2 / 3, 1: 2 / 3, 2: 0.0})
    # A class named in `labels` but absent from both lists counts as 0 and lowers the mean.
    named = load_metric("macro_f1").compute(predictions=[0, 1], references=[0, 1], labels=[0, 1, 2])
    assert named["macro_f1"] == pytest.approx(2 / 3)


def test_macro_f1_matches_a_confusion_matrix_computation():
    result = load_metric("macro_f1").compute(predictions=PREDICTIONS, references=REFERENCES)
    assert result["macro_f1"] == pytest.approx(numpy_macro_f1(PREDICTIONS, REFERENCES), abs=1e-12)
    # Macro-F1 differs from accuracy when classes are imbalanced: predicting the majority class scores 1/2 · 2·0.9/1.9.
    majority = load_metric("macro_f1").compute(predictions=[0] * 10, references=[0] * 9 + [1])
    assert majority["macro_f1"] == pytest.approx((2 * 0.9 / 1.9) / 2)


def test_agreement_compares_student_with_teacher_predictions_not_labels():
    teacher = PREDICTIONS
    student = np.where(np.arange(200) % 4 == 0, (teacher + 1) % 4, teacher)  # disagrees on every 4th example
    result = load_metric("agreement").compute(predictions=student, references=teacher)
    assert result == {"agreement": pytest.approx(0.75)}


def test_classification_metrics_for_trainer_compute_metrics():
    logits = np.eye(4)[PREDICTIONS] + RNG.normal(0, 0.01, (200, 4))
    result = classification_metrics((logits, REFERENCES))
    assert result["accuracy"] == pytest.approx(float((PREDICTIONS == REFERENCES).mean()))
    assert result["macro_f1"] == pytest.approx(numpy_macro_f1(PREDICTIONS, REFERENCES))


def test_metrics_load_offline_in_a_fresh_process(tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),  # an empty cache: nothing downloaded before can help
        "HF_ENDPOINT": "http://127.0.0.1:9",  # and nothing can be downloaded now
    }
    code = textwrap.dedent(
        """
        from hf_compress.metrics import load_metric
        print(load_metric("macro_f1").compute(predictions=[0, 0, 1, 1, 1], references=[0, 1, 1, 1, 2])["macro_f1"])
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stdout.strip().splitlines()[-1]) == pytest.approx(4 / 9)


def test_metric_scripts_are_package_data():
    """pyproject ships metrics/*/*.py with the package (a wheel built from it holds them; checked by hand too)."""
    import tomllib

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        package_data = tomllib.load(f)["tool"]["setuptools"]["package-data"]["hf_compress"]
    assert "metrics/*/*.py" in package_data
    for name in METRICS:
        assert os.path.relpath(metric_path(name), os.path.join(REPO, "hf_compress")) == f"metrics/{name}/{name}.py"


# NER: three sentences scored entity by entity (an entity is correct only with its type and exact span).
NER_REFERENCES = [
    ["B-PER", "I-PER", "O", "B-LOC", "O"],  # PER[0:1], LOC[3]
    ["B-ORG", "I-ORG", "I-ORG", "O", "B-MISC"],  # ORG[0:2], MISC[4]
    ["B-LOC", "I-LOC", "O"],  # LOC[0:1]
]
NER_PREDICTIONS = [
    ["B-PER", "I-PER", "O", "B-ORG", "O"],  # PER[0:1] right; ORG[3] a type error (it is a LOC)
    ["B-ORG", "I-ORG", "O", "O", "B-MISC"],  # ORG[0:1] a partial match (misses token 2), wrong; MISC[4] right
    ["I-LOC", "I-LOC", "O"],  # starts with I-: conlleval reads LOC[0:1] (right); strict IOB2 reads no entity
]


def test_seqeval_entity_scores_worked_by_hand_conlleval_mode():
    # Predicted entities: PER, ORG, ORG, MISC, LOC = 5; right: PER, MISC, LOC = 3; reference entities: 5.
    # Micro P = 3/5, R = 3/5, F1 = 3/5.
    # LOC: 1 predicted, 1 right, 2 in the references -> P 1, R 1/2, F1 = 2·1·(1/2) / (3/2) = 2/3.
    # ORG: 2 predicted, 0 right, 1 reference -> 0. PER and MISC: 1 of 1 -> 1.
    # Tokens: 4/5 (token 3 of s1) + 4/5 (token 2 of s2) + 2/3 (token 0 of s3) right -> 10/13.
    result = load_metric("seqeval").compute(predictions=NER_PREDICTIONS, references=NER_REFERENCES)
    assert result["overall_precision"] == pytest.approx(3 / 5)
    assert result["overall_recall"] == pytest.approx(3 / 5)
    assert result["overall_f1"] == pytest.approx(3 / 5)
    assert result["overall_accuracy"] == pytest.approx(10 / 13)
    assert result["LOC"] == pytest.approx({"precision": 1.0, "recall": 1 / 2, "f1": 2 / 3, "number": 2})
    assert result["ORG"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1})
    assert result["PER"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1})
    assert result["MISC"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "number": 1})


@pytest.mark.parametrize("scheme", [None, "IOB2"])  # None: seqeval detects IOB2 from the references
def test_seqeval_strict_mode_drops_an_entity_that_starts_with_i(scheme):
    # Strict IOB2 reads nothing in s3's "I-LOC I-LOC": 4 predicted, 2 right (PER, MISC), 5 references.
    # P = 2/4, R = 2/5, F1 = 2·(1/2)·(2/5) / (1/2 + 2/5) = (2/5) / (9/10) = 4/9. Token accuracy does not change.
    result = load_metric("seqeval").compute(
        predictions=NER_PREDICTIONS, references=NER_REFERENCES, mode="strict", scheme=scheme
    )
    assert result["overall_precision"] == pytest.approx(1 / 2)
    assert result["overall_recall"] == pytest.approx(2 / 5)
    assert result["overall_f1"] == pytest.approx(4 / 9)
    assert result["overall_accuracy"] == pytest.approx(10 / 13)
    assert result["LOC"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 2})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "lenient"}, "mode='lenient' is invalid; allowed: None"),
        ({"scheme": "IOB2"}, "scheme='IOB2' is invalid; allowed: None, or with mode='strict'"),
        ({"mode": "strict", "scheme": "BIO"}, "scheme='BIO' is invalid; allowed: .*IOB1, IOB2"),
        ({"predictions": [["B-PER"], ["O"], ["O"]]}, r"predictions\[0\]=\['B-PER'\] is invalid; allowed: 5 tags"),
    ],
)
def test_seqeval_rejects_bad_arguments(kwargs, message):
    inputs = {"predictions": NER_PREDICTIONS, "references": NER_REFERENCES, **kwargs}
    with pytest.raises(ValueError, match=message):
        load_metric("seqeval").compute(**inputs)


# SQuAD v1.1: (prediction, gold answers, exact match, F1) per question, both in [0, 1] here.
SQUAD_CASES = [
    ("The Eiffel Tower", ["eiffel tower"], 1.0, 1.0),  # case and the article "The" are normalised away
    ("  Paris,  France. ", ["Paris France"], 1.0, 1.0),  # punctuation and runs of whitespace too
    ("theatre", ["the theatre"], 1.0, 1.0),  # only the whole word "the" is an article, not the start of "theatre"
    ("1990", ["in 1989", "1990", "the year 1990"], 1.0, 1.0),  # the best of several gold answers counts
    # "big red fox" vs "a big red dog barks" -> "big red dog barks": 2 shared tokens (big, red),
    # P = 2/3, R = 2/4, F1 = 2·(2/3)·(1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7.
    ("big red fox", ["a big red dog barks", "fox news"], 0.0, 4 / 7),  # vs "fox news": P 1/3, R 1/2, F1 2/5 < 4/7
    # Tokens are a multiset: "cat cat" vs "cat and cat" share 2 tokens (a set would share 1),
    # P = 2/2, R = 2/3, F1 = 2·1·(2/3) / (1 + 2/3) = 4/5.
    ("cat cat", ["a cat and a cat"], 0.0, 4 / 5),
    ("London", ["Paris"], 0.0, 0.0),  # nothing shared
]


def squad_inputs(cases):
    predictions = [{"id": f"q{i}", "prediction_text": p} for i, (p, _, _, _) in enumerate(cases)]
    references = [
        {"id": f"q{i}", "answers": {"text": golds, "answer_start": [0] * len(golds)}}
        for i, (_, golds, _, _) in enumerate(cases)
    ]
    return predictions, references


@pytest.mark.parametrize("prediction, golds, exact_match, f1", SQUAD_CASES)
def test_squad_scores_each_case_worked_by_hand_in_percent(prediction, golds, exact_match, f1):
    predictions, references = squad_inputs([(prediction, golds, exact_match, f1)])
    result = load_metric("squad").compute(predictions=predictions, references=references)
    assert result == {"exact_match": pytest.approx(100 * exact_match), "f1": pytest.approx(100 * f1)}


def test_squad_averages_over_questions_and_an_unanswered_question_scores_zero():
    predictions, references = squad_inputs(SQUAD_CASES)
    # EM: 4 of 7 -> 400/7 %. F1: (1 + 1 + 1 + 1 + 4/7 + 4/5 + 0) / 7 = (4 + 48/35) / 7 = 188/245 -> 18800/245 %.
    result = load_metric("squad").compute(predictions=predictions, references=references)
    assert result == {"exact_match": pytest.approx(400 / 7), "f1": pytest.approx(18800 / 245)}
    # Question q0 answered under another id: q0 scores 0 (the official script's rule), so EM 3/7 and F1 drops by 1/7.
    predictions[0] = {"id": "elsewhere", "prediction_text": "The Eiffel Tower"}
    result = load_metric("squad").compute(predictions=predictions, references=references)
    assert result == {"exact_match": pytest.approx(300 / 7), "f1": pytest.approx(18800 / 245 - 100 / 7)}


def test_squad_rejects_duplicate_ids_and_questions_without_answers():
    predictions, references = squad_inputs(SQUAD_CASES[:2])
    twice = [predictions[0], {**predictions[1], "id": "q0"}]
    with pytest.raises(ValueError, match=r"predictions\[1\].id='q0' is invalid; allowed: each question id at most"):
        load_metric("squad").compute(predictions=twice, references=references)
    twice = [references[0], {**references[1], "id": "q0"}]
    with pytest.raises(ValueError, match=r"references\[1\].id='q0' is invalid; allowed: each question id once"):
        load_metric("squad").compute(predictions=predictions, references=twice)
    with pytest.raises(ValueError, match=r"references\[1\].answers.text=\[\] is invalid; allowed: at least one gold"):
        empty = {"id": "q1", "answers": {"text": [], "answer_start": []}}
        load_metric("squad").compute(predictions=predictions, references=[references[0], empty])


def test_task_metrics_load_offline_in_a_fresh_process(tmp_path):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_ENDPOINT": "http://127.0.0.1:9",
    }
    # By path with `evaluate` alone (what load_metric does), without importing torch through hf_compress: faster.
    code = textwrap.dedent(
        f"""
        import evaluate
        ner = evaluate.load({metric_path("seqeval")!r}, keep_in_memory=True).compute(
            predictions=[["B-PER", "O"]], references=[["B-PER", "B-LOC"]]
        )
        qa = evaluate.load({metric_path("squad")!r}, keep_in_memory=True).compute(
            predictions=[{{"id": "a", "prediction_text": "big red fox"}}],
            references=[{{"id": "a", "answers": {{"text": ["a big red dog barks"], "answer_start": [0]}}}}],
        )
        print(ner["overall_f1"], qa["f1"])
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # NER: 1 right of 1 predicted and 2 references -> P 1, R 1/2, F1 2/3. QA: 4/7 as above, in percent.
    assert [float(x) for x in proc.stdout.split()[-2:]] == pytest.approx([2 / 3, 400 / 7])


def test_embedding_agreement_equals_a_computation_by_hand():
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(12, 6))
    student = teacher + 0.3 * rng.normal(size=(12, 6))
    result = load_metric("embedding_agreement").compute(predictions=student, references=teacher, k=3)

    def cos(a, b):
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    def nearest(rows, i):  # the 3 most similar other rows, by brute force
        return set(sorted((j for j in range(12) if j != i), key=lambda j: -cos(rows[i], rows[j]))[:3])

    assert result["mean_cosine"] == pytest.approx(np.mean([cos(student[i], teacher[i]) for i in range(12)]))
    overlap = np.mean([len(nearest(student, i) & nearest(teacher, i)) / 3 for i in range(12)])
    assert result["top_k_overlap"] == pytest.approx(overlap) and 0 < overlap < 1 and result["k"] == 3
    same = load_metric("embedding_agreement").compute(predictions=teacher, references=teacher, k=3)
    assert same["mean_cosine"] == pytest.approx(1.0) and same["top_k_overlap"] == 1.0
    with pytest.raises(ValueError, match="more than k=12"):
        load_metric("embedding_agreement").compute(predictions=teacher, references=teacher, k=12)


def test_linear_probe_scores_a_logistic_regression_on_frozen_embeddings():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(40, 4))
    labels = (train[:, 0] > 0).astype(int)  # the first dimension decides the class
    test = rng.normal(size=(20, 4))
    truth = (test[:, 0] > 0).astype(int)
    probe = load_metric("linear_probe")
    assert probe.compute(predictions=test, references=truth, train_embeddings=train, train_labels=labels) == {
        "accuracy": 1.0
    }
    flipped = probe.compute(predictions=test, references=1 - truth, train_embeddings=train, train_labels=labels)
    assert flipped == {"accuracy": 0.0}
    with pytest.raises(ValueError, match="train_embeddings/train_labels are invalid"):
        probe.compute(predictions=test, references=truth)
