"""DistillationTrainer on token-classification and QA heads: the loss against an independent computation, gradient
accumulation, padding, and the teacher-logit cache."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import (
    BertForQuestionAnswering,
    BertForTokenClassification,
    DataCollatorForTokenClassification,
    DataCollatorWithPadding,
)

from hf_compress import DistillationTrainer, DistillationTrainingArguments
from tests.testing_utils import VOCAB, tiny_bert_config, tiny_tokenizer, training_args

NUM_TAGS = 5


def token_model(seed: int, layers: int = 2) -> BertForTokenClassification:
    torch.manual_seed(seed)
    model = BertForTokenClassification(tiny_bert_config(num_labels=NUM_TAGS, num_hidden_layers=layers))
    with torch.no_grad():  # random tiny models give near-uniform logits: sharpen them so the KL is far from zero
        model.classifier.weight.mul_(30)
    return model.eval()


def span_model(seed: int, layers: int = 2) -> BertForQuestionAnswering:
    torch.manual_seed(seed)
    model = BertForQuestionAnswering(tiny_bert_config(num_labels=2, num_hidden_layers=layers))
    with torch.no_grad():
        model.qa_outputs.weight.mul_(30)
    return model.eval()


def token_rows(n: int, seed: int = 0) -> Dataset:
    """Sentences of 4-12 random tokens; [CLS]/[SEP] and every third position (later sub-tokens) labelled -100."""
    g = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "labels": []}
    for _ in range(n):
        length = int(torch.randint(4, 13, (1,), generator=g))
        ids = [2, *torch.randint(5, VOCAB, (length - 2,), generator=g).tolist(), 3]
        labels = torch.randint(0, NUM_TAGS, (length,), generator=g).tolist()
        labels = [-100 if i in (0, length - 1) or i % 3 == 2 else y for i, y in enumerate(labels)]
        rows["input_ids"].append(ids)
        rows["labels"].append(labels)
    rows["attention_mask"] = [[1] * len(ids) for ids in rows["input_ids"]]
    return Dataset.from_dict(rows)


def span_rows(n: int, seed: int = 0) -> Dataset:
    """Windows of 6-14 random tokens with a start <= end inside them (0, [CLS], for some: no answer here)."""
    g = torch.Generator().manual_seed(seed)
    rows = {"input_ids": [], "start_positions": [], "end_positions": []}
    for i in range(n):
        length = int(torch.randint(6, 15, (1,), generator=g))
        rows["input_ids"].append([2, *torch.randint(5, VOCAB, (length - 2,), generator=g).tolist(), 3])
        start = 0 if i % 4 == 0 else int(torch.randint(1, length - 1, (1,), generator=g))
        end = start if start == 0 else int(torch.randint(start, length - 1, (1,), generator=g))
        rows["start_positions"].append(start)
        rows["end_positions"].append(end)
    rows["attention_mask"] = [[1] * len(ids) for ids in rows["input_ids"]]
    return Dataset.from_dict(rows)


def token_reference(student, teacher, batch, temperature: float, alpha: float) -> torch.Tensor:
    """alpha·T²·KL + (1-alpha)·CE, each summed over the labelled tokens and divided by their number."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    s, t = student(**inputs).logits, teacher(**inputs).logits
    kd = ce = 0.0
    n = 0
    for i in range(s.shape[0]):
        for j in range(s.shape[1]):
            y = int(batch["labels"][i, j])
            if y == -100:
                continue
            p_t = F.softmax(t[i, j] / temperature, -1)
            kd += temperature**2 * (p_t * (p_t.log() - F.log_softmax(s[i, j] / temperature, -1))).sum()
            ce += -F.log_softmax(s[i, j], -1)[y]
            n += 1
    return (alpha * kd + (1 - alpha) * ce) / n


def span_reference(student, teacher, batch, temperature: float, alpha: float) -> torch.Tensor:
    """Per example, over its real tokens only: T²·(KL_start + KL_end)/2 and (CE_start + CE_end)/2; their mean."""
    inputs = {k: v for k, v in batch.items() if not k.endswith("_positions")}
    s, t = student(**inputs), teacher(**inputs)
    total = 0.0
    for i in range(batch["input_ids"].shape[0]):
        real = int(batch["attention_mask"][i].sum())  # right padding: the first `real` positions
        kd = ce = 0.0
        for key, gold in (("start_logits", "start_positions"), ("end_logits", "end_positions")):
            s_i, t_i = getattr(s, key)[i, :real], getattr(t, key)[i, :real]
            p_t = F.softmax(t_i / temperature, -1)
            kd += temperature**2 * (p_t * (p_t.log() - F.log_softmax(s_i / temperature, -1))).sum() / 2
            ce += -F.log_softmax(s_i, -1)[int(batch[gold][i])] / 2
        total += alpha * kd + (1 - alpha) * ce
    return total / batch["input_ids"].shape[0]


HEADS = {
    "token": (token_model, token_rows, DataCollatorForTokenClassification, token_reference),
    "span": (span_model, span_rows, DataCollatorWithPadding, span_reference),
}


def make_trainer(tmp_path, head: str, dataset=None, student=None, **overrides) -> DistillationTrainer:
    model, rows, collator, _ = HEADS[head]
    args = training_args(DistillationTrainingArguments, tmp_path / "out", **{"num_train_epochs": 1, **overrides})
    return DistillationTrainer(
        model=student if student is not None else model(seed=2),
        teacher_model=model(seed=1, layers=4),
        args=args,
        train_dataset=dataset if dataset is not None else rows(16),
        data_collator=collator(tiny_tokenizer(tmp_path / "tok")),
    )


def collate(tmp_path, head: str, rows: Dataset, **kwargs) -> dict:
    return HEADS[head][2](tiny_tokenizer(tmp_path / "tok"), **kwargs)([rows[i] for i in range(len(rows))])


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (2.0, 0.9), (4.0, 0.0), (0.5, 1.0)])
def test_loss_equals_an_independent_computation(tmp_path, head, temperature, alpha):
    trainer = make_trainer(tmp_path, head, temperature=temperature, alpha=alpha)
    batch = collate(tmp_path, head, HEADS[head][1](6, seed=3))
    assert (batch["attention_mask"] == 0).any()  # padded rows: the masking is exercised
    loss = trainer.compute_loss(trainer.model.eval(), batch)
    with torch.no_grad():
        expected = HEADS[head][3](trainer.model, trainer.teacher, batch, temperature, alpha)
    assert expected.item() > 0.01
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_padding_does_not_change_the_loss(tmp_path, head):
    trainer = make_trainer(tmp_path, head, temperature=2.0, alpha=0.5)
    rows = HEADS[head][1](5, seed=4)
    tight = collate(tmp_path, head, rows)
    padded = collate(tmp_path, head, rows, pad_to_multiple_of=32)
    assert padded["input_ids"].shape[1] == 32 > tight["input_ids"].shape[1]
    model = trainer.model.eval()
    assert trainer.compute_loss(model, padded).item() == pytest.approx(trainer.compute_loss(model, tight).item(), 1e-5)


def _one_step(tmp_path, head: str, name: str, batch_size: int, accumulation: int):
    torch.manual_seed(0)
    trainer = make_trainer(
        tmp_path / name,
        head,
        dataset=HEADS[head][1](8, seed=5),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=1e-2,
        optim="sgd",
        max_grad_norm=0.0,
        temperature=2.0,
        alpha=0.4,
    )
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    logged = next(h for h in trainer.state.log_history if "loss" in h)
    return before, {k: v.clone() for k, v in trainer.model.state_dict().items()}, logged


@pytest.mark.parametrize("head", HEADS)
def test_gradient_accumulation_gives_the_same_update_and_logs(tmp_path, head):
    before, big, big_log = _one_step(tmp_path, head, "big", batch_size=8, accumulation=1)
    _, accumulated, accumulated_log = _one_step(tmp_path, head, "acc", batch_size=2, accumulation=4)
    for key, value in big.items():
        assert torch.allclose(value, accumulated[key], atol=1e-6), key
    assert any(not torch.equal(before[k], big[k]) for k in big)  # the step really moved the weights
    # The logged loss is the loss of the step's 8 examples at the starting weights: items counted as in the formula
    # (labelled tokens; examples), not as Trainer would count a batch without `labels`.
    model, rows, _, reference = HEADS[head]
    student, teacher = model(seed=2), model(seed=1, layers=4)
    student.load_state_dict(before)
    with torch.no_grad():
        expected = reference(student, teacher, collate(tmp_path, head, rows(8, seed=5)), 2.0, 0.4)
    assert big_log["loss"] == pytest.approx(expected.item(), rel=1e-4)
    for key in ("loss", "kd_loss", "ce_loss"):
        assert accumulated_log[key] == pytest.approx(big_log[key], rel=1e-4), key
    assert big_log["loss"] == pytest.approx(0.4 * big_log["kd_loss"] + 0.6 * big_log["ce_loss"], rel=1e-4)


@pytest.mark.parametrize("head", HEADS)
def test_logit_cache_gives_the_same_losses_and_runs_the_teacher_once_per_example(tmp_path, head):
    dataset = HEADS[head][1](12, seed=6)  # lengths vary: each epoch's batches pad every example differently
    common = dict(num_train_epochs=3, per_device_train_batch_size=4, max_grad_norm=0.0, alpha=0.7)
    plain = make_trainer(tmp_path / "plain", head, dataset=dataset, **common)
    cached = make_trainer(tmp_path / "cached", head, dataset=dataset, cache_teacher_logits=True, **common)
    calls = []
    cached.teacher.register_forward_hook(
        lambda module, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    plain.train()
    cached.train()
    for key in ("loss", "kd_loss", "ce_loss"):
        plain_values = [h[key] for h in plain.state.log_history if key in h]
        cached_values = [h[key] for h in cached.state.log_history if key in h]
        assert len(plain_values) == 9 and cached_values == pytest.approx(plain_values, rel=1e-4), key
    assert sum(calls) == len(dataset) == len(cached._logit_cache)
