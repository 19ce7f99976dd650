"""Accuracy as an `evaluate` metric module: the fraction of predicted classes equal to the references."""

import evaluate
import numpy as np

from hf_compress.metrics.info import CLASS_IDS, metric_info

_DESCRIPTION = "Accuracy: the fraction of predictions equal to their reference, optionally weighted per example."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    sample_weight (list of float, optional): a weight per example; every example counts once by default.
Returns:
    accuracy (float): in [0, 1].
Example:
    >>> accuracy = evaluate.load("hf_compress/metrics/accuracy")
    >>> accuracy.compute(predictions=[0, 1, 2, 1], references=[0, 1, 1, 1])
    {'accuracy': 0.75}
"""
# Written for hf_compress because the Hub-hosted `evaluate-metric/accuracy` script cannot be fetched offline.
_CITATION = ""


class Accuracy(evaluate.Metric):
    """Fraction of correct predictions."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, CLASS_IDS)

    def _compute(self, predictions, references, sample_weight=None) -> dict:
        correct = np.asarray(predictions) == np.asarray(references)
        weights = np.ones(len(correct)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
        if len(weights) != len(correct):
            raise ValueError(f"sample_weight has {len(weights)} values; allowed: one per prediction ({len(correct)})")
        total = weights.sum()
        return {"accuracy": float((weights * correct).sum() / total) if total else 0.0}
