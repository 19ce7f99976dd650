"""A downstream score of frozen sentence embeddings as an `evaluate` metric module: a logistic-regression probe."""

import datasets
import evaluate
import numpy as np

from hf_compress.metrics.info import metric_info

_DESCRIPTION = (
    "Linear probe: a logistic regression (scikit-learn, L2, C=1, lbfgs) is fitted on the frozen embeddings of a "
    "labelled training set and scored by accuracy on a labelled test set, as SentEval and MTEB's classification "
    "tasks score sentence embeddings. Comparing a compressed model's probe with its teacher's says how much of the "
    "embedding's usable information survived."
)
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): embeddings of the test sentences, (n_test, d).
    references (list of int): their class ids.
    train_embeddings (list of list of float): embeddings of the training sentences, (n_train, d).
    train_labels (list of int): their class ids.
    max_iter (int): lbfgs iterations, default 1000.
Returns:
    accuracy (float): test accuracy of the probe, in [0, 1].
Example:
    >>> probe = evaluate.load("hf_compress/metrics/linear_probe")
    >>> probe.compute(predictions=[[1.0], [-1.0]], references=[1, 0], train_embeddings=[[2.0], [-2.0]],
    ...               train_labels=[1, 0])
    {'accuracy': 1.0}
"""
_CITATION = """@inproceedings{conneau2018senteval,
  title={SentEval: An Evaluation Toolkit for Universal Sentence Representations},
  author={Conneau, Alexis and Kiela, Douwe}, booktitle={LREC}, year={2018}}"""

FEATURES = {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}


class LinearProbe(evaluate.Metric):
    """Test accuracy of a logistic regression fitted on frozen training embeddings."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, FEATURES)

    def _compute(self, predictions, references, train_embeddings=None, train_labels=None, max_iter: int = 1000):
        from sklearn.linear_model import LogisticRegression

        if train_embeddings is None or train_labels is None or len(train_embeddings) != len(train_labels):
            raise ValueError(
                "train_embeddings/train_labels are invalid; allowed: both given, one label per training embedding"
            )
        probe = LogisticRegression(max_iter=max_iter)
        probe.fit(np.asarray(train_embeddings, dtype=np.float64), np.asarray(train_labels))
        predicted = probe.predict(np.asarray(predictions, dtype=np.float64))
        return {"accuracy": float((predicted == np.asarray(references)).mean())}
