"""SQuAD 2.0 exact match and F1 as an `evaluate` module: the official v2.0 evaluation script's rules, with the
answerable (HasAns) and unanswerable (NoAns) questions apart and the best no-answer threshold."""

import logging
import math

import datasets
import evaluate

from hf_compress.checks import invalid
from hf_compress.metrics.answers import exact_match, normalize_answer, token_f1
from hf_compress.metrics.info import metric_info

_DESCRIPTION = (
    "Extractive question answering with unanswerable questions, scored as the official SQuAD 2.0 evaluation script "
    "does (evaluate-v2.0.py). An unanswerable question has no gold answer and is right only when the prediction is "
    "empty (after normalisation: lower-cased, punctuation and the articles a/an/the removed, whitespace collapsed). "
    "Exact match compares normalised strings; F1 is the harmonic mean of the precision and recall of the bag of "
    "normalised tokens shared with a gold answer, and 1 when both are empty. Each question takes its best score over "
    "its gold answers; a prediction whose no_answer_probability is above no_answer_threshold counts as empty. Scores "
    "are in percent (0-100), over all questions, the answerable ones (HasAns) and the unanswerable ones (NoAns). "
    "best_exact / best_f1 are the scores at the no_answer_probability threshold that maximises them, and "
    "best_exact_thresh / best_f1_thresh that threshold (predict no answer above it)."
)
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of dict): {"id": str, "prediction_text": str, "no_answer_probability": float} per question;
        "" predicts that there is no answer. no_answer_probability is any score that grows with the model's belief
        that there is none (a probability, or the null score minus the best span score).
    references (list of dict): {"id": str, "answers": {"text": [str, ...], "answer_start": [int, ...]}} per question,
        as in the Hub's `squad_v2` dataset; empty lists: unanswerable.
    no_answer_threshold (float): a prediction whose no_answer_probability is above it counts as "" (default 1.0).
Returns:
    exact, f1 (float): in percent; total (int): questions.
    HasAns_exact, HasAns_f1, HasAns_total: the same over the answerable questions (when there are some).
    NoAns_exact, NoAns_f1, NoAns_total: the same over the unanswerable questions (when there are some).
    best_exact, best_exact_thresh, best_f1, best_f1_thresh: the best score over no-answer thresholds and the
        threshold reaching it first (-inf when answering no question is best).
Example:
    >>> squad_v2 = evaluate.load("hf_compress/metrics/squad_v2")
    >>> squad_v2.compute(
    ...     predictions=[{"id": "q1", "prediction_text": "", "no_answer_probability": 0.0}],
    ...     references=[{"id": "q1", "answers": {"text": [], "answer_start": []}}],
    ... )["exact"]
    100.0
"""
_CITATION = """\
@inproceedings{rajpurkar-etal-2018-know,
  title={Know What You Don{'}t Know: Unanswerable Questions for {SQ}u{AD}},
  author={Rajpurkar, Pranav and Jia, Robin and Liang, Percy},
  booktitle={Proceedings of ACL 2018},
  year={2018},
  url={https://aclanthology.org/P18-2124},
}
"""
logger = logging.getLogger(__name__)


def best_threshold(answered: dict, unanswered: dict, no_answer: dict) -> tuple[float, float]:
    """(best total score, threshold): predict no answer for a question when its no_answer score is above the threshold.

    `answered[q]` is q's score when its text is kept, `unanswered[q]` when it is replaced by "". The sweep starts with
    every question unanswered (threshold -inf) and answers them in increasing no_answer order, as the official
    `find_best_thresh`; questions with equal scores are answered together (a threshold cannot split them).
    """
    total = best = sum(unanswered.values())
    threshold = -math.inf
    order = sorted(no_answer, key=no_answer.get)
    for i, q in enumerate(order):
        total += answered[q] - unanswered[q]
        last_of_tie = i + 1 == len(order) or no_answer[order[i + 1]] != no_answer[q]
        if last_of_tie and total > best:
            best, threshold = total, no_answer[q]
    return best, threshold


class SquadV2(evaluate.Metric):
    """SQuAD 2.0 exact match and F1, in percent, overall, HasAns and NoAns, with the best no-answer threshold."""

    def _info(self) -> evaluate.MetricInfo:
        text = datasets.Value("string")
        answers = datasets.Sequence({"text": text, "answer_start": datasets.Value("int32")})
        features = {
            "predictions": {"id": text, "prediction_text": text, "no_answer_probability": datasets.Value("float64")},
            "references": {"id": text, "answers": answers},
        }
        urls = ["https://rajpurkar.github.io/SQuAD-explorer/"]
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, features, reference_urls=urls)

    def _compute(self, predictions, references, no_answer_threshold: float = 1.0) -> dict:
        by_id = {}
        for i, prediction in enumerate(predictions):
            if prediction["id"] in by_id:  # two answers to one question: which one counts would be arbitrary
                raise invalid(f"predictions[{i}].id", prediction["id"], "each question id at most once")
            by_id[prediction["id"]] = (prediction["prediction_text"], prediction["no_answer_probability"])
        has_answer, scores, no_answer = {}, {"exact": {}, "f1": {}}, {}
        unanswered = 0
        for i, reference in enumerate(references):
            question = reference["id"]
            if question in has_answer:
                raise invalid(f"references[{i}].id", question, "each question id once")
            texts = reference["answers"]["text"]
            has_answer[question] = bool(texts)
            if question not in by_id:  # scored 0, as the squad (v1.1) module does
                unanswered += 1
                continue
            golds = [t for t in texts if normalize_answer(t)] or [""]  # the official script's gold answers
            text, no_answer[question] = by_id[question]
            scores["exact"][question] = max(exact_match(text, gold) for gold in golds)
            scores["f1"][question] = max(token_f1(text, gold, empty_matches_empty=True) for gold in golds)
        if unanswered:
            logger.warning("%d of %d questions have no prediction; each scores 0", unanswered, len(references))
        # What each predicted question scores when its answer is replaced by "": 1 if it has no gold answer.
        if_empty = {q: float(not has_answer[q]) for q in no_answer}
        result = {}
        for kind, raw in scores.items():
            final = {q: if_empty[q] if no_answer[q] > no_answer_threshold else s for q, s in raw.items()}
            result[kind] = 100.0 * sum(final.values()) / len(references)
            for name, wanted in (("HasAns", True), ("NoAns", False)):
                group = [q for q, has in has_answer.items() if has == wanted]
                if group:
                    result[f"{name}_{kind}"] = 100.0 * sum(final.get(q, 0.0) for q in group) / len(group)
                    result[f"{name}_total"] = len(group)
            best, threshold = best_threshold(raw, if_empty, no_answer)
            result[f"best_{kind}"], result[f"best_{kind}_thresh"] = 100.0 * best / len(references), threshold
        result["total"] = len(references)
        return result
