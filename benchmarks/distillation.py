"""Distillation on tweets: teacher vs students fine-tuned alone vs distilled (≥3 seeds), and step-time ratios.

Usage: python -m benchmarks.distillation [--quick] [--seeds 0 1 2] [--part accuracy|timing|all]
Writes benchmarks/results/distillation.json and prints Markdown tables for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from hf_compress import DistillationTrainer, DistillationTrainingArguments, create_student
from hf_compress.evaluation.measure import predict

from .common import StepTimer, machine, teacher_path, training_args, tweets_tokenized

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def train_student(arm: dict, teacher, data, tokenizer, seed: int, workdir: str):
    """Train one student arm and return it."""
    torch.manual_seed(seed)
    student = create_student(teacher, num_hidden_layers=arm["layers"])
    train = data["train"].shuffle(seed=1000 + seed).select(range(arm["n_train"]))
    if arm.get("unlabelled"):
        train = train.remove_columns("label")
    collator = DataCollatorWithPadding(tokenizer)
    if arm["kind"] == "alone":
        args = TrainingArguments(**training_args(workdir, seed, arm["epochs"]))
        trainer = Trainer(model=student, args=args, train_dataset=train, data_collator=collator)
    else:
        args = DistillationTrainingArguments(
            **training_args(workdir, seed, arm["epochs"]),
            temperature=arm.get("temperature", 2.0),
            alpha=arm.get("alpha", 0.5),
            cache_teacher_logits=True,
        )
        trainer = DistillationTrainer(
            model=student, teacher_model=teacher, args=args, train_dataset=train, data_collator=collator
        )
    start = time.time()
    trainer.train()
    return trainer.model, time.time() - start


def accuracy_part(seeds: list[int], quick: bool) -> dict:
    """Mean and spread of test accuracy per arm over seeds."""
    data, tokenizer = tweets_tokenized()
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path())
    test = data["test"].select(range(500)) if quick else data["test"]
    labels = torch.tensor(test["label"])
    teacher_acc = float((torch.tensor(predict(teacher, test, tokenizer)).argmax(-1) == labels).float().mean())
    n = 256 if quick else 4000
    n_small = 128 if quick else 1000
    arms = [
        {"name": "3-layer alone", "kind": "alone", "layers": 3, "n_train": n, "epochs": 1},
        {"name": "3-layer distilled (T=2, α=0.5)", "kind": "kd", "layers": 3, "n_train": n, "epochs": 1},
        {"name": "1-layer alone", "kind": "alone", "layers": 1, "n_train": n, "epochs": 1},
        {"name": "1-layer distilled (T=2, α=0.5)", "kind": "kd", "layers": 1, "n_train": n, "epochs": 1},
        {"name": f"1-layer alone, {n_small} labels", "kind": "alone", "layers": 1, "n_train": n_small, "epochs": 3},
        {
            "name": f"1-layer distilled, {n} unlabelled transfer tweets (α=1)",
            "kind": "kd",
            "layers": 1,
            "n_train": n,
            "epochs": 1,
            "alpha": 1.0,
            "unlabelled": True,
        },
    ]
    results = {"teacher_accuracy": teacher_acc, "test_examples": len(test), "arms": []}
    for arm in arms:
        accs, secs = [], []
        for seed in seeds:
            with tempfile.TemporaryDirectory() as workdir:
                model, seconds = train_student(arm, teacher, data, tokenizer, seed, workdir)
            pred = torch.tensor(predict(model, test, tokenizer)).argmax(-1)
            accs.append(float((pred == labels).float().mean()))
            secs.append(seconds)
            print(f"{arm['name']} seed {seed}: accuracy {accs[-1]:.4f} ({seconds:.0f} s)", flush=True)
        results["arms"].append({**arm, "accuracies": accs, "train_seconds": secs})
    return results


def timing_part(quick: bool) -> dict:
    """Median step time of plain Trainer vs DistillationTrainer (cold, and with a warm logit cache), one run."""
    data, tokenizer = tweets_tokenized()
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path())
    steps = 10 if quick else 40
    train = data["train"].shuffle(seed=0).select(range(32 * steps))
    collator = DataCollatorWithPadding(tokenizer)
    medians = {}
    for name in ("plain Trainer", "DistillationTrainer", "DistillationTrainer, cached logits"):
        with tempfile.TemporaryDirectory() as workdir:
            torch.manual_seed(0)
            student = create_student(teacher, num_hidden_layers=3)
            timer = StepTimer()
            if name == "plain Trainer":
                args = TrainingArguments(**training_args(workdir, 0, 1))
                trainer = Trainer(model=student, args=args, train_dataset=train, data_collator=collator)
            else:
                cached = "cached" in name
                args = DistillationTrainingArguments(**training_args(workdir, 0, 2 if cached else 1))
                args.cache_teacher_logits = cached
                trainer = DistillationTrainer(
                    model=student, teacher_model=teacher, args=args, train_dataset=train, data_collator=collator
                )
            trainer.add_callback(timer)
            trainer.train()
            # With the cache, time the second epoch only: the first fills the cache.
            times = timer.times[steps:] if "cached" in name else timer.times
            medians[name] = statistics.median(times)
            print(f"{name}: median step {medians[name] * 1000:.0f} ms over {len(times)} steps", flush=True)
    base = medians["plain Trainer"]
    return {"median_step_seconds": medians, "ratio_to_plain": {k: v / base for k, v in medians.items()}}


def summarize(paths: list[str]) -> str:
    """One Markdown table over the per-seed JSON files of separate runs (seeds split across processes)."""
    runs = [json.load(open(p)) for p in paths]
    arms: dict[str, list[float]] = {}
    teacher = None
    for run in runs:
        if "accuracy" not in run:
            continue
        teacher = run["accuracy"]["teacher_accuracy"]
        for arm in run["accuracy"]["arms"]:
            arms.setdefault(arm["name"], []).extend(arm["accuracies"])
    lines = [
        f"Teacher (fine-tuned MiniLM-L6, 6 layers): test accuracy {teacher:.4f}",
        "",
        "| student | seeds | accuracy mean ± sd | min–max | vs teacher |",
        "|---|---|---|---|---|",
    ]
    for name, accs in arms.items():
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        mean = statistics.mean(accs)
        spread = f"{min(accs):.4f}–{max(accs):.4f}"
        lines.append(f"| {name} | {len(accs)} | {mean:.4f} ± {sd:.4f} | {spread} | {mean / teacher:.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny subsets: checks the script, not the numbers")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--part", choices=["accuracy", "timing", "all"], default="all")
    parser.add_argument("--summarize", nargs="+", help="print one table from these result files and exit")
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/distillation[-part].json)")
    opts = parser.parse_args()
    if opts.summarize:
        print(summarize(opts.summarize))
        return
    result = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "quick": opts.quick,
        "threads": torch.get_num_threads(),
    }
    if opts.part in ("timing", "all"):
        result["timing"] = timing_part(opts.quick)
    if opts.part in ("accuracy", "all"):
        result["accuracy"] = accuracy_part(opts.seeds, opts.quick)
        for arm in result["accuracy"]["arms"]:
            accs = arm["accuracies"]
            spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
            print(f"| {arm['name']} | {statistics.mean(accs):.4f} ± {spread:.4f} | {min(accs):.4f}–{max(accs):.4f} |")
    os.makedirs(RESULTS, exist_ok=True)
    suffix = "" if opts.part == "all" else f"-{opts.part}"
    out = opts.out or os.path.join(RESULTS, f"distillation{suffix}{'-quick' if opts.quick else ''}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
