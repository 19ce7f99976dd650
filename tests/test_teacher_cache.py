"""hf_compress.methods.distillation.teacher_cache: the on-disk teacher-output cache.

What it promises: the outputs the live teacher gives (whatever the padding), read back by a later run, a resumed run
and another process, never by another teacher or another tokenization; complete entries only after an interrupted
write; an index of at most 64 bytes of RAM per example beyond the rows (which stay on disk); and, under DDP with two
ranks, one teacher call per example over several epochs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tracemalloc

import pytest
import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from hf_compress import DistillationTrainer, DistillationTrainingArguments, create_student
from hf_compress.methods.distillation.loss import head_logits
from hf_compress.methods.distillation.teacher_cache import TeacherOutputCache, teacher_fingerprint
from tests.family_models import QA, SEQUENCE, TOKEN, family_model, family_tokenizer
from tests.testing_utils import tiny_bert, tiny_dataset, training_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXTS = ["the dog sleeps by the river", "birds migrate south in autumn", "hello", "a quiet melody, then drums"]


class Counting(nn.Module):
    """Wraps a teacher and counts the examples it runs on."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.examples = 0

    def forward(self, **inputs):
        self.examples += inputs["input_ids"].shape[0]
        return self.model(**inputs)


def live(teacher, batch) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return head_logits(teacher(**batch))


def assert_same_where_read(cached: dict, expected: dict, mask: torch.Tensor) -> None:
    """Equal on what the loss reads: every logit of a sequence head, the real tokens' of a per-token head."""
    assert cached.keys() == expected.keys()
    for name, value in expected.items():
        where = mask.bool() if value.dim() >= 2 and value.shape[1] == mask.shape[1] else slice(None)
        assert torch.allclose(cached[name][where], value[where], atol=1e-6), name


@pytest.mark.parametrize("head", [SEQUENCE, TOKEN, QA], ids=["seq", "tok", "qa"])
def test_a_later_run_reads_what_the_teacher_gave_whatever_the_padding(tmp_path, head):
    tokenizer = family_tokenizer("bert", tmp_path / "tokenizer")
    teacher = Counting(family_model("bert", tokenizer, head, perturb=True))
    first = tokenizer(TEXTS, padding=True, return_tensors="pt")
    cached, rate = TeacherOutputCache(str(tmp_path / "cache")).logits(teacher, first)
    assert rate == 0.0 and teacher.examples == 4
    assert_same_where_read(cached, live(teacher.model, first), first["attention_mask"])
    # Another run (a new cache object on the same folder), other padding and order: all hits, the same outputs.
    again = tokenizer(TEXTS[::-1], padding="max_length", max_length=20, return_tensors="pt")
    later = TeacherOutputCache(str(tmp_path / "cache"))
    cached, rate = later.logits(teacher, again)
    assert rate == 1.0 and teacher.examples == 4 and later.teacher_examples == 0
    expected = live(teacher.model, again)
    assert {k: v.shape for k, v in cached.items()} == {k: v.shape for k, v in expected.items()}
    assert_same_where_read(cached, expected, again["attention_mask"])
    if head != SEQUENCE:  # padding positions read as zeros
        assert all(float(v[~again["attention_mask"].bool()].abs().max()) == 0 for v in cached.values())


def test_another_teacher_or_other_tokens_never_hit(tmp_path):
    teacher = tiny_bert(seed=1)
    batch = {k: v for k, v in tiny_dataset(4, seed=3).with_format("torch")[:].items() if k != "label"}
    cache = TeacherOutputCache(str(tmp_path))
    cache.logits(teacher, batch)
    other = tiny_bert(seed=1)
    with torch.no_grad():
        other.bert.encoder.layer[0].output.dense.bias[0] += 1e-3  # one weight moved
    assert teacher_fingerprint(other) != teacher_fingerprint(teacher)
    assert teacher_fingerprint(tiny_bert(seed=1)) == teacher_fingerprint(teacher)  # same weights, another object
    cached, rate = TeacherOutputCache(str(tmp_path)).logits(other, batch)
    assert rate == 0.0
    assert_same_where_read(cached, live(other, batch), batch["attention_mask"])
    segments = dict(batch, token_type_ids=torch.ones_like(batch["input_ids"]))  # the same ids, other segments
    assert TeacherOutputCache(str(tmp_path)).logits(teacher, segments)[1] == 0.0
    shifted = dict(batch, input_ids=(batch["input_ids"] + 1) % 100)  # another tokenization
    assert TeacherOutputCache(str(tmp_path)).logits(teacher, shifted)[1] == 0.0


def test_an_interrupted_write_leaves_only_complete_entries(tmp_path):
    teacher = Counting(tiny_bert(seed=1))
    batch = {k: v for k, v in tiny_dataset(6, seed=4).with_format("torch")[:].items() if k != "label"}
    cache = TeacherOutputCache(str(tmp_path))
    cache.logits(teacher, batch)
    cache.close()
    (index,) = [os.path.join(cache.directory, n) for n in os.listdir(cache.directory) if n.endswith(".index")]
    with open(index, "r+b") as f:  # the last record cut in the middle, as a crash would leave it
        f.truncate(os.path.getsize(index) - 20)
    later = TeacherOutputCache(str(tmp_path))
    cached, rate = later.logits(teacher, batch)
    assert len(later) == 6 and later.teacher_examples == 1 and rate == pytest.approx(5 / 6)
    assert_same_where_read(cached, live(teacher.model, batch), batch["attention_mask"])


class HashTeacher(nn.Module):
    """A stand-in teacher whose 3 logits depend on the tokens, to fill a cache with many examples quickly."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor([0.5, -1.0, 2.0]))

    def forward(self, input_ids, attention_mask=None, **kwargs):
        return SequenceClassifierOutput(logits=input_ids.float().mean(1, keepdim=True) * self.scale)


def test_memory_per_sequence_example_beyond_the_payload_is_at_most_64_bytes(tmp_path):
    n, teacher = 6016, HashTeacher()  # 188 batches of 32 distinct examples
    batches = [torch.arange(i, i + 64).reshape(32, 2) * 7919 % 30000 for i in range(0, 2 * n, 64)]
    cache = TeacherOutputCache(str(tmp_path), refresh_every=1024)
    cache.logits(teacher, {"input_ids": batches[0][:1]})  # folder, meta and part files opened (one example)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for ids in batches:
        cache.logits(teacher, {"input_ids": ids})
    cache.refresh()  # the buffered entries folded into the index
    growth = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    tracemalloc.stop()
    assert len(cache) == n and cache.teacher_examples == n
    assert cache.index_bytes / len(cache) == 30
    assert growth / n <= 64, f"{growth / n:.1f} bytes of RAM per example"
    assert os.path.getsize(next(os.path.join(cache.directory, f) for f in os.listdir(cache.directory)
                                if f.endswith(".data"))) == n * 3 * 4  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# Through DistillationTrainer: a second run and a resumed run call the teacher on no example.


def trainer_for(tmp_path, name: str, teacher, **overrides) -> DistillationTrainer:
    fields = {"num_train_epochs": 2, "cache_teacher_logits": True, "teacher_cache_dir": str(tmp_path / "cache")}
    args = training_args(DistillationTrainingArguments, tmp_path / name, **{**fields, **overrides})
    student = create_student(tiny_bert(seed=1, num_hidden_layers=4), num_hidden_layers=2)
    return DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=tiny_dataset(16))


def counted(model: nn.Module) -> list[int]:
    """The number of examples of each forward of `model`, appended as it runs."""
    calls: list[int] = []
    model.register_forward_pre_hook(lambda m, a, kw: calls.append(kw["input_ids"].shape[0]), with_kwargs=True)
    return calls


def test_a_second_run_and_a_resumed_run_reuse_the_teacher_outputs(tmp_path):
    calls = counted(teacher := tiny_bert(seed=1, num_hidden_layers=4))
    first = trainer_for(tmp_path, "first", teacher, save_strategy="epoch")
    first.train()
    assert sum(calls) == 16 and len(first._logit_cache) == 16
    # A new run, with the teacher loaded again (another object, the same weights).
    calls_again = counted(teacher_again := tiny_bert(seed=1, num_hidden_layers=4))
    second = trainer_for(tmp_path, "second", teacher_again)
    second.train()
    assert sum(calls_again) == 0
    rates = [h["teacher_cache_hit_rate"] for h in second.state.log_history if "teacher_cache_hit_rate" in h]
    assert rates and set(rates) == {1.0}
    resumed = trainer_for(tmp_path, "first", teacher_again, num_train_epochs=3, save_strategy="epoch")
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.epoch == 3 and sum(calls_again) == 0


def test_teacher_cache_dir_without_the_cache_is_refused(tmp_path):
    message = r"teacher_cache_dir='x' is invalid; allowed: null unless cache_teacher_logits"
    with pytest.raises(ValueError, match=message):
        training_args(DistillationTrainingArguments, tmp_path / "out", teacher_cache_dir="x")


@pytest.mark.skipif(not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
                    reason="torchrun not installed")  # fmt: skip
def test_two_ddp_ranks_call_the_teacher_once_per_example(tmp_path):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    script = os.path.join(ROOT, "tests", "ddp_teacher_cache_script.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    counts = []
    for run in ("first", "second"):
        command = [torchrun, "--nproc_per_node", "2", "--master_port", "29541", script, str(tmp_path), run]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        counts.append([int((tmp_path / run / f"rank{r}.count").read_text()) for r in (0, 1)])
    first, second = counts
    assert sum(first) == 32 and all(c > 0 for c in first)  # 32 examples, 3 epochs: the teacher ran once on each
    assert second == [0, 0]  # the next run read them all
    shutil.rmtree(tmp_path / "cache")
