"""Macro-averaged F1 as an `evaluate` metric module: the unweighted mean of the per-class F1 scores."""

import evaluate
import numpy as np

from hf_compress.metrics.info import CLASS_IDS, metric_info

_DESCRIPTION = (
    "Macro-F1: F1 = 2·precision·recall / (precision + recall) for each class, then the plain mean over classes, "
    "so a rare class weighs as much as a frequent one. A class never predicted nor present scores nothing unless "
    "named in `labels`; a class with no true or predicted example has F1 = 0 (scikit-learn's zero_division=0)."
)
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class ids.
    references (list of int): true class ids.
    labels (list of int, optional): the classes to average over; by default those in predictions or references.
Returns:
    macro_f1 (float): in [0, 1].
    per_class_f1 (dict of int to float): the F1 of each averaged class.
Example:
    >>> macro_f1 = evaluate.load("hf_compress/metrics/macro_f1")
    >>> macro_f1.compute(predictions=[0, 0, 1, 1], references=[0, 1, 1, 1])["macro_f1"]
    0.7333333333333334
"""
_CITATION = ""


class MacroF1(evaluate.Metric):
    """Unweighted mean of the per-class F1 scores."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, CLASS_IDS)

    def _compute(self, predictions, references, labels=None) -> dict:
        predictions, references = np.asarray(predictions), np.asarray(references)
        classes = sorted(set(predictions.tolist()) | set(references.tolist())) if labels is None else list(labels)
        scores = {}
        for c in classes:
            true_positive = int(((predictions == c) & (references == c)).sum())
            # F1 = 2TP / (2TP + FP + FN), which avoids dividing by a zero precision or recall.
            denominator = int((predictions == c).sum() + (references == c).sum())
            scores[int(c)] = 2 * true_positive / denominator if denominator else 0.0
        return {"macro_f1": float(np.mean(list(scores.values()))) if scores else 0.0, "per_class_f1": scores}
