"""Text classification as a task: the tokenizer properties its preparation and scoring rely on."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset, DatasetDict

from hf_compress.cli.recipe import RecipeArguments
from hf_compress.tasks import get_task
from tests.testing_utils import tiny_bert, tiny_tokenizer


def texts(n: int = 12) -> Dataset:
    rng = np.random.default_rng(0)
    rows = [" ".join(f"w{w}" for w in rng.integers(5, 900, rng.integers(2, 12))) for _ in range(n)]
    return Dataset.from_dict({"text": rows, "label": [i % 3 for i in range(n)]})


def test_a_left_padding_tokenizer_is_padded_on_the_right_and_predicts_as_the_right_one(tmp_path):
    tokenizer, model, task = tiny_tokenizer(tmp_path / "tok"), tiny_bert(), get_task("text-classification")
    data = task.prepare(texts(), tokenizer, "text", 32)
    logits_right = task.predict(model, data, tokenizer, batch_size=4)
    tokenizer.padding_side = "left"  # BERT's absolute positions would shift: other logits, other classes
    assert (task.predict(model, data, tokenizer, batch_size=4) == logits_right).all()
    batch = task.collator(tokenizer)([{"input_ids": [2, 5, 3]}, {"input_ids": [2, 3]}])
    assert batch["input_ids"][1].tolist() == [2, 3, 0] and tokenizer.padding_side == "left"


def test_max_length_beyond_the_tokenizers_model_max_length_is_refused(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    tokenizer.model_max_length = 32
    task = get_task("text-classification")
    assert len(task.prepare(texts(), tokenizer, "text", 32)) == 12
    with pytest.raises(ValueError, match="max_length=64 is invalid; allowed: at most 32, the tokenizer's model_max"):
        task.prepare(texts(), tokenizer, "text", 64)


def test_a_tokenizer_that_makes_most_words_unknown_is_refused_before_tokenising(tmp_path):
    from transformers import AutoTokenizer

    tiny_bert().save_pretrained(tmp_path / "model")  # a model folder without tokenizer files
    empty = AutoTokenizer.from_pretrained(tmp_path / "model")  # transformers 5: its 5 special tokens, nothing else
    raw, recipe = DatasetDict(train=texts()), RecipeArguments(dataset_name="unused")
    task = get_task("text-classification")
    with pytest.raises(ValueError, match=r"tokenizer='.*model' is invalid; allowed: a tokenizer that knows the data"):
        task.prepare_splits(raw, empty, recipe)
    assert len(task.prepare_splits(raw, tiny_tokenizer(tmp_path / "tok"), recipe)["train"]) == 12
