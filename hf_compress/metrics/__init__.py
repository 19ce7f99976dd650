"""Task metrics as `evaluate` modules shipped in the package, loaded by path (no Hub download).

Classification: accuracy, macro_f1, agreement (student vs teacher). Token classification (NER): seqeval (entity-level
P/R/F1 by the `seqeval` package). Extractive QA: squad (SQuAD v1.1 exact match and F1, in percent) and squad_v2 (SQuAD
2.0, with unanswerable questions: exact match and F1 overall, HasAns and NoAns, and the best no-answer threshold).
Sentence embeddings: embedding_agreement (mean cosine to the teacher, top-k neighbour overlap with it) and
linear_probe (logistic regression on frozen embeddings of a labelled set).
"""

from __future__ import annotations

import functools
import os

import numpy as np

METRICS = (
    "accuracy", "macro_f1", "agreement", "seqeval", "squad", "squad_v2", "embedding_agreement", "linear_probe",
)  # fmt: skip


def metric_path(name: str) -> str:
    """Path of a packaged metric script, `hf_compress/metrics/<name>/<name>.py`."""
    if name not in METRICS:
        raise ValueError(f"metric={name!r} is not packaged with hf_compress; allowed: {', '.join(METRICS)}")
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), name, f"{name}.py")


@functools.cache
def load_metric(name: str):
    """`evaluate.load` of a packaged metric by its local path, so it works offline (HF_EVALUATE_OFFLINE=1)."""
    import evaluate  # imported here: it pulls in `datasets` and is only needed when a metric is computed

    return evaluate.load(metric_path(name), keep_in_memory=True)  # no Arrow cache files, safe if read-only


def classification_metrics(eval_pred) -> dict[str, float]:
    """Accuracy and macro-F1 from (logits, labels), for Trainer's `compute_metrics`."""
    logits, labels = eval_pred
    predictions = np.asarray(logits).argmax(-1)
    labels = np.asarray(labels)
    return {
        "accuracy": load_metric("accuracy").compute(predictions=predictions, references=labels)["accuracy"],
        "macro_f1": load_metric("macro_f1").compute(predictions=predictions, references=labels)["macro_f1"],
    }


__all__ = ["METRICS", "classification_metrics", "load_metric", "metric_path"]
