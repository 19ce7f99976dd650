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
