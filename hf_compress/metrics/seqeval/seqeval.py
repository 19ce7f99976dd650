"""Entity-level precision, recall and F1 for sequence labelling (NER) as an `evaluate` module, scored by `seqeval`."""

import datasets
import evaluate
from seqeval import scheme as seqeval_scheme
from seqeval.metrics import accuracy_score, classification_report

from hf_compress.checks import invalid
from hf_compress.metrics.info import metric_info

_DESCRIPTION = (
    "Entity-level scores for IOB-tagged sequences (NER), computed by the `seqeval` package. An entity counts as "
    "correct only if its type and its exact span (first and last token) match a reference entity. Precision, recall "
    "and F1 are micro-averaged over all entities, and reported per entity type; token accuracy is the fraction of "
    "tags equal to the reference tag (every token, 'O' included). The default mode is conlleval-compatible (the "
    "CoNLL-2000/2003 shared tasks' `conlleval` script): an entity may start with I-, and a change of type or a B- "
    "ends the previous one. mode='strict' with a `scheme` ('IOB1', 'IOB2', 'IOE1', 'IOE2', 'IOBES', 'BILOU') "
    "keeps only the entities that are well formed in that scheme, so an entity starting with I- is not one in IOB2."
)
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of str): predicted tags, one list per sequence, e.g. [["B-PER", "I-PER", "O"]].
    references (list of list of str): true tags, the same lengths as `predictions`.
    mode (str, optional): None (default, conlleval-compatible) or "strict".
    scheme (str, optional): with mode="strict": "IOB1", "IOB2", "IOE1", "IOE2", "IOBES" or "BILOU"; by default
        seqeval detects IOB2, IOE2 or IOBES from the references.
    suffix (bool, optional): tags are written "PER-B" instead of "B-PER". Default False.
Returns:
    overall_precision, overall_recall, overall_f1 (float): micro-averaged over entities, in [0, 1].
    overall_accuracy (float): token accuracy in [0, 1].
    <TYPE> (dict): for each entity type in predictions or references, its precision, recall, f1 and number (the
        count of reference entities of that type).
    A score whose denominator is zero (no predicted or no reference entity) is 0.
Example:
    >>> seqeval = evaluate.load("hf_compress/metrics/seqeval")
    >>> seqeval.compute(predictions=[["B-PER", "I-PER", "O"]], references=[["B-PER", "I-PER", "O"]])["overall_f1"]
    1.0
"""
_CITATION = """\
@misc{seqeval,
  title={{seqeval}: A Python framework for sequence labeling evaluation},
  url={https://github.com/chakki-works/seqeval},
  author={Hiroki Nakayama},
  year={2018},
}
@inproceedings{tjong-kim-sang-de-meulder-2003-introduction,
  title={Introduction to the {C}o{NLL}-2003 Shared Task: Language-Independent Named Entity Recognition},
  author={Tjong Kim Sang, Erik F. and De Meulder, Fien},
  booktitle={Proceedings of CoNLL-2003},
  year={2003},
  url={https://aclanthology.org/W03-0419},
}
"""
MODES = (None, "strict")
SCHEMES = ("IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU")


class Seqeval(evaluate.Metric):
    """Entity-level micro precision/recall/F1, per-type scores and token accuracy from IOB tag sequences."""

    def _info(self) -> evaluate.MetricInfo:
        tags = datasets.Sequence(datasets.Value("string"))
        features = {"predictions": tags, "references": tags}
        urls = ["https://github.com/chakki-works/seqeval"]
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, _CITATION, features, reference_urls=urls)

    def _compute(self, predictions, references, mode=None, scheme=None, suffix=False) -> dict:
        if mode not in MODES:
            raise invalid("mode", mode, "None (conlleval-compatible) or 'strict'")
        if scheme is not None and (mode != "strict" or scheme not in SCHEMES):
            raise invalid("scheme", scheme, f"None, or with mode='strict' one of {', '.join(SCHEMES)}")
        for i, (prediction, reference) in enumerate(zip(predictions, references)):
            # seqeval joins the sequences before scoring, so a length mismatch would shift every later tag silently.
            if len(prediction) != len(reference):
                raise invalid(f"predictions[{i}]", prediction, f"{len(reference)} tags, as many as references[{i}]")
        if not any(len(r) for r in references):
            raise invalid("references", references, "at least one tag")
        report = classification_report(
            references,
            predictions,
            output_dict=True,
            mode=mode,
            scheme=None if scheme is None else getattr(seqeval_scheme, scheme),
            suffix=suffix,
            zero_division=0,  # no entity predicted (or present) scores 0, without a warning per call
        )
        micro = report.pop("micro avg")
        for average in ("macro avg", "weighted avg"):
            report.pop(average)
        scores = {
            entity_type: {
                "precision": float(row["precision"]),
                "recall": float(row["recall"]),
                "f1": float(row["f1-score"]),
                "number": int(row["support"]),
            }
            for entity_type, row in report.items()
        }
        scores["overall_precision"] = float(micro["precision"])
        scores["overall_recall"] = float(micro["recall"])
        scores["overall_f1"] = float(micro["f1-score"])
        scores["overall_accuracy"] = float(accuracy_score(references, predictions))
        return scores
