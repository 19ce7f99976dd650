import pytest
import torch

from hf_compress import CompressionTrainer, CompressionTrainingArguments, create_student
from tests.testing_utils import tiny_bert, tiny_dataset, training_args


def make_trainer(output_dir, wide_teacher: bool = False, **overrides) -> CompressionTrainer:
    kwargs = dict(
        max_steps=12,
        logging_steps=2,
        alpha=0.7,
        hidden_loss_weight=1.0,
        target_sparsity=0.7,
        pruning_method="taylor",
        pruning_start=2,
        pruning_end=9,
        pruning_frequency=1,
    )
    kwargs.update(overrides)
    student = create_student(tiny_bert(seed=1, num_hidden_layers=4), num_hidden_layers=2)
    # A wider teacher makes the hidden-state term train a projection: trainer state that must resume too.
    teacher = tiny_bert(seed=1, num_hidden_layers=4, hidden_size=48 if wide_teacher else 32)
    return CompressionTrainer(
        model=student,
        teacher_model=teacher,
        args=training_args(CompressionTrainingArguments, output_dir, **kwargs),
        train_dataset=tiny_dataset(48),
    )


@pytest.mark.parametrize(
    "albert",
    [{}, {"embedding_size": 16, "num_hidden_groups": 1}, {"wide_teacher": True}],
    ids=["bert", "albert", "projection"],
)
def test_interrupted_compression_run_resumes_to_the_same_result(tmp_path, albert):
    full = make_trainer(tmp_path / "full", **albert)
    full.train()
    interrupted = make_trainer(tmp_path / "run", save_strategy="steps", save_steps=5, **albert)
    interrupted.train()
    resumed = make_trainer(tmp_path / "run", **albert)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-5"))

    assert resumed.pruner.sparsity() == pytest.approx(full.pruner.sparsity())
    for name, mask in full.pruner.masks.items():
        assert torch.equal(mask, resumed.pruner.masks[name]), name
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    for key, value in full_state.items():
        assert torch.allclose(value, resumed_state[key], atol=1e-6), key
    logged = [
        {k: h[k] for k in ("loss", "kd_loss", "sparsity") if k in h} for h in full.state.log_history if "loss" in h
    ]
    resumed_logs = [
        {k: h[k] for k in ("loss", "kd_loss", "sparsity") if k in h} for h in resumed.state.log_history if "loss" in h
    ]
    assert logged[-1] == pytest.approx(resumed_logs[-1], rel=1e-4)
    if "embedding_size" in albert:
        assert resumed.model.config.model_type == "albert"
    if "wide_teacher" in albert:
        for key, value in full.hidden_projection.state_dict().items():
            assert torch.allclose(value, resumed.hidden_projection.state_dict()[key], atol=1e-6), key


# ---- a recipe interrupted in any long stage resumes to the model of an uninterrupted run ----


class _Interrupt:
    """A TrainerCallback that presses Ctrl-C after `step` optimizer steps."""

    def __new__(cls, step: int):
        from transformers import TrainerCallback

        class Interrupt(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == step:
                    raise KeyboardInterrupt

        return Interrupt()


def _interrupting(base, step: int):
    class Interrupted(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(_Interrupt(step))

    return Interrupted


def _state(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _interrupted_finalization(*args, **kwargs):
    raise KeyboardInterrupt  # Ctrl-C once FFN pruning is baked, before int8 replaces any module


@pytest.mark.parametrize("stage", ["teacher", "training", "finalization"])
def test_an_interrupted_recipe_resumes_to_the_same_model(tmp_path, monkeypatch, capsys, stage):
    import hf_compress.cli.train as train
    import hf_compress.methods.int8.transform as int8
    import hf_compress.trainer.distillation_trainer as distillation
    from hf_compress.cli import main
    from tests.test_run import write_recipe

    values = dict(save_strategy="steps", save_steps=2, report=False, teacher_num_train_epochs=2)
    command = "distill"
    if stage == "finalization":  # two finalize steps (FFN slicing, then int8): interrupted between them
        values.update(
            ffn_sparsity=0.5, pruning_start=0, pruning_end=1, pruning_frequency=1, quantization="dynamic-int8"
        )
        command = "compress"
    full = write_recipe(tmp_path / "full", **values)
    assert main([command, full]) == 0
    recipe = write_recipe(tmp_path / "run", **values)
    out = tmp_path / "run" / "out"
    with monkeypatch.context() as patch:
        if stage == "teacher":
            patch.setattr(train, "Trainer", _interrupting(train.Trainer, 3))
        elif stage == "training":
            patch.setattr(distillation, "DistillationTrainer", _interrupting(distillation.DistillationTrainer, 3))
        else:
            patch.setattr(int8, "apply_quantization", _interrupted_finalization)
        with pytest.raises(KeyboardInterrupt):
            main([command, recipe])
    if stage == "teacher":  # no teacher folder an unfinished fine-tuning could be mistaken for
        assert not (out / "teacher").exists() and (out / "teacher-checkpoints" / "checkpoint-2").is_dir()
    else:
        assert (out / "teacher" / "hf_compress_teacher.json").exists() and (out / "checkpoint-2").is_dir()
        assert not (out / "model.safetensors").exists()  # no final model a half-finalized run could be taken for
    teacher_before = (out / "teacher" / "model.safetensors").stat().st_mtime_ns if stage != "teacher" else None
    steps = sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))
    last = f"checkpoint-{steps[-1]}" if steps else None  # training: checkpoint-2; finalization: the trained model
    capsys.readouterr()
    assert main([command, recipe]) == 0
    printed = capsys.readouterr().out
    if stage == "teacher":
        assert "resuming from" in printed and "teacher-checkpoints" in printed
        assert not (out / "teacher-checkpoints").exists()
    else:
        # Interrupted in finalization, the run resumes from its last checkpoint (the trained model) and finalizes it.
        assert "reusing the teacher" in printed and f"resuming from {out / last}" in printed
        assert (out / "teacher" / "model.safetensors").stat().st_mtime_ns == teacher_before
    for name in ("teacher", None):
        expected = _state(tmp_path / "full" / "out" / (name or ""))
        got = _state(out / (name or ""))
        assert expected.keys() == got.keys()
        for key, value in expected.items():
            assert torch.allclose(value, got[key], atol=1e-6), (name, key)


def test_a_resume_flag_naming_nothing_is_refused_before_any_work(tmp_path, capsys):
    from hf_compress.cli import main
    from tests.test_run import write_recipe

    recipe = write_recipe(tmp_path)
    assert main(["distill", recipe, "--resume_from_checkpoint", str(tmp_path / "nowhere")]) == 2
    assert f"resume_from_checkpoint={str(tmp_path / 'nowhere')!r} is invalid" in capsys.readouterr().err
    assert not (tmp_path / "out" / "teacher").exists()
