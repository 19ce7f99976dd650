"""SQuAD v1.1 exact match and F1 as an `evaluate` module: the official v1.1 evaluation script's rules."""

import logging

import datasets
import evaluate

from hf_compress.checks import invalid
from hf_compress.metrics import answers
from hf_compress.metrics.info import metric_info

_DESCRIPTION = (
    "Extractive question answering scored as the official SQuAD v1.1 evaluation script does (evaluate-v1.1.py). "
    "Answers are normalised (lower-cased, punctuation removed, the articles a/an/the removed, whitespace collapsed); "
    "exact match is 1 when the normalised prediction equals a normalised gold answer; F1 is the harmonic mean of the "
    "precision and recall of the bag of normalised tokens shared with a gold answer (0 when nothing is shared). Each "
    "question takes the best score over its gold answers; the result is the mean over the references, in percent "
    "(0-100) as the official script reports, and a reference without a prediction scores 0."
)
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of dict): {"id": str, "prediction_text": str} per answered question.
    references (list of dict): {"id": str, "answers": {"text": [str, ...], "answer_start": [int, ...]}} per
        question, as in the Hub's `squad` dataset; `answer_start` is not used for scoring.
Returns:
    exact_match (float): in percent, 0 to 100.
    f1 (float): in percent, 0 to 100.
Example:
    >>> squad = evaluate.load("hf_compress/metrics/squad")
    >>> squad.compute(
    ...     predictions=[{"id": "q1", "prediction_text": "the Eiffel Tower"}],
    ...     references=[{"id": "q1", "answers": {"text": ["Eiffel Tower"], "answer_start": [4]}}],
    ... )
    {'exact_match': 100.0, 'f1': 100.0}
"""
_CITATION = """\
@inproceedings{rajpurkar-etal-2016-squad,
  title={{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text},
  author={Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy},
  booktitle={Proceedings of EMNLP 2016},
  year={2016},
  url={https://aclanthology.org/D16-1264},
}
"""
logger = logging.getLogger(__name__)


class Squad(evaluate.Metric):
    """SQuAD v1.1 exact match and F1, in percent."""

    def _info(self) -> evaluate.MetricInfo:
        text = datasets.Value("string")
        answers = datasets.Sequence({"text": text, "answer_start": datasets.Value("int32")})
        features = {
            "predictions": {"id": text, "prediction_text": text},
            "references": {"id": text, "answers": answers},
        }
        urls = ["https://rajpurkar.github.io/SQuAD-explorer/"]
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, features, reference_urls=urls)

    def _compute(self, predictions, references) -> dict:
        by_id = {}
        for i, prediction in enumerate(predictions):
            if prediction["id"] in by_id:  # two answers to one question: which one counts would be arbitrary
                raise invalid(f"predictions[{i}].id", prediction["id"], "each question id at most once")
            by_id[prediction["id"]] = prediction["prediction_text"]
        exact_match = f1 = 0.0
        seen, unanswered = set(), 0
        for i, reference in enumerate(references):
            golds = reference["answers"]["text"]
            if reference["id"] in seen:
                raise invalid(f"references[{i}].id", reference["id"], "each question id once")
            if not golds:
                raise invalid(f"references[{i}].answers.text", golds, "at least one gold answer (SQuAD v1.1)")
            seen.add(reference["id"])
            if reference["id"] not in by_id:  # the official script scores an unanswered question 0
                unanswered += 1
                continue
            prediction = by_id[reference["id"]]
            exact_match += max(answers.exact_match(prediction, gold) for gold in golds)
            f1 += max(answers.token_f1(prediction, gold, empty_matches_empty=False) for gold in golds)
        total = len(references)
        if unanswered:
            logger.warning("%d of %d questions have no prediction; each scores 0 (SQuAD v1.1)", unanswered, total)
        return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}
