"""The table of methods: its order, its arguments, its docs, and the lifecycle the trainers run from it."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from hf_compress import CompressionTrainer, CompressionTrainingArguments, create_student
from hf_compress.format.kinds import MODULE_KINDS
from hf_compress.methods import METHODS, STAGES, enabled_methods, get_method
from tests.testing_utils import VOCAB, tiny_bert, tiny_dataset, tiny_tokenizer, training_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = [m.name for m in METHODS]


def test_every_method_has_a_docs_page_and_known_stages():
    for method in METHODS:
        assert os.path.isfile(os.path.join(ROOT, "docs", "techniques", f"{method.name}.md")), method.name
        assert set(method.stages) <= set(STAGES)


def test_order_serves_every_stage():
    """Conversions: ALBERT before low-rank before fake quantization; finalization: the trained methods' steps (masks
    baked, FFN sliced, projection detached) before packing and int8, the vocabulary last."""
    index = NAMES.index
    assert index("albert") < index("low_rank") < index("low_bit")
    assert index("distillation") < index("pruning") < index("low_bit") < index("int8") < index("vocabulary")
    assert NAMES[-1] == "vocabulary"


def test_compression_arguments_carry_every_methods_fields():
    fields = {f.name for f in dataclasses.fields(CompressionTrainingArguments)}
    for method in METHODS:
        if method.arguments is not None:
            own = {f.name for f in dataclasses.fields(method.arguments)}
            assert own <= fields, (method.name, own - fields)


def test_every_module_kind_belongs_to_a_method_of_the_table():
    assert MODULE_KINDS and {kind.method for kind in MODULE_KINDS.values()} <= set(NAMES)


@pytest.mark.parametrize(
    "fields,expected",
    [
        ({}, ["distillation"]),
        ({"embedding_size": 16, "ffn_sparsity": 0.5}, ["albert", "distillation", "ffn_pruning"]),
        ({"weight_bits": 4, "prune_vocabulary": True}, ["distillation", "low_bit", "vocabulary"]),
        ({"low_rank_ratio": 0.5, "quantization": "dynamic-int8"}, ["low_rank", "distillation", "int8"]),
    ],
)
def test_enabled_methods_follow_the_fields(tmp_path, fields, expected):
    args = CompressionTrainingArguments(output_dir=str(tmp_path), **fields)
    assert [m.name for m in enabled_methods(args)] == expected


def test_unknown_method_and_stage_are_refused():
    with pytest.raises(ValueError, match="method='svd' is invalid; allowed: 'student'"):
        get_method("svd")
    with pytest.raises(ValueError, match="stage='train_' is invalid"):
        list(enabled_methods(object(), "train_"))


def test_python_users_get_vocabulary_pruning_at_finalization(tmp_path):
    """prune_vocabulary on the arguments: finalize() cuts the word embeddings to the train split's tokens after int8,
    and the trainer's tokenizer becomes the matching one (saved beside the model)."""
    teacher = tiny_bert(seed=1, num_hidden_layers=4)
    data = tiny_dataset(32)
    used = sorted({t for ids in data["input_ids"] for t in ids})
    args = training_args(
        CompressionTrainingArguments,
        tmp_path / "out",
        max_steps=2,
        prune_vocabulary=True,
        quantization="dynamic-int8",
    )
    trainer = CompressionTrainer(
        model=create_student(teacher, num_hidden_layers=2),
        teacher_model=teacher,
        args=args,
        train_dataset=data,
        processing_class=tiny_tokenizer(tmp_path / "tok"),
    )
    trainer.train()
    model = trainer.model
    rows = model.get_input_embeddings().num_embeddings
    assert len(used) <= rows < VOCAB and model.config.vocab_size == rows
    assert len(trainer.processing_class) == rows
    assert list(model.config.compression)[-1] == "vocabulary"  # recorded last, after quantization
    trainer.save_model()
    assert (tmp_path / "out" / "tokenizer.json").exists()
    with torch.no_grad():
        model(input_ids=torch.tensor([[2, rows - 1, 3]]))  # every kept id is a row


def test_vocabulary_pruning_without_a_tokenizer_is_refused_before_training(tmp_path):
    teacher = tiny_bert(seed=1, num_hidden_layers=4)
    args = training_args(CompressionTrainingArguments, tmp_path, max_steps=2, prune_vocabulary=True)
    with pytest.raises(ValueError, match="prune_vocabulary=True is invalid; allowed: false without a tokenizer"):
        CompressionTrainer(
            model=create_student(teacher, 2), teacher_model=teacher, args=args, train_dataset=tiny_dataset()
        )
