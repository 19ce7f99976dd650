"""Student–teacher agreement of sentence embeddings as an `evaluate` metric module: mean cosine and top-k overlap."""

import datasets
import evaluate
import numpy as np

from hf_compress.metrics.info import metric_info

_DESCRIPTION = (
    "How closely a compressed sentence-embedding model reproduces its teacher on a corpus, without labels. "
    "mean_cosine: the mean cosine similarity between the student's and the teacher's embedding of each sentence "
    "(1.0: the same directions). top_k_overlap: for each sentence, the share of its k nearest neighbours in the "
    "corpus "
    "(by cosine, itself excluded) that the student and the teacher agree on, averaged: what a semantic-search index "
    "built on the student returns compared with one built on the teacher."
)
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of float): the student's embeddings, one per sentence, (n, d).
    references (list of list of float): the teacher's embeddings of the same sentences, (n, d') (d' may differ
        from d: the overlap compares neighbour sets, only mean_cosine needs d == d').
    k (int): neighbours per sentence, default 10 (needs n > k).
Returns:
    mean_cosine (float): in [-1, 1]; None when the widths differ.
    top_k_overlap (float): in [0, 1].
    k (int): the k used.
Example:
    >>> metric = evaluate.load("hf_compress/metrics/embedding_agreement")
    >>> metric.compute(predictions=[[1, 0], [0, 1], [1, 1]], references=[[1, 0], [0, 1], [1, 1]], k=1)
    {'mean_cosine': 1.0, 'top_k_overlap': 1.0, 'k': 1}
"""
_CITATION = ""

EMBEDDINGS = {
    "predictions": datasets.Sequence(datasets.Value("float32")),
    "references": datasets.Sequence(datasets.Value("float32")),
}


def _unit(rows) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float64)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _neighbours(unit: np.ndarray, k: int) -> np.ndarray:
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)  # a sentence is not its own neighbour
    return np.argsort(-similarity, axis=1, kind="stable")[:, :k]


class EmbeddingAgreement(evaluate.Metric):
    """Mean cosine to the teacher's embeddings and top-k nearest-neighbour overlap with the teacher."""

    def _info(self) -> evaluate.MetricInfo:
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, EMBEDDINGS)

    def _compute(self, predictions, references, k: int = 10) -> dict:
        student, teacher = _unit(predictions), _unit(references)
        if len(student) != len(teacher) or len(student) <= k or k < 1:
            raise ValueError(
                f"predictions={len(student)} rows is invalid; allowed: as many rows as references ({len(teacher)}), "
                f"more than k={k} (k >= 1)"
            )
        cosine = float((student * teacher).sum(1).mean()) if student.shape[1] == teacher.shape[1] else None
        s, t = _neighbours(student, k), _neighbours(teacher, k)
        overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(s.tolist(), t.tolist())])
        return {"mean_cosine": cosine, "top_k_overlap": float(overlap), "k": k}
