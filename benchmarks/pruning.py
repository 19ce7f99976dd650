"""Unstructured pruning on tweets: sparsity × importance (magnitude, movement, Taylor), each with distillation.

Usage: python -m benchmarks.pruning [--quick] [--sparsities 0.5 0.7 0.8 0.9] [--methods magnitude movement taylor]
       [--n-train 4000] [--epochs 1] [--part accuracy|timing|all]
The student starts as a copy of the fine-tuned MiniLM teacher (6 layers), or with --student pretrained as the
pretrained MiniLM that is fine-tuned while pruned (Sanh et al. 2020's setting), and is distilled from the teacher.
Every arm sees the same examples in the same order, so the teacher's logits are computed once and shared through
the DistillationTrainer's logit cache (the values are identical to running the teacher).
The timing part measures PruningTrainer's step time against plain Trainer's in the same run.
Writes benchmarks/results/pruning.json (after every arm) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import zlib

import torch
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from hf_compress import PruningTrainer, PruningTrainingArguments
from hf_compress.evaluation.measure import bytes_on_disk, latency_ms, linear_sparsity

from .common import (
    StepTimer,
    accuracy,
    compress_teacher_copy,
    pretrained_student,
    run_info,
    teacher_path,
    training_args,
    tweets_tokenized,
)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def compressed_bytes(model_dir: str) -> int:
    """Size of the safetensors file after zlib (level 1): what zeros would save under a generic compressor."""
    with open(os.path.join(model_dir, "model.safetensors"), "rb") as f:
        return len(zlib.compress(f.read(), 1))


def run_arm(method: str, sparsity: float, teacher, data, tokenizer, opts, cache: dict) -> tuple[dict, object]:
    """Prune a copy of the teacher to `sparsity` with `method` while distilling; measure the saved model."""
    with tempfile.TemporaryDirectory() as workdir:
        final = os.path.join(workdir, "final")
        fields = dict(pruning_method=method, target_sparsity=sparsity, pruning_scope=opts.scope)
        if opts.student == "pretrained":
            fields["student"] = pretrained_student(teacher)
        seconds = compress_teacher_copy(
            teacher, data, tokenizer, final, opts.n_train, opts.epochs, cache, seed=opts.seed, **fields
        )
        size, packed = bytes_on_disk(final), compressed_bytes(final)
        model = AutoModelForSequenceClassification.from_pretrained(final)  # the stock checkpoint, zeros baked in
    row = {
        "student": opts.student,
        "scope": opts.scope,
        "seed": opts.seed,
        "method": method,
        "target_sparsity": sparsity,
        "encoder_linear_sparsity": linear_sparsity(model.bert.encoder),
        "accuracy": accuracy(model, data["test"] if not opts.quick else data["test"].select(range(300)), tokenizer),
        "bytes_on_disk": size,
        "zlib_bytes": packed,
        "train_seconds": seconds,
    }
    return row, model


def timing_part(data, tokenizer, quick: bool, steps: int = 30, frequency: int = 10) -> dict:
    """Step time of plain Trainer vs PruningTrainer (each method): same model, data and batch, interleaved.

    The mean includes the mask updates (every `frequency` steps, all in the pruning ramp); the median leaves them out.
    """
    steps = 6 if quick else steps
    train = data["train"].shuffle(seed=0).select(range(32 * steps))
    collator = DataCollatorWithPadding(tokenizer)
    arms = ["plain Trainer", "PruningTrainer movement", "PruningTrainer taylor", "PruningTrainer magnitude"]
    times: dict[str, list[float]] = {arm: [] for arm in arms}
    for _ in range(2):  # two interleaved rounds, so a slow spell of the machine hits every arm
        for arm in arms:
            with tempfile.TemporaryDirectory() as workdir:
                model = AutoModelForSequenceClassification.from_pretrained(teacher_path())
                timer = StepTimer()
                common = training_args(workdir, 0, 1)
                if arm == "plain Trainer":
                    trainer = Trainer(
                        model=model, args=TrainingArguments(**common), train_dataset=train, data_collator=collator
                    )
                else:
                    args = PruningTrainingArguments(
                        **common, pruning_method=arm.split()[-1], target_sparsity=0.9, pruning_frequency=frequency
                    )
                    trainer = PruningTrainer(model=model, args=args, train_dataset=train, data_collator=collator)
                trainer.add_callback(timer)
                trainer.train()
                times[arm].extend(timer.times[2:])  # the first steps allocate
    medians = {arm: statistics.median(t) for arm, t in times.items()}
    means = {arm: statistics.mean(t) for arm, t in times.items()}
    return {
        "steps_per_arm": steps,
        "pruning_frequency": frequency,
        "median_step_seconds": medians,
        "mean_step_seconds": means,
        "ratio_to_plain": {arm: m / medians["plain Trainer"] for arm, m in medians.items()},
        "mean_ratio_to_plain": {arm: m / means["plain Trainer"] for arm, m in means.items()},
    }


def overhead_part(repeats: int = 10) -> dict:
    """Time the pruner's own work on MiniLM's encoder Linears: per step, and per mask update (global top-k)."""
    from hf_compress import Pruner, select_targets

    model = AutoModelForSequenceClassification.from_pretrained(teacher_path())
    targets = select_targets(model)
    for weight in targets.values():
        weight.grad = torch.randn_like(weight) * 1e-3
    result = {"target_weights": sum(w.numel() for w in targets.values())}
    for method in ("movement", "taylor", "magnitude"):
        pruner = Pruner(targets, method, 0.9, 0, 100, 1, "global")
        pruner.set_horizon(100)
        per_step, update = [], []
        for step in range(1, repeats + 1):
            start = time.perf_counter()
            pruner.before_optimizer_step()
            pruner.apply_masks()
            per_step.append(time.perf_counter() - start)
            start = time.perf_counter()
            pruner.on_step_end(step)
            update.append(time.perf_counter() - start)
        result[method] = {
            "per_step_seconds": statistics.median(per_step),
            "mask_update_seconds": statistics.median(update),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny subsets: checks the script, not the numbers")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9])
    parser.add_argument("--methods", nargs="+", default=["magnitude", "movement", "taylor"])
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--part", choices=["accuracy", "timing", "overhead", "all"], default="all")
    parser.add_argument(
        "--student",
        choices=["teacher-copy", "pretrained"],
        default="teacher-copy",
        help="start from a copy of the fine-tuned teacher, or from the pretrained MiniLM (Sanh et al.'s setting)",
    )
    parser.add_argument(
        "--scope", choices=["global", "per_layer"], default="global", help="pruning_scope of every arm"
    )
    parser.add_argument("--seed", type=int, default=0, help="training seed of every arm (example order, dropout)")
    parser.add_argument("--timing-steps", type=int, default=30, help="optimizer steps per arm and round (timing)")
    parser.add_argument("--timing-frequency", type=int, default=10, help="pruning_frequency of the timed arms")
    parser.add_argument("--out", default=os.path.join(RESULTS, "pruning.json"))
    opts = parser.parse_args()
    if opts.quick:
        opts.n_train = 96
    if opts.part == "overhead":  # no data, no evaluation: the pruner's own arithmetic
        overhead = {**run_info(), "overhead": overhead_part()}
        with open(opts.out, "w") as f:
            json.dump(overhead, f, indent=2)
        print(json.dumps(overhead["overhead"]))
        return
    data, tokenizer = tweets_tokenized()
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path())
    test = data["test"].select(range(300)) if opts.quick else data["test"]
    with tempfile.TemporaryDirectory() as tmp:
        teacher.save_pretrained(tmp)
        teacher_size, teacher_packed = bytes_on_disk(tmp), compressed_bytes(tmp)
    result = {
        **run_info(),
        "quick": opts.quick,
        "n_train": opts.n_train,
        "epochs": opts.epochs,
        "teacher": {
            "accuracy": accuracy(teacher, test, tokenizer),
            "bytes_on_disk": teacher_size,
            "zlib_bytes": teacher_packed,
        },
        "rows": [],
    }
    os.makedirs(os.path.dirname(opts.out), exist_ok=True)

    def save() -> None:
        with open(opts.out, "w") as f:
            json.dump(result, f, indent=2)

    if opts.part in ("timing", "all"):
        result["timing"] = timing_part(data, tokenizer, opts.quick, opts.timing_steps, opts.timing_frequency)
        print(json.dumps(result["timing"]), flush=True)
        save()
    if opts.part in ("accuracy", "all"):
        cache: dict = {}
        sparsest = None
        for sparsity in opts.sparsities:
            for method in opts.methods:
                row, model = run_arm(method, sparsity, teacher, data, tokenizer, opts, cache)
                result["rows"].append(row)
                print(json.dumps(row), flush=True)
                save()
                if sparsity == max(opts.sparsities):
                    sparsest = model
        # Zeros in a dense tensor do not make dense kernels faster: measure it rather than assert it.
        for batch in (1, 32):
            lat = latency_ms({"dense teacher": teacher, "sparsest pruned": sparsest}, tokenizer, batch, repeats=20)
            result[f"latency_ms_batch{batch}"] = lat
        save()
        teacher_acc = result["teacher"]["accuracy"]
        print("| sparsity | method | encoder sparsity | accuracy | vs teacher | MB | zlib MB |")
        print("|---|---|---|---|---|---|---|")
        for r in result["rows"]:
            print(
                f"| {r['target_sparsity']:.0%} | {r['method']} | {r['encoder_linear_sparsity']:.1%} | "
                f"{r['accuracy']:.4f} | {r['accuracy'] / teacher_acc:.1%} | {r['bytes_on_disk'] / 1e6:.1f} | "
                f"{r['zlib_bytes'] / 1e6:.1f} |"
            )
    print(f"wrote {opts.out}")


if __name__ == "__main__":
    main()
