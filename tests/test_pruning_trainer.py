import json
import os

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from hf_compress import PruningTrainer, PruningTrainingArguments
from tests.testing_utils import tiny_bert, tiny_dataset, training_args


def make_args(output_dir, **overrides) -> PruningTrainingArguments:
    defaults = dict(
        pruning_method="movement", target_sparsity=0.8, pruning_start=2, pruning_end=10, pruning_frequency=2
    )
    return training_args(PruningTrainingArguments, output_dir, **{**defaults, **overrides})


def make_trainer(output_dir, dataset_size=64, **overrides) -> PruningTrainer:
    return PruningTrainer(
        model=tiny_bert(seed=0), args=make_args(output_dir, **overrides), train_dataset=tiny_dataset(dataset_size)
    )


def weight_sparsity(model) -> float:
    weights = [
        m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder." in f".{n}."
    ]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def test_schedule_hits_its_targets_at_the_given_steps(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=14)
    trainer.train()
    logs = {h["step"]: h for h in trainer.state.log_history if "sparsity" in h}
    assert logs[1]["sparsity"] == 0.0 and logs[2]["sparsity"] == 0.0
    assert logs[6]["sparsity_target"] == pytest.approx(0.8 * (1 - 0.5**3))
    assert logs[6]["sparsity"] == pytest.approx(logs[6]["sparsity_target"], abs=1e-3)
    assert logs[10]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert logs[14]["sparsity"] == pytest.approx(0.8, abs=1e-3)
    observed = [logs[s]["sparsity"] for s in sorted(logs)]
    assert observed == sorted(observed)


@pytest.mark.parametrize("method", ["movement", "taylor", "magnitude"])
def test_pruned_weights_stay_exactly_zero_under_adamw_with_weight_decay(tmp_path, method):
    trainer = make_trainer(
        tmp_path,
        max_steps=30,
        pruning_method=method,
        pruning_start=0,
        pruning_end=4,
        weight_decay=0.1,
        learning_rate=1e-2,
    )
    trainer.train()
    for name, weight in trainer.pruner.targets.items():
        assert torch.all(weight[~trainer.pruner.masks[name]] == 0), name
    assert weight_sparsity(trainer.model) == pytest.approx(0.8, abs=1e-3)
    # The optimizer did act for 26 steps after the last mask update: surviving weights moved.
    assert trainer.state.global_step == 30


def test_resume_gives_the_same_masks_and_weights_as_an_uninterrupted_run(tmp_path):
    full = make_trainer(tmp_path / "full", max_steps=12)
    full.train()
    first = make_trainer(tmp_path / "part", max_steps=12, save_strategy="steps", save_steps=5)
    first.train()
    checkpoint = tmp_path / "part" / "checkpoint-5"
    assert (checkpoint / "pruning_state.safetensors").exists()
    resumed = make_trainer(tmp_path / "part", max_steps=12)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for name in full.pruner.masks:
        assert torch.equal(full.pruner.masks[name], resumed.pruner.masks[name]), name
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_final_model_is_stock_bert_with_zeros_and_a_report(tmp_path, capsys):
    trainer = make_trainer(tmp_path, max_steps=12)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final")
    assert weight_sparsity(reloaded) == pytest.approx(weight_sparsity(trainer.model))
    assert weight_sparsity(reloaded) == pytest.approx(0.8, abs=1e-3)
    assert reloaded.config.compression["pruning"]["method"] == "movement"
    report = json.loads((tmp_path / "final" / "pruning_report.json").read_text())
    assert report["sparsity"] == pytest.approx(0.8, abs=1e-3) and len(report["layers"]) == 12
    assert "total" in capsys.readouterr().out
    assert not os.path.exists(tmp_path / "final" / "pruning_state.safetensors")  # trainer state stays in checkpoints


@pytest.mark.parametrize(
    "field,value",
    [
        ("target_sparsity", 1.0),
        ("target_sparsity", -0.1),
        ("pruning_method", "random"),
        ("pruning_scope", "row"),
        ("pruning_frequency", 0),
    ],
)
def test_bad_pruning_arguments_name_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        make_args(tmp_path, **{field: value})


def test_pruning_end_before_start_is_refused(tmp_path):
    with pytest.raises(ValueError, match="pruning_end"):
        make_args(tmp_path, pruning_start=20, pruning_end=10)


def test_report_scores_attention_heads_without_removing_them(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=6, pruning_end=4)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    report = json.loads((tmp_path / "final" / "pruning_report.json").read_text())
    assert [len(row["importance"]) for row in report["heads"]] == [4, 4]
    assert all(min(row["importance"]) > 0 for row in report["heads"])
    expected = [(s / trainer.head_importance.steps).tolist() for s in trainer.head_importance.scores]
    assert [row["importance"] for row in report["heads"]] == expected and trainer.head_importance.steps == 6
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final")
    assert reloaded.config.num_attention_heads == 4 and reloaded.config.intermediate_size == 64


@pytest.mark.parametrize(
    "field,value,steps",
    [("pruning_end", 200, 10), ("pruning_start", 50, 10), ("pruning_frequency", 20, 10), ("pruning_end", 11, 10)],
)
def test_a_schedule_the_run_cannot_finish_is_refused_before_training(tmp_path, field, value, steps):
    overrides = {"pruning_start": 0, "pruning_end": 4 if field != "pruning_start" else 60, "pruning_frequency": 1}
    overrides[field] = value
    trainer = make_trainer(tmp_path, max_steps=steps, **overrides)
    before = {n: w.detach().clone() for n, w in trainer.model.named_parameters()}
    with pytest.raises(ValueError, match=f"{field}={value} is invalid.*{steps}"):
        trainer.train()
    assert trainer.state.global_step == 0
    assert all(torch.equal(w, before[n]) for n, w in trainer.model.named_parameters())


def test_the_last_scheduled_step_reaches_the_target_exactly(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=10, pruning_start=0, pruning_end=10, pruning_frequency=3)
    trainer.train()
    assert trainer.pruner.sparsity() == pytest.approx(0.8, abs=1e-3)


def test_load_best_model_at_end_restores_that_checkpoints_masks(tmp_path):
    """The best checkpoint (by eval loss) is restored with the masks it had, not with the final masks."""
    from transformers import Trainer, TrainingArguments

    data = tiny_dataset(32)
    model = tiny_bert(seed=0)
    # Fit the rows first, so that pruning can only hurt and the best checkpoint is an early, less pruned one.
    fit = TrainingArguments(str(tmp_path / "fit"), max_steps=40, learning_rate=1e-2, report_to="none", use_cpu=True)
    Trainer(model=model, args=fit, train_dataset=data).train()
    trainer = PruningTrainer(
        model=model,
        args=make_args(
            tmp_path,
            max_steps=12,
            pruning_method="taylor",
            target_sparsity=0.9,
            ffn_sparsity=0.5,
            pruning_start=4,
            pruning_end=10,
            pruning_frequency=2,
            eval_strategy="steps",
            eval_steps=2,
            save_strategy="steps",
            save_steps=2,
            load_best_model_at_end=True,
            metric_for_best_model="eval_loss",
            learning_rate=1e-4,
        ),  # fmt: skip
        train_dataset=data,
        eval_dataset=data,
    )
    trainer.train()
    best = trainer.state.best_model_checkpoint
    assert not best.endswith("checkpoint-12")  # the precondition: an earlier checkpoint was best
    trainer.save_model(str(tmp_path / "final"))
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final")
    check = PruningTrainer(model=saved, args=make_args(tmp_path / "check", target_sparsity=0.0), eval_dataset=data)
    assert check.evaluate()["eval_loss"] == pytest.approx(trainer.state.best_metric, abs=1e-6)
    state = json.loads((tmp_path / "final" / "config.json").read_text())["compression"]["pruning"]
    assert state["sparsity"] < 0.9 and state["ffn"]["intermediate_size"]["after"] > 32  # the best one's masks
