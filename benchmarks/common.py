"""Shared pieces of the benchmarks: the cached tweets teacher, evaluation and side-by-side latency."""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from hf_compress import load_tweets, minilm_path, tokenize
from hf_compress.data import TWEETS_LABELS
from hf_compress.evaluation.measure import predict

CACHE = os.environ.get("HF_COMPRESS_CACHE", os.path.expanduser("~/.cache/hf_compress"))
TEACHER_DIR = os.path.join(CACHE, "tweets-teacher-minilm")
TEACHER_EPOCHS = 1


def machine() -> str:
    """One line naming this machine for RESULTS.md: CPU model, cores, the vector extensions torch's kernels pick
    (int8 speed depends on VNNI: without it fbgemm adds int8 products in int16 pairs), torch version."""
    model, vnni = platform.processor() or platform.machine(), False
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        model = next(
            (line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), model
        )
        vnni = "avx512_vnni" in info or "avx_vnni" in info
    except OSError:
        pass
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{model}, {os.cpu_count()} cores, {capability}{' VNNI' if vnni else ''}, torch {torch.__version__}"


def run_info() -> dict:
    """Machine, date, command line and thread count: the header of every benchmark's JSON."""
    import sys

    spec = getattr(sys.modules["__main__"], "__spec__", None)  # run as `python -m benchmarks.X`: spec.name
    program = f"-m {spec.name.removesuffix('.__main__')}" if spec is not None else sys.argv[0]
    return {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python", program, *sys.argv[1:]]),
        "threads": torch.get_num_threads(),
    }


def write_json(path: str, data: dict) -> None:
    """A benchmark's results as JSON at `path` (its folder made if missing)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        json.dump(data, f, indent=1)


def tweets_tokenized(tokenizer=None):
    """Tokenised tweets with the MiniLM tokenizer."""
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(minilm_path())
    return tokenize(load_tweets(), tokenizer), tokenizer


def _tweets_trainer(model, tokenizer, data, output_dir: str, **fields) -> Trainer:
    """A Trainer fine-tuning a tweets teacher on the whole train split: 1 epoch, batch 32, 6% warm-up, weight decay
    0.01, seed 0, no checkpoints unless `fields` ask for them."""
    settings = dict(
        num_train_epochs=TEACHER_EPOCHS, per_device_train_batch_size=32, per_device_eval_batch_size=128,
        warmup_steps=0.06, weight_decay=0.01, save_strategy="no", report_to="none", seed=0,
    )  # fmt: skip
    args = TrainingArguments(output_dir=output_dir, **{**settings, **fields})
    return Trainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )


def teacher_path() -> str:
    """Directory of the teacher fine-tuned on the full tweets train split; trains it once if missing."""
    if os.path.exists(os.path.join(TEACHER_DIR, "config.json")):
        return TEACHER_DIR
    data, tokenizer = tweets_tokenized()
    set_seed(0)  # the new classifier head is drawn from torch's global generator (see cli/train.finetune_teacher)
    model = AutoModelForSequenceClassification.from_pretrained(
        minilm_path(),
        num_labels=3,
        id2label=dict(enumerate(TWEETS_LABELS)),
        label2id={n: i for i, n in enumerate(TWEETS_LABELS)},
    )
    trainer = _tweets_trainer(model, tokenizer, data, TEACHER_DIR + "-run", learning_rate=1e-4, logging_steps=50)
    start = time.time()
    trainer.train()
    print(f"teacher trained in {time.time() - start:.0f} s")
    trainer.save_model(TEACHER_DIR)
    return TEACHER_DIR


MPNET_TEACHER_DIR = os.path.join(CACHE, "tweets-teacher-mpnet")


def mpnet_teacher_path() -> str:
    """The 12 x 768 teacher of #37: all-mpnet-base-v2 (`task-data://all-mpnet-base-v2`) fine-tuned on the full tweets
    train split as the MiniLM teacher is (1 epoch, batch 32, 6% warm-up; lr 5e-5, the usual rate for a base-size
    model), cached in MPNET_TEACHER_DIR; trains it once if missing.

    On this 2-core machine that takes hours, so it checkpoints every 50 steps and resumes from the last checkpoint
    when run again (an interrupted session loses at most 50 steps). Each run's wall seconds, steps and peak resident
    memory up to its last checkpoint are kept in MPNET_TEACHER_DIR-run/segments.json (updated at every checkpoint,
    so a stopped run keeps them), the total written beside the teacher (training.json)."""
    import json
    import resource

    from transformers.trainer_utils import get_last_checkpoint

    from hf_compress.task_data import all_mpnet_base_v2_dir

    if os.path.exists(os.path.join(MPNET_TEACHER_DIR, "config.json")):
        return MPNET_TEACHER_DIR
    source = all_mpnet_base_v2_dir()
    tokenizer = AutoTokenizer.from_pretrained(source)
    data = tokenize(load_tweets(), tokenizer)
    set_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        source,
        num_labels=3,
        id2label=dict(enumerate(TWEETS_LABELS)),
        label2id={n: i for i, n in enumerate(TWEETS_LABELS)},
    )
    run_dir = MPNET_TEACHER_DIR + "-run"
    trainer = _tweets_trainer(
        model, tokenizer, data, run_dir, learning_rate=5e-5, logging_steps=10,
        save_strategy="steps", save_steps=50, save_total_limit=1,
    )  # fmt: skip
    last = get_last_checkpoint(run_dir) if os.path.isdir(run_dir) else None
    start, first_step = time.time(), 0
    if last is not None:
        first_step = int(last.rsplit("-", 1)[-1])
        print(f"resuming from {last}")
    log = os.path.join(run_dir, "segments.json")
    earlier = json.load(open(log)) if os.path.exists(log) else []
    # Segments end at checkpoints: a run that is stopped keeps the time of the steps its last checkpoint holds, which
    # is where the next run resumes.
    earlier = [x for x in earlier if x.get("last_step", 0) <= first_step]

    def record(step: int) -> list[dict]:
        segment = {
            "seconds": round(time.time() - start, 1),
            "steps": step - first_step,
            "last_step": step,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "machine": machine(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
        os.makedirs(run_dir, exist_ok=True)
        with open(log, "w") as f:
            json.dump(earlier + [segment], f, indent=2)
        return earlier + [segment]

    class RecordAtCheckpoints(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            record(state.global_step)

    trainer.add_callback(RecordAtCheckpoints())
    trainer.train(resume_from_checkpoint=last)
    segments = record(trainer.state.global_step)
    trainer.save_model(MPNET_TEACHER_DIR)
    tokenizer.save_pretrained(MPNET_TEACHER_DIR)
    total = {
        "seconds": sum(x["seconds"] for x in segments),
        "steps": trainer.state.global_step,
        "peak_rss_mb": max(x["peak_rss_mb"] for x in segments),
        "segments": segments,
    }
    with open(os.path.join(MPNET_TEACHER_DIR, "training.json"), "w") as f:
        json.dump(total, f, indent=2)
    print(f"teacher trained in {total['seconds']:.0f} s over {len(segments)} run(s), peak {total['peak_rss_mb']} MB")
    return MPNET_TEACHER_DIR


def pretrained_student(teacher):
    """The pretrained MiniLM (not fine-tuned on tweets) with a fresh classifier labelled like the teacher."""
    return AutoModelForSequenceClassification.from_pretrained(
        minilm_path(),
        num_labels=teacher.config.num_labels,
        id2label=teacher.config.id2label,
        label2id=teacher.config.label2id,
    )


def accuracy(model, dataset, tokenizer) -> float:
    """Accuracy on a tokenised labelled dataset."""
    logits = predict(model, dataset, tokenizer)
    return float((logits.argmax(-1) == np.asarray(dataset["label"])).mean())


def training_args(output_dir: str, seed: int, epochs: float, **extra) -> dict:
    """Training arguments every benchmark arm shares, so that arms differ only in what they compare."""
    return dict(
        output_dir=output_dir,
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        learning_rate=1e-4,
        warmup_steps=0.06,
        weight_decay=0.01,
        logging_steps=50,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        **extra,
    )


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step."""

    def __init__(self):
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def compress_teacher_copy(
    teacher,
    data,
    tokenizer,
    output_dir: str,
    n_train: int,
    epochs: float,
    cache: dict,
    student=None,
    seed: int = 0,
    callbacks: list | None = None,
    **fields,
):
    """Compress a copy of the teacher while distilling from it (T=2, α=0.9), save it to `output_dir`; return seconds.

    `fields` are CompressionTrainingArguments fields (pruning, FFN pruning, ...). Arms that train on the same
    examples in the same order share `cache`, the teacher's logits (the values are those the teacher computes).
    `student` replaces the copy of the teacher (e.g. the pretrained, not fine-tuned, checkpoint). `seed` sets the
    order of the (fixed) training examples and the dropout. `fields` may also replace the pruning schedule (10% to 70%
    of training, masks every 5 steps); `callbacks` run after the trainer's own.
    """
    from hf_compress import CompressionTrainer, CompressionTrainingArguments

    student = student or AutoModelForSequenceClassification.from_pretrained(teacher_path())
    train = data["train"].shuffle(seed=1000).select(range(n_train))
    with tempfile.TemporaryDirectory() as workdir:
        args = CompressionTrainingArguments(
            **training_args(workdir, seed, epochs),
            temperature=2.0,
            alpha=0.9,
            cache_teacher_logits=True,
            **{"pruning_start": 0.1, "pruning_end": 0.7, "pruning_frequency": 5, **fields},
        )
        trainer = CompressionTrainer(
            model=student,
            teacher_model=teacher,
            args=args,
            train_dataset=train,
            data_collator=DataCollatorWithPadding(tokenizer),
        )
        for callback in callbacks or []:  # after the pruning callback, so they see this step's masks
            trainer.add_callback(callback)
        trainer._logit_cache = cache
        start = time.time()
        trainer.train()
        seconds = time.time() - start
        trainer.save_model(output_dir)
    return seconds


def wait_for_teacher(timeout_s: float) -> str:
    """The cached teacher's directory once its weights are written (another process may be training it right now)."""
    needed = ("config.json", "model.safetensors", "tokenizer.json")
    start = time.time()
    while not all(os.path.exists(os.path.join(TEACHER_DIR, f)) for f in needed):
        if time.time() - start > timeout_s:
            raise SystemExit(
                f"{TEACHER_DIR} is not complete after {timeout_s:.0f} s; train it with `python -m benchmarks.common`"
            )
        time.sleep(30)
    return TEACHER_DIR


def speedup_rows(models: dict, tokenizer, quick: bool, tokenizers: dict | None = None) -> tuple[dict, dict]:
    """Median latency at batch 1 and 32 of every model, interleaved on one thread, and each one's speed-up over the
    model named "teacher"; returns (rows by name, repeats by batch size). `tokenizers`: a model's own tokenizer
    (after vocabulary pruning), by name."""
    from hf_compress.evaluation.measure import latency_ms

    torch.set_num_threads(1)
    repeats = {1: 5 if quick else 40, 32: 3 if quick else 15}
    ms = {bs: latency_ms(models, tokenizer, bs, repeats=repeats[bs], tokenizers=tokenizers) for bs in (1, 32)}
    rows = {
        name: {
            "latency_ms_batch1": round(ms[1][name], 2),
            "latency_ms_batch32": round(ms[32][name], 1),
            "speedup_batch1": round(ms[1]["teacher"] / ms[1][name], 2),
            "speedup_batch32": round(ms[32]["teacher"] / ms[32][name], 2),
        }
        for name in models
    }
    for name, row in rows.items():
        print(f"{name}: batch 1 {row['speedup_batch1']:.2f}×, batch 32 {row['speedup_batch32']:.2f}×", flush=True)
    return rows, repeats


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--teacher", "all-mpnet-base-v2"]:  # the 12 x 768 teacher of #37 (hours here; resumable)
        path = mpnet_teacher_path()
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path)
        data = tokenize(load_tweets(), tokenizer)
        print(f"teacher test accuracy: {accuracy(model, data['test'], tokenizer):.4f}")
        sys.exit(0)
    path = teacher_path()
    data, tokenizer = tweets_tokenized()
    set_seed(0)  # the new classifier head is drawn from torch's global generator (see cli/train.finetune_teacher)
    model = AutoModelForSequenceClassification.from_pretrained(path)
    print(f"teacher test accuracy: {accuracy(model, data['test'], tokenizer):.4f}")
