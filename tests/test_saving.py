import os

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from hf_compress import DistillationTrainer, DistillationTrainingArguments
from hf_compress.trainer.saving import staged_directory
from tests.testing_utils import tiny_batch, tiny_bert, tiny_dataset


def logits_of(model) -> torch.Tensor:
    batch = tiny_batch()
    batch.pop("labels")
    with torch.no_grad():
        return model.eval()(**batch).logits


def make_trainer(tmp_path, student_seed=5):
    args = DistillationTrainingArguments(
        output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, disable_tqdm=True, max_steps=1
    )
    return DistillationTrainer(
        model=tiny_bert(seed=student_seed), teacher_model=tiny_bert(seed=1), args=args, train_dataset=tiny_dataset(8)
    )


def test_interrupted_final_save_leaves_the_previous_model_loadable(tmp_path, monkeypatch):
    previous = tiny_bert(seed=9)
    previous.save_pretrained(tmp_path / "out")
    (tmp_path / "out" / "checkpoint-1").mkdir()
    expected = logits_of(previous)
    trainer = make_trainer(tmp_path)

    def crash_midway(self, save_directory, **kwargs):
        self.config.save_pretrained(save_directory)  # the config is written, the weights half-way, then it dies
        with open(os.path.join(save_directory, "model.safetensors"), "wb") as f:
            f.write(b"\0" * 64)
        raise KeyboardInterrupt

    monkeypatch.setattr(type(trainer.model), "save_pretrained", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_model()
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert torch.equal(logits_of(reloaded), expected)
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging folder left behind


def test_completed_final_save_replaces_the_model_and_keeps_checkpoints(tmp_path):
    tiny_bert(seed=9).save_pretrained(tmp_path / "out")
    (tmp_path / "out" / "checkpoint-1").mkdir()
    (tmp_path / "out" / "pytorch_model.bin").write_bytes(b"stale")  # a file the new save does not write
    trainer = make_trainer(tmp_path)
    trainer.save_model()
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out")
    assert torch.equal(logits_of(reloaded), logits_of(trainer.model))
    assert (tmp_path / "out" / "checkpoint-1").is_dir()
    assert not (tmp_path / "out" / "pytorch_model.bin").exists()
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_staged_directory_into_a_new_folder(tmp_path):
    with staged_directory(str(tmp_path / "new")) as staging:
        open(os.path.join(staging, "a.txt"), "w").write("x")
    assert (tmp_path / "new" / "a.txt").read_text() == "x"


def _pickle_only_checkpoint(directory):
    model = tiny_bert(seed=1)
    model.config.save_pretrained(directory)
    torch.save(model.state_dict(), os.path.join(directory, "pytorch_model.bin"))
    return model


def test_pickled_teacher_is_refused_unless_the_user_opts_in(tmp_path):
    teacher = _pickle_only_checkpoint(tmp_path / "teacher")
    args = dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        use_cpu=True,
        teacher_model_name_or_path=str(tmp_path / "teacher"),
    )
    with pytest.raises(OSError, match="safetensors"):
        DistillationTrainer(model=tiny_bert(seed=2), args=DistillationTrainingArguments(**args))
    opted_in = DistillationTrainer(
        model=tiny_bert(seed=2),
        args=DistillationTrainingArguments(**args, teacher_model_init_kwargs={"use_safetensors": False}),
    )
    assert torch.equal(opted_in.teacher.classifier.weight, teacher.classifier.weight)


# ---------------------------------------------------------------- finalization


def compression_trainer(output_dir, **overrides):
    """A tiny distil + prune (weights and FFN neurons) + int8 run that writes Trainer checkpoints at steps 3 and 6."""
    from hf_compress import CompressionTrainer, CompressionTrainingArguments, create_student
    from tests.testing_utils import training_args

    kwargs = dict(
        max_steps=6, save_strategy="steps", save_steps=3, target_sparsity=0.5, ffn_sparsity=0.5, pruning_start=1,
        pruning_end=4, pruning_frequency=1, quantization="dynamic-int8", hidden_loss_weight=1.0,
    )  # fmt: skip
    kwargs.update(overrides)
    teacher = tiny_bert(seed=1, num_hidden_layers=4, hidden_size=48)
    return CompressionTrainer(
        model=create_student(tiny_bert(seed=1, num_hidden_layers=4), num_hidden_layers=2),
        teacher_model=teacher,
        args=training_args(CompressionTrainingArguments, output_dir, **kwargs),
        train_dataset=tiny_dataset(48),
    )


def int8_logits(model) -> torch.Tensor:
    batch = tiny_batch()
    batch.pop("labels")
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.mark.parametrize("folder", ["x-checkpoint-final", "checkpoint", "checkpoint-5"])
def test_a_final_save_is_finalized_whatever_its_folder_is_called(tmp_path, folder):
    import json

    trainer = compression_trainer(tmp_path / "run")
    trainer.train()
    out = tmp_path / folder
    trainer.save_model(str(out))
    config = json.loads((out / "config.json").read_text())
    assert config["intermediate_size"] == 32  # half of 64 FFN neurons sliced away
    assert config["quantization_config"]["quant_method"] == "hf_compress_int8"
    assert {"distillation", "pruning", "quantization"} <= set(config["compression"])
    assert list(config["compression"]).index("pruning") < list(config["compression"]).index("quantization")
    report = json.loads((out / "pruning_report.json").read_text())
    assert report["ffn"]["intermediate_size"] == {"before": 64, "after": 32}
    assert report["sparsity"] == pytest.approx(0.5, abs=1e-3)
    files = os.listdir(out)
    assert "training_args.json" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    # After finalize(), trainer.model is what was saved.
    reloaded = AutoModelForSequenceClassification.from_pretrained(out)
    torch.testing.assert_close(int8_logits(reloaded), int8_logits(trainer.model), rtol=0, atol=1e-6)
    assert not any(k.startswith("hf_compress_") for k in reloaded.state_dict())

    # Trainer's own checkpoints of the same run stay unfinalized and resumable.
    checkpoint = tmp_path / "run" / "checkpoint-3"
    saved = json.loads((checkpoint / "config.json").read_text())
    assert saved["intermediate_size"] == 64 and "quantization_config" not in saved
    assert "pruning" not in saved.get("compression", {}) and not (checkpoint / "pruning_report.json").exists()
    assert (checkpoint / "pruning_state.safetensors").exists()
    resumed = compression_trainer(tmp_path / "run")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    torch.testing.assert_close(int8_logits(resumed.model), int8_logits(trainer.model), rtol=0, atol=1e-5)


def test_finalize_runs_once_and_training_after_it_is_refused(tmp_path):
    trainer = compression_trainer(tmp_path, max_steps=4, save_strategy="no", quantization="none")
    trainer.train()  # finalizes at the end
    model = trainer.model
    sliced = model.config.intermediate_size
    assert trainer.finalize() is model and model.config.intermediate_size == sliced == 32
    assert trainer.hidden_projection is not None and not hasattr(model, "hf_compress_hidden_projection")
    with pytest.raises(RuntimeError, match="train\\(\\) after finalize\\(\\) is refused"):
        trainer.train()


def test_finalize_without_training_is_the_same_step(tmp_path):
    trainer = compression_trainer(tmp_path, max_steps=4, save_strategy="no", ffn_sparsity=0.0, quantization="none")
    trainer.finalize()
    assert "pruning" in trainer.model.config.compression and "distillation" in trainer.model.config.compression
    with pytest.raises(RuntimeError, match="finalize"):
        trainer.train()


def test_saved_folders_get_the_permissions_of_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        trainer = make_trainer(tmp_path)
        trainer.save_model()
    finally:
        os.umask(old)
    assert (os.stat(tmp_path / "out").st_mode & 0o777) == 0o755
    assert all((os.stat(tmp_path / "out" / f).st_mode & 0o777) == 0o644 for f in os.listdir(tmp_path / "out"))
