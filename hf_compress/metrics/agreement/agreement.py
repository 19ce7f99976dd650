"""Teacher–student agreement as an `evaluate` metric module: how often the student predicts the teacher's class."""

import evaluate
import numpy as np

from hf_compress.metrics.info import CLASS_IDS, metric_info

_DESCRIPTION = (
    "Agreement: the fraction of examples on which the student's predicted class equals the teacher's, whatever the "
    "true label. It measures how faithfully a compressed model imitates its reference, and needs no labels."
)
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): the student's (compressed model's) predicted class ids.
    references (list of int): the teacher's (reference model's) predicted class ids, on the same examples.
Returns:
    agreement (float): in [0, 1].
Example:
    >>> agreement = evaluate.load("hf_compress/metrics/agreement")
    >>> agreement.compute(predictions=[2, 0, 1, 1], references=[2, 0, 0, 1])
    {'agreement': 0.75}
"""
_CITATION = ""


class Agreement(evaluate.Metric):
    """Fraction of examples where student and teacher predict the same class."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, CLASS_IDS)

    def _compute(self, predictions, references) -> dict:
        same = np.asarray(predictions) == np.asarray(references)
        return {"agreement": float(same.mean()) if len(same) else 0.0}
