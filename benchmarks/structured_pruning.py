"""Structured FFN pruning on tweets: remove 0/25/50/75% of FFN neurons (Taylor vs magnitude), each with distillation.

Usage: python -m benchmarks.structured_pruning [--quick] [--part train|latency|all] [--sparsities 0 0.25 0.5 0.75]
       [--methods taylor magnitude] [--n-train 4000] [--epochs 1]
The student starts as a copy of the fine-tuned MiniLM teacher (6 layers); neurons are masked on the cubic schedule
while it is distilled from the teacher, then sliced away by the final save (a stock BertConfig with a smaller
intermediate_size). Arms share the teacher's logits through the logit cache (same examples, same order).
One-shot rows: `prune_ffn_` on the teacher itself (8 calibration batches, no training), TextPruner's use.
The train part saves every model under $HF_COMPRESS_CACHE/structured-pruning/ and its figures to
benchmarks/results/structured_pruning.json; the latency part loads them all and times them side by side (batch 1
and 32, fp32 and int8), as ratios to the dense teacher, so it can run when the machine is otherwise idle.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time

import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from hf_compress import prune_ffn_, quantize_
from hf_compress.evaluation.measure import bytes_on_disk, latency_ms

from .common import (
    CACHE,
    accuracy,
    compress_teacher_copy,
    run_info,
    teacher_path,
    tweets_tokenized,
)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MODELS = os.path.join(CACHE, "structured-pruning")


def arm_name(method: str, sparsity: float, one_shot: bool = False) -> str:
    """Directory name of one arm's saved model."""
    return f"{'oneshot' if one_shot else 'distilled'}-{method}-{round(sparsity * 100)}"


def train_arm(method: str, sparsity: float, teacher, data, tokenizer, opts, cache: dict) -> dict:
    """Distil a copy of the teacher while masking `sparsity` of its FFN neurons; save the sliced model."""
    out = os.path.join(MODELS, arm_name(method, sparsity))
    fields = dict(ffn_sparsity=sparsity, ffn_pruning_method=method)
    seconds = compress_teacher_copy(teacher, data, tokenizer, out, opts.n_train, opts.epochs, cache, **fields)
    return measure(out, method, sparsity, data, tokenizer, opts, {"train_seconds": seconds, "one_shot": False})


def one_shot_arm(method: str, sparsity: float, data, tokenizer, opts) -> dict:
    """prune_ffn_ on the trained teacher with 8 calibration batches and no training afterwards."""
    model = AutoModelForSequenceClassification.from_pretrained(teacher_path())
    calibration = data["train"].shuffle(seed=2000).select(range(8 * 32))
    loader = DataLoader(calibration, batch_size=32, collate_fn=DataCollatorWithPadding(tokenizer))
    start = time.time()
    prune_ffn_(model, loader, sparsity, method=method)
    seconds = time.time() - start
    out = os.path.join(MODELS, arm_name(method, sparsity, one_shot=True))
    model.save_pretrained(out)
    return measure(out, method, sparsity, data, tokenizer, opts, {"prune_seconds": seconds, "one_shot": True})


def measure(model_dir: str, method: str, sparsity: float, data, tokenizer, opts, extra: dict) -> dict:
    """Accuracy, parameters and bytes of a saved (stock) model."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    return {
        "arm": os.path.basename(model_dir),
        "method": method,
        "ffn_sparsity": sparsity,
        "intermediate_size": model.config.intermediate_size,
        "parameters": model.num_parameters(),
        "bytes_on_disk": bytes_on_disk(model_dir),
        "accuracy": accuracy(model, test_split(data, opts), tokenizer),
        **extra,
    }


def test_split(data, opts):
    """The tweets test split (300 examples with --quick)."""
    return data["test"].select(range(300)) if opts.quick else data["test"]


def latency_part(rows: list[dict], tokenizer, repeats: int) -> dict:
    """Latency at batch 1 and 32 of the teacher and every saved arm, fp32 and int8, measured interleaved."""
    models = {"teacher": AutoModelForSequenceClassification.from_pretrained(teacher_path()).eval()}
    for row in rows:
        models[row["arm"]] = AutoModelForSequenceClassification.from_pretrained(os.path.join(MODELS, row["arm"]))
    for name in list(models):
        models[f"{name} int8"] = quantize_(copy.deepcopy(models[name]))
    result = {"threads": torch.get_num_threads()}
    for batch in (1, 32):
        times = latency_ms(models, tokenizer, batch, repeats=repeats)
        base = times["teacher"]
        result[f"batch{batch}"] = {name: {"ms": ms, "speedup_vs_teacher": base / ms} for name, ms in times.items()}
        print(json.dumps({f"batch{batch}": result[f"batch{batch}"]}), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny subsets: checks the script, not the numbers")
    parser.add_argument("--part", choices=["train", "latency", "all"], default="all")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75])
    parser.add_argument("--methods", nargs="+", default=["taylor", "magnitude"])
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=os.path.join(RESULTS, "structured_pruning.json"))
    opts = parser.parse_args()
    if opts.quick:
        global MODELS
        opts.n_train, opts.repeats, MODELS = 96, 3, MODELS + "-quick"
    data, tokenizer = tweets_tokenized()
    os.makedirs(os.path.dirname(opts.out), exist_ok=True)
    if opts.part == "latency":
        with open(opts.out) as f:
            result = json.load(f)
    else:
        teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path())
        with tempfile.TemporaryDirectory() as tmp:
            teacher.save_pretrained(tmp)
            teacher_bytes = bytes_on_disk(tmp)
        result = {
            **run_info(),
            "quick": opts.quick,
            "n_train": opts.n_train,
            "epochs": opts.epochs,
            "teacher": {
                "accuracy": accuracy(teacher, test_split(data, opts), tokenizer),
                "parameters": teacher.num_parameters(),
                "bytes_on_disk": teacher_bytes,
                "intermediate_size": teacher.config.intermediate_size,
            },
            "rows": [],
        }
        cache: dict = {}
        for sparsity in opts.sparsities:
            for method in opts.methods if sparsity > 0 else opts.methods[:1]:  # 0%: nothing to choose
                result["rows"].append(train_arm(method, sparsity, teacher, data, tokenizer, opts, cache))
                print(json.dumps(result["rows"][-1]), flush=True)
                with open(opts.out, "w") as f:
                    json.dump(result, f, indent=2)
        for method in opts.methods:
            result["rows"].append(one_shot_arm(method, 0.5, data, tokenizer, opts))
            print(json.dumps(result["rows"][-1]), flush=True)
        with open(opts.out, "w") as f:
            json.dump(result, f, indent=2)
    if opts.part in ("latency", "all"):
        result["latency"] = latency_part(result["rows"], tokenizer, opts.repeats)
        with open(opts.out, "w") as f:
            json.dump(result, f, indent=2)
    teacher_acc = result["teacher"]["accuracy"]
    lat = result.get("latency", {})
    print("| arm | intermediate | params | MB | accuracy | vs teacher | b1 speed-up | b32 speed-up | b32 int8 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        b1 = lat.get("batch1", {}).get(r["arm"], {}).get("speedup_vs_teacher", float("nan"))
        b32 = lat.get("batch32", {}).get(r["arm"], {}).get("speedup_vs_teacher", float("nan"))
        b32q = lat.get("batch32", {}).get(f"{r['arm']} int8", {}).get("speedup_vs_teacher", float("nan"))
        print(
            f"| {r['arm']} | {r['intermediate_size']} | {r['parameters'] / 1e6:.2f}M | {r['bytes_on_disk'] / 1e6:.1f} "
            f"| {r['accuracy']:.4f} | {r['accuracy'] / teacher_acc:.1%} | {b1:.2f}× | {b32:.2f}× | {b32q:.2f}× |"
        )
    print(f"wrote {opts.out}")


if __name__ == "__main__":
    main()
