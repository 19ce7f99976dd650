"""Whether the int8 batch-32 speed-up is ours to raise or this machine's: our int8 against torch's own int8 path.

Usage: python -m benchmarks.int8_speed_rounds [--rounds 4] [--repeats 10] [--output PATH]
Models: the cached tweets teacher in fp32; `quantize_` with one activation range per batch (plain int8) and with one
per token (no calibration; the most faithful variant of benchmarks/smoothquant.py, and its slowest on AVX2); the #19
best variant (SmoothQuant a=0.75 + one outlier channel per FFN down projection + GPTQ, 8 calibration batches of 32
train tweets, as benchmarks/smoothquant.py); and torch's `torch.ao.quantization.quantize_dynamic` on every Linear
(the same fbgemm kernel, torch's own wrapper: the reference for what this kernel gives here).
Each round times all five interleaved (`evaluation.measure.latency_ms`, 48 tokens, batch 32 and 1) at one thread and
then at two; rounds repeat that, so the spread between rounds shows how much of a speed-up figure is the machine.
Writes benchmarks/results/int8-speed-rounds.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import warnings

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_compress import Int8QuantizationConfig, minilm_path, quantize_
from hf_compress.evaluation.measure import latency_ms

from .common import TEACHER_DIR, run_info, tweets_tokenized
from .smoothquant import calibration_batches
from .smoothquant_alpha import calibrated_int8

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def models() -> tuple[dict, object]:
    fp32 = AutoModelForSequenceClassification.from_pretrained(TEACHER_DIR, num_labels=3).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    data, _ = tweets_tokenized(tokenizer)
    calibration = calibration_batches(data["train"], tokenizer, 8)
    per_batch = Int8QuantizationConfig(activation_range="per_batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation: this is the reference, not a recommendation
        reference = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
    return {
        "fp32": fp32,
        "int8 per_batch (quantize_)": quantize_(copy.deepcopy(fp32), per_batch),
        "int8 per_token (quantize_)": quantize_(
            copy.deepcopy(fp32), Int8QuantizationConfig(activation_range="per_token")
        ),
        "int8 best variant (SmoothQuant + outliers + GPTQ)": calibrated_int8(fp32, calibration, alpha=0.75),
        "torch.ao quantize_dynamic": reference,
    }, tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10, help="forward passes per model per timing")
    parser.add_argument("--output", default=os.path.join(RESULTS, "int8-speed-rounds.json"))
    args = parser.parse_args()
    if not os.path.exists(os.path.join(TEACHER_DIR, "config.json")):
        raise SystemExit(f"{TEACHER_DIR} has no config.json: train the tweets teacher first")
    candidates, tokenizer = models()
    rounds = []
    with torch.inference_mode():
        for r in range(args.rounds):
            for threads in (1, 2):
                row = {"round": r, "threads": threads}
                for batch in (32, 1):
                    ms = latency_ms(candidates, tokenizer, batch, repeats=args.repeats, num_threads=threads)
                    row[f"ms_batch{batch}"] = {k: round(v, 2) for k, v in ms.items()}
                    row[f"speedup_batch{batch}"] = {k: round(ms["fp32"] / v, 3) for k, v in ms.items()}
                rounds.append(row)
                print(json.dumps(row["speedup_batch32"]), f"threads={threads}", flush=True)
    summary = {}
    for threads in (1, 2):
        mine = [r for r in rounds if r["threads"] == threads]
        summary[str(threads)] = {
            name: {
                f"batch{b}": {
                    "median": round(statistics.median(r[f"speedup_batch{b}"][name] for r in mine), 3),
                    "min": min(r[f"speedup_batch{b}"][name] for r in mine),
                    "max": max(r[f"speedup_batch{b}"][name] for r in mine),
                }
                for b in (32, 1)
            }
            for name in candidates
            if name != "fp32"
        }
    result = {**run_info(), "seq_len": 48, "repeats": args.repeats, "rounds": rounds, "summary": summary}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\n{result['machine']}, {result['date']}; {args.rounds} rounds of {args.repeats} interleaved forwards\n")
    print("| model | threads | speed-up batch 32: median (min–max) | batch 1: median (min–max) |")
    print("|---|---|---|---|")
    for threads, rows in summary.items():
        for name, s in rows.items():
            b32, b1 = s["batch32"], s["batch1"]
            print(
                f"| {name} | {threads} | {b32['median']:.2f}× ({b32['min']:.2f}–{b32['max']:.2f}) | "
                f"{b1['median']:.2f}× ({b1['min']:.2f}–{b1['max']:.2f}) |"
            )
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
