"""An int8 model as a compressed-tensors checkpoint: accuracy, agreement and speed in stock transformers (a process
that cannot import hf_compress) and with hf_compress imported (our kernels), against the fp32 model it came from.

    python -m benchmarks.compressed_tensors FP32_DIR INT8_DIR [--threads 1] [--repeats 10]

FP32_DIR: the float model (e.g. outputs/quickstart); INT8_DIR: its int8 model (`hf-compress quantize FP32_DIR
INT8_DIR`). Exports INT8_DIR with `--format compressed-tensors` into a temporary folder, evaluates on the tweets test
split (4,000) and times batch 32 and batch 1 (48 tokens) interleaved with the fp32 model in each process. Writes
benchmarks/results/compressed-tensors.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from hf_compress.evaluation.measure import latency_ms, predict
from hf_compress.export import export
from hf_compress.loading import load_saved_model

from .common import run_info, tweets_tokenized

# The stock process: no hf_compress; fp32 and the compressed-tensors model loaded by transformers, run on the same
# padded batches, then timed interleaved (median of `repeats` rounds) at batch 32 and 1.
STOCK = r"""
import json, sys, time
sys.modules["hf_compress"] = None
import numpy as np, torch
from transformers import AutoModelForSequenceClassification
fp32_dir, ct_dir, batches_path, out_path, threads, repeats = sys.argv[1:7]
torch.set_num_threads(int(threads))
models = {"fp32": AutoModelForSequenceClassification.from_pretrained(fp32_dir).eval(),
          "stock": AutoModelForSequenceClassification.from_pretrained(ct_dir).eval()}
data = np.load(batches_path)
logits = []
with torch.no_grad():
    for i in range(int(data["count"])):
        feeds = {k: torch.from_numpy(data[f"{i}/{k}"]) for k in ("input_ids", "attention_mask")}
        logits.append(models["stock"](**feeds).logits.numpy())
    times = {}
    for batch in (32, 1):
        ids = torch.randint(1000, 20000, (batch, 48), generator=torch.Generator().manual_seed(0))
        feeds = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        for m in models.values():
            m(**feeds)
        rounds = {name: [] for name in models}
        for _ in range(int(repeats)):
            for name, m in models.items():
                start = time.perf_counter(); m(**feeds); rounds[name].append(time.perf_counter() - start)
        times[batch] = {name: 1000 * float(np.median(v)) for name, v in rounds.items()}
np.save(out_path + ".npy", np.concatenate(logits))
json.dump(times, open(out_path + ".json", "w"))
"""


def padded_batches(dataset, tokenizer, size: int = 128) -> list[dict]:
    collator = DataCollatorWithPadding(tokenizer)
    batches = []
    for start in range(0, len(dataset), size):
        rows = dataset[start : start + size]
        items = [{k: rows[k][i] for k in ("input_ids", "attention_mask")} for i in range(len(rows["input_ids"]))]
        batches.append({k: v.numpy() for k, v in collator(items).items()})
    return batches


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("fp32_dir")
    parser.add_argument("int8_dir")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", default="benchmarks/results/compressed-tensors.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data, tokenizer = tweets_tokenized()
    test = data["test"]
    labels = np.asarray(test["label"])
    with tempfile.TemporaryDirectory() as work:
        ct_dir = os.path.join(work, "ct")
        record = export(args.int8_dir, ct_dir, format="compressed-tensors")
        batches = padded_batches(test, tokenizer)
        path = os.path.join(work, "batches.npz")
        arrays = {f"{i}/{k}": v for i, b in enumerate(batches) for k, v in b.items()}
        np.savez(path, count=np.asarray(len(batches)), **arrays)
        out = os.path.join(work, "stock")
        done = subprocess.run(
            [sys.executable, "-c", STOCK, args.fp32_dir, ct_dir, path, out, str(args.threads), str(args.repeats)],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        stock_logits = np.load(out + ".npy")
        stock_ms = {int(k): v for k, v in json.load(open(out + ".json")).items()}
        models = {
            "fp32": load_saved_model(args.fp32_dir),
            "int8": load_saved_model(args.int8_dir),
            "ct+hf_compress": AutoModelForSequenceClassification.from_pretrained(ct_dir).eval(),
        }
        with torch.inference_mode():
            logits = {name: predict(m, test, tokenizer) for name, m in models.items()}
            ours_ms = {b: latency_ms(models, tokenizer, b, repeats=args.repeats) for b in (32, 1)}
        size = os.path.getsize(os.path.join(ct_dir, "model.safetensors"))
    logits["ct stock"] = stock_logits
    rows = {}
    for name, value in logits.items():
        prediction = value.argmax(-1)
        rows[name] = {
            "accuracy": float((prediction == labels).mean()),
            "agreement_with_int8": float((prediction == logits["int8"].argmax(-1)).mean()),
            "agreement_with_fp32": float((prediction == logits["fp32"].argmax(-1)).mean()),
            "max_abs_logit_diff_vs_int8": float(np.abs(value - logits["int8"]).max()),
        }
    for b in (32, 1):
        for name in models:
            rows[name][f"speedup_b{b}"] = ours_ms[b]["fp32"] / ours_ms[b][name]
        rows["ct stock"][f"speedup_b{b}"] = stock_ms[b]["fp32"] / stock_ms[b]["stock"]
    result = {
        **run_info(),
        "fp32_dir": args.fp32_dir,
        "int8_dir": args.int8_dir,
        "test_examples": len(labels),
        "compressed_tensors_bytes": size,
        "export_check": record["check"],
        "requantized_modules": len(record["quantization"]["requantized"]),
        "rows": rows,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print("| model | accuracy | agreement with int8 | max |Δlogit| vs int8 | speed-up b32 | b1 |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['accuracy']:.4f} | {row['agreement_with_int8']:.2%} | "
            f"{row['max_abs_logit_diff_vs_int8']:.2e} | {row['speedup_b32']:.2f}× | {row['speedup_b1']:.2f}× |"
        )


if __name__ == "__main__":
    main()
