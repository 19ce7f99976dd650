"""Eager int8 speed before and after the compile- and export-clean modules (#33 item 3), and the compiled speed.

Usage: python -m benchmarks.compile_export [--baseline 239559b] [--rounds 4] [--repeats 10] [--compiled]
Model: a random BERT, 6 layers x 384 (BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
intermediate_size=1536), a 3-label head), in fp32 and through `quantize_` with one activation range per token (the
default) and one per batch; 64 tokens, batch 32 and batch 1, one thread, inference mode; and one call of layer 0's
query Linear on one token (what a call costs around the kernel: the per-call keys that the change removed).
"before" is the tree of --baseline (the commit before the change: packed weights found per call by data-pointer and
version-counter keys), extracted with `git archive`; "after" is this tree (packed weights prepared once, no per-call
key). Each round runs both in fresh processes, one after the other (the order alternates between rounds); each
process times its models interleaved (median of --repeats forwards). Other jobs on the machine change its speed from
one process to the next, so each int8 time is taken relative to the fp32 model's in the same process (the same
code in both trees), and those ratios are compared between trees, round by round.
--compiled: also, once, this tree's int8 models under torch.compile (inductor, fullgraph), which computes fbgemm's
numbers in plain tensor ops (methods/int8/kernel.py, traced_linear); the compile time is reported too.
Writes benchmarks/results/compile-export.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
BATCHES = (32, 1)
SEQ_LEN = 64


def models(compiled: bool) -> dict:
    """fp32 and the two int8 models (their compiled versions too if asked), built the same way in either tree."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from hf_compress import Int8QuantizationConfig, quantize_

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536, num_labels=3
    )
    fp32 = BertForSequenceClassification(config).eval()
    out = {"fp32": fp32}
    for activation_range in ("per_token", "per_batch"):
        config = Int8QuantizationConfig(activation_range=activation_range)
        out[f"int8 {activation_range}"] = quantize_(copy.deepcopy(fp32), config).eval()
    if compiled:
        for name in ("int8 per_token", "int8 per_batch"):
            out[f"{name}, compiled"] = torch.compile(out[name], fullgraph=True, dynamic=False)
    return out


def call_us(candidates: dict, blocks: int = 30, calls: int = 200) -> dict:
    """Microseconds per call of one Linear (layer 0's query, 384 -> 384) on one token, where the kernel is cheap and
    what a call does around it shows: median over blocks of `calls` calls, the models interleaved."""
    import torch

    x = torch.randn(1, 1, 384)
    linears = {
        name: model.bert.encoder.layer[0].attention.self.query
        for name, model in candidates.items()
        if not name.endswith("compiled")
    }
    times = {name: [] for name in linears}
    for _ in range(blocks):
        for name, linear in linears.items():
            start = time.perf_counter()
            for _ in range(calls):
                linear(x)
            times[name].append((time.perf_counter() - start) / calls * 1e6)
    return {name: round(statistics.median(t), 2) for name, t in times.items()}


def worker(repeats: int, compiled: bool) -> dict:
    """Median forward milliseconds per model and batch size, the models timed interleaved; and `call_us`."""
    import torch

    torch.set_num_threads(1)
    candidates = models(compiled)
    generator = torch.Generator().manual_seed(0)
    result = {"ms": {}, "compile_s": {}}
    with torch.inference_mode():
        result["ms"]["one Linear call, 1 token (us)"] = call_us(candidates)
        for batch in BATCHES:
            ids = torch.randint(1000, 20000, (batch, SEQ_LEN), generator=generator)
            inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            for name, model in candidates.items():
                start = time.perf_counter()
                model(**inputs)  # warm-up; for a compiled model, its compilation for this shape
                if name.endswith("compiled"):
                    result["compile_s"][f"{name} batch{batch}"] = round(time.perf_counter() - start, 1)
                model(**inputs)
            times = {name: [] for name in candidates}
            for _ in range(repeats):
                for name, model in candidates.items():
                    start = time.perf_counter()
                    model(**inputs)
                    times[name].append((time.perf_counter() - start) * 1e3)
            result["ms"][f"batch {batch} x {SEQ_LEN} (ms)"] = {
                n: round(statistics.median(t), 3) for n, t in times.items()
            }
    return result


def run_worker(tree: str, repeats: int, compiled: bool = False) -> dict:
    """`worker` in a fresh process that imports hf_compress from `tree` (its working directory, first on sys.path)."""
    argv = [__file__, "--worker", "--repeats", str(repeats)] + (["--compiled"] if compiled else [])
    code = f"import runpy, sys; sys.argv = {argv!r}; runpy.run_path({__file__!r}, run_name='__main__')"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=tree, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"worker in {tree} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="239559b", help="git revision of the 'before' tree")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10, help="forward passes per model per timing")
    parser.add_argument("--compiled", action="store_true", help="also time this tree's models compiled, once")
    parser.add_argument("--output", default=os.path.join(RESULTS, "compile-export.json"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.repeats, args.compiled)))
        return

    from benchmarks.common import run_info

    with tempfile.TemporaryDirectory() as baseline:
        archive = subprocess.run(["git", "archive", args.baseline, "hf_compress"], cwd=ROOT, capture_output=True)
        if archive.returncode != 0:
            raise SystemExit(archive.stderr.decode())
        subprocess.run(["tar", "-x", "-C", baseline], input=archive.stdout, check=True)
        trees = {"before": baseline, "after": ROOT}
        rounds = []
        for r in range(args.rounds):
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            row = {label: run_worker(trees[label], args.repeats)["ms"] for label in order}
            rounds.append(row)
            print(json.dumps(row), flush=True)
    compiled = run_worker(ROOT, args.repeats, compiled=True) if args.compiled else None

    # Processes see different machine states (other jobs share the cores): compare each int8 model with the fp32
    # model timed interleaved with it in the same process, then those ratios between trees.
    summary = {}
    for timing in rounds[0]["before"]:
        summary[timing] = {}
        for name in rounds[0]["before"][timing]:
            if name == "fp32":
                continue
            relative = {label: [r[label][timing][name] / r[label][timing]["fp32"] for r in rounds] for label in trees}
            summary[timing][name] = {
                "before_ms": round(statistics.median(r["before"][timing][name] for r in rounds), 3),
                "after_ms": round(statistics.median(r["after"][timing][name] for r in rounds), 3),
                "vs fp32 before": round(statistics.median(relative["before"]), 3),
                "vs fp32 after": round(statistics.median(relative["after"]), 3),
                "after/before of vs-fp32, per round": [
                    round(a / b, 3) for a, b in zip(relative["after"], relative["before"], strict=True)
                ],
            }
    result = {
        **run_info(),
        "threads": 1,
        "baseline": args.baseline,
        "seq_len": SEQ_LEN,
        "repeats": args.repeats,
        "rounds": rounds,
        "summary": summary,
        "compiled": compiled,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\n{result['machine']}, {result['date']}; {args.rounds} rounds, {args.repeats} interleaved forwards each\n")
    print("| model | timing | time / fp32's, before | after | after / before, per round |")
    print("|---|---|---|---|---|")
    for timing, rows in summary.items():
        for name, s in rows.items():
            per_round = ", ".join(f"{v:.3f}" for v in s["after/before of vs-fp32, per round"])
            print(f"| {name} | {timing} | {s['vs fp32 before']:.3f} | {s['vs fp32 after']:.3f} | {per_round} |")
    if compiled:
        print("\n| this tree, one process | timing | time |\n|---|---|---|")
        for timing, rows in compiled["ms"].items():
            for name, value in rows.items():
                print(f"| {name} | {timing} | {value:.2f} |")
        print(f"\ncompile seconds (inductor, first call per shape): {compiled['compile_s']}")
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
