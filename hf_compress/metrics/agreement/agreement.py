"""Teacher–student agreement as an `evaluate` metric module: how often the student predicts the teacher's class."""

import datasets
import evaluate
import numpy as np

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
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references) -> dict:
        same = np.asarray(predictions) == np.asarray(references)
        return {"agreement": float(same.mean()) if len(same) else 0.0}
