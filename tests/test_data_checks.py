"""`check_trainer_datasets`: data a model's head cannot train on is refused when the trainer is built, naming the
dataset and what is wrong (the label-count and string-label cases run through the trainer in test_bad_inputs)."""

from __future__ import annotations

import pytest
from datasets import ClassLabel, Dataset
from transformers import BertForQuestionAnswering

from hf_compress.trainer.data_checks import check_trainer_datasets
from tests.testing_utils import tiny_bert, tiny_bert_config

TOKENS = {"input_ids": [[5, 6], [7, 8]], "attention_mask": [[1, 1], [1, 1]]}


def _named(names):
    return Dataset.from_dict({**TOKENS, "label": [0, 1]}).cast_column("label", ClassLabel(names=names))


def _model(head: str):
    if head == "span":
        return BertForQuestionAnswering(tiny_bert_config())
    model = tiny_bert(num_labels=2)
    model.config.id2label, model.config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    return model


# (head, train, eval, what the one error says)
CASES = {
    "span-one-column": (
        "span",
        Dataset.from_dict({**TOKENS, "start_positions": [0, 1]}),
        None,
        r"^train_dataset=\"<columns \['attention_mask', 'input_ids', 'start_positions'\]>\" is invalid; "
        r"allowed: both start_positions and end_positions, or neither$",
    ),
    "not-tokenised": (
        "sequence",
        Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}),
        None,
        r"^train_dataset=\"<columns \['label', 'text'\]>\" is invalid; allowed: a tokenised dataset \(an input_ids",
    ),
    "other-names": (
        "sequence",
        _named(["pos", "neg"]),
        None,
        r"^train_dataset=\"<label names \['pos', 'neg'\]>\" is invalid; allowed: the model's labels "
        r"\{0: 'neg', 1: 'pos'\} \(the same names in order\)$",
    ),
    "eval-in-a-dict": (
        "sequence",
        _named(["neg", "pos"]),
        {"test": Dataset.from_dict({**TOKENS, "label": [0, 2]})},
        r"^eval_dataset\['test'\]='<label up to 2>' is invalid; allowed: class ids in \[0, 2\)",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_data_the_head_cannot_use_is_refused_naming_the_dataset(case):
    head, train, evaluation, message = CASES[case]
    with pytest.raises(ValueError, match=message):
        check_trainer_datasets(_model(head), train, evaluation)


def test_data_the_head_can_use_passes():
    check_trainer_datasets(_model("sequence"), _named(["neg", "pos"]), {"test": _named(["neg", "pos"])})
    both = Dataset.from_dict({**TOKENS, "start_positions": [0, 1], "end_positions": [1, 1]})
    check_trainer_datasets(_model("span"), both, Dataset.from_dict(TOKENS))
