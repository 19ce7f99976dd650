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
