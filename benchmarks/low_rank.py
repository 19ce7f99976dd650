"""Low-rank factorisation of MiniLM's encoder Linears: plain vs Fisher-weighted vs activation-aware SVD, on tweets.

Usage: python -m benchmarks.low_rank [--part accuracy|latency|all] [--ratios 0.5 0.25]
       [--methods svd fisher activation] [--quick] [--out PATH]
       python -m benchmarks.low_rank --summarize PART.json ... --out benchmarks/results/low_rank.json

Every arm factorises a copy of the cached tweets teacher (`benchmarks.common.TEACHER_DIR`; this script waits for its
config.json and never trains it) with `factorize_linear_(rank_ratio=ratio, method=method)`, 8 calibration batches of
32 train tweets, and is evaluated (a) one-shot and (b) after distillation from the unfactorised teacher
(`DistillationTrainer`, 2 epochs = 250 steps on 4,000 train tweets, batch 32, T=2, α=0.5, lr 1e-4, cached teacher
logits). Accuracy is on the 4,000 test tweets. Bytes: the safetensors file of the state dict. Latency: medians of
interleaved runs on one thread (`torch.set_num_threads(1)`), teacher and the distilled Fisher-weighted models reloaded
from their safetensors through `restore_low_rank_layout` (at a given ratio every method has the same ranks, so the
same speed). Writes JSON and prints a Markdown table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import numpy as np
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from hf_compress import (
    DistillationTrainer,
    DistillationTrainingArguments,
    factorize_linear_,
    recorded_ranks,
    restore_low_rank_layout,
)
from hf_compress.evaluation.measure import predict

from .common import run_info, speedup_rows, training_args, tweets_tokenized, wait_for_teacher

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MODELS = os.path.join(tempfile.gettempdir(), "hf-compress-low-rank-models")


def state_dict_bytes(model, path: str) -> int:
    """Bytes of the model's state dict saved as one safetensors file."""
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return os.path.getsize(path)


def evaluate(model, test, tokenizer, teacher_pred: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """Accuracy (and agreement with the teacher's predictions) on a tokenised test set, and the predictions."""
    pred = predict(model, test, tokenizer).argmax(-1)
    row = {"accuracy": float((pred == np.asarray(test["label"])).mean())}
    if teacher_pred is not None:
        row["agreement_with_teacher"] = float((pred == teacher_pred).mean())
    return row, pred


def accuracy_part(args) -> dict:
    teacher_dir = wait_for_teacher(args.wait)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    data, _ = tweets_tokenized(tokenizer)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    test = data["test"].select(range(200)) if args.quick else data["test"]
    n_train = 256 if args.quick else 4000
    train = data["train"].shuffle(seed=1000).select(range(n_train))
    collator = DataCollatorWithPadding(tokenizer)
    calibration = DataLoader(train.select(range(8 * 32)), batch_size=32, collate_fn=collator)
    os.makedirs(MODELS, exist_ok=True)

    teacher_row, teacher_pred = evaluate(teacher, test, tokenizer)
    teacher_row["parameters"] = teacher.num_parameters()
    teacher_row["bytes"] = state_dict_bytes(teacher, os.path.join(MODELS, "teacher.safetensors"))
    print(f"teacher: accuracy {teacher_row['accuracy']:.4f}", flush=True)
    result = {**run_info(), "test_examples": len(test), "train_examples": n_train, "teacher": teacher_row, "arms": []}
    cache = None  # the first arm's TeacherOutputCache, shared by the later arms (same teacher, same examples)
    for ratio in args.ratios:
        for method in args.methods:
            name = f"{method} {ratio}"
            # A fresh copy from disk: the trainers of earlier arms froze the teacher object (requires_grad False).
            student = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
            start = time.perf_counter()
            factorize_linear_(student, rank_ratio=ratio, method=method, dataloader=calibration, num_batches=8)
            seconds = time.perf_counter() - start
            record = student.config.compression["low_rank"]
            errors = [m["output_error"] for m in record["modules"].values()]
            arm = {
                "name": name,
                "method": method,
                "rank_ratio": ratio,
                "factorise_seconds": round(seconds, 1),
                "parameters": student.num_parameters(),
                "linear_parameters_before": record["parameters_before"],
                "linear_parameters_after": record["parameters_after"],
                "mean_output_error": statistics.mean(errors),
                "ranks": sorted(set(record["ranks"].values())),
            }
            arm["one_shot"], _ = evaluate(student, test, tokenizer, teacher_pred)
            print(f"{name}: one-shot {arm['one_shot']['accuracy']:.4f} ({seconds:.0f} s to factorise)", flush=True)
            with tempfile.TemporaryDirectory() as workdir:
                train_args = DistillationTrainingArguments(
                    **training_args(workdir, seed=0, epochs=args.epochs),
                    temperature=2.0,
                    alpha=0.5,
                    cache_teacher_logits=True,
                )
                trainer = DistillationTrainer(
                    model=student, teacher_model=teacher, args=train_args, train_dataset=train, data_collator=collator
                )
                if cache is None:
                    cache = trainer._logit_cache
                trainer._logit_cache = cache
                start = time.perf_counter()
                trainer.train()
                arm["train_seconds"] = round(time.perf_counter() - start)
                arm["train_steps"] = trainer.state.global_step
            student = trainer.model.eval()
            arm["distilled"], _ = evaluate(student, test, tokenizer, teacher_pred)
            path = os.path.join(MODELS, f"{method}-{ratio}.safetensors")
            arm["bytes"] = state_dict_bytes(student, path)
            with open(path + ".ranks.json", "w") as f:
                json.dump(recorded_ranks(student.config), f)
            print(f"{name}: distilled {arm['distilled']['accuracy']:.4f} ({arm['train_seconds']} s)", flush=True)
            result["arms"].append(arm)
            write(result, args.out)  # after every arm: CPU time is scarce, keep what is done
    return result


def latency_part(args) -> dict:
    """Teacher vs the saved distilled models of `args.latency_method`, reloaded, side by side on one thread."""
    teacher_dir = wait_for_teacher(args.wait)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    models = {"teacher": AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()}
    for ratio in args.ratios:
        path = os.path.join(MODELS, f"{args.latency_method}-{ratio}.safetensors")
        model = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
        with open(path + ".ranks.json") as f:
            restore_low_rank_layout(model, json.load(f))
        model.load_state_dict(load_file(path), strict=True)
        models[f"{args.latency_method} {ratio}"] = model
    rows, repeats = speedup_rows(models, tokenizer, args.quick)
    result = {"latency": {**run_info(), "seq_len": 48, "repeats": repeats, "statistic": "median", "rows": rows}}
    write(result, args.out)
    return result


def write(result: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)


def summarize(paths: list[str]) -> tuple[dict, str]:
    """Merge part files (accuracy arms of any number of runs, one latency run) into one result and a table."""
    merged: dict = {"arms": []}
    for path in paths:
        with open(path) as f:
            part = json.load(f)
        merged["arms"].extend(part.pop("arms", []))
        for key, value in part.items():
            merged.setdefault(key, value)
    teacher = merged["teacher"]
    latency = merged.get("latency", {}).get("rows", {})
    lines = [
        "| model | one-shot acc. | vs teacher | distilled acc. | vs teacher | mean output error | params | "
        "MB (safetensors) | speed-up b1 / b32 |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| teacher | {teacher['accuracy']:.4f} | 100% | — | — | — | {teacher['parameters'] / 1e6:.2f}M | "
        f"{teacher['bytes'] / 1e6:.1f} | 1.00× / 1.00× |",
    ]
    for arm in merged["arms"]:
        # Every method gives the same ranks at a ratio, so the same layout and speed: one timed model per ratio.
        speed = next((row for name, row in latency.items() if name.split()[-1] == str(arm["rank_ratio"])), None)
        speed = f"{speed['speedup_batch1']:.2f}× / {speed['speedup_batch32']:.2f}×" if speed else "—"
        one, dist = arm["one_shot"]["accuracy"], arm["distilled"]["accuracy"]
        lines.append(
            f"| {arm['name']} | {one:.4f} | {one / teacher['accuracy']:.1%} | {dist:.4f} | "
            f"{dist / teacher['accuracy']:.1%} | {arm['mean_output_error']:.3f} | {arm['parameters'] / 1e6:.2f}M | "
            f"{arm['bytes'] / 1e6:.1f} | {speed} |"
        )
    return merged, "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["accuracy", "latency", "all"], default="all")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.25])
    parser.add_argument("--methods", nargs="+", default=["svd", "fisher", "activation"])
    parser.add_argument("--epochs", type=float, default=2.0, help="distillation epochs over the 4,000 tweets")
    parser.add_argument("--latency-method", default="fisher", help="whose saved models the latency part reloads")
    parser.add_argument("--quick", action="store_true", help="200 test tweets, 256 train tweets, few latency rounds")
    parser.add_argument("--wait", type=float, default=4 * 3600, help="seconds to wait for the teacher")
    parser.add_argument("--summarize", nargs="+", metavar="PART_JSON")
    parser.add_argument("--out", default=os.path.join(RESULTS, "low_rank.json"))
    args = parser.parse_args()
    if args.summarize:
        merged, table = summarize(args.summarize)
        write(merged, args.out)
        print(table)
        return
    result = {}
    if args.part in ("accuracy", "all"):
        result.update(accuracy_part(args))
    if args.part in ("latency", "all"):
        result.update(latency_part(args))
    write(result, args.out)
    if args.part == "all":
        print(summarize([args.out])[1])


if __name__ == "__main__":
    main()
