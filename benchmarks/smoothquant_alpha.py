"""Choose SmoothQuant's alpha on the validation split, then score the choice on the test split.

Usage: python -m benchmarks.smoothquant_alpha [--alphas 0.6 0.75 0.85 0.9] [--output PATH]
The variant is the best of benchmarks/smoothquant.py: smooth_activations_(alpha) + keep_outlier_channels_ (one
channel per FFN down projection) + calibrate_gptq_, then quantize_ with per-batch activation ranges, all calibrated on
the same 8 batches of 32 train tweets. For each alpha: argmax agreement with fp32 (batch 128 and 32) and logits SQNR on
the validation tweets; the alpha with the highest validation SQNR (smoother than the agreement, which moves by single
flips) is then scored on the 4,000 test tweets, which no choice here looks at. One thread; no latency (the alpha does
not change the work per call: see benchmarks/smoothquant.py for speed).
Writes benchmarks/results/smoothquant-alpha.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_compress import (
    Int8QuantizationConfig,
    calibrate_gptq_,
    keep_outlier_channels_,
    quantize_,
    smooth_activations_,
)
from hf_compress.evaluation.measure import predict

from .common import TEACHER_DIR, run_info, tweets_tokenized
from .smoothquant import calibration_batches, scores

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def calibrated_int8(fp32, calibration: list[dict], alpha: float):
    model, n = copy.deepcopy(fp32), len(calibration)
    found = smooth_activations_(model, calibration, alpha=alpha, num_batches=n)
    found |= keep_outlier_channels_(model, calibration, num_channels=1, num_batches=n)
    found |= calibrate_gptq_(model, calibration, num_batches=n)
    return quantize_(model, Int8QuantizationConfig(activation_range="per_batch"), calibration=found)


def score(model, fp32_logits: dict, split, tokenizer) -> dict:
    labels = np.asarray(split["label"])
    logits = predict(model, split, tokenizer)
    logits32 = predict(model, split, tokenizer, batch_size=32)
    row = scores(fp32_logits[128], logits, labels)
    row["argmax_agreement_vs_fp32_batch32"] = round(
        float((logits32.argmax(-1) == fp32_logits[32].argmax(-1)).mean()), 4
    )
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.6, 0.75, 0.85, 0.9])
    parser.add_argument("--output", default=os.path.join(RESULTS, "smoothquant-alpha.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    fp32 = AutoModelForSequenceClassification.from_pretrained(TEACHER_DIR).eval()
    tokenizer = AutoTokenizer.from_pretrained(TEACHER_DIR)
    data, _ = tweets_tokenized(tokenizer)
    calibration = calibration_batches(data["train"], tokenizer, 8)
    reference = {
        split: {bs: predict(fp32, data[split], tokenizer, batch_size=bs) for bs in (128, 32)}
        for split in ("validation", "test")
    }
    rows = []
    for alpha in args.alphas:
        model = calibrated_int8(fp32, calibration, alpha)
        rows.append(
            {"alpha": alpha, "validation": score(model, reference["validation"], data["validation"], tokenizer)}
        )
        print(rows[-1], flush=True)
    chosen = max(rows, key=lambda r: r["validation"]["logits_sqnr_db_vs_fp32"])
    model = calibrated_int8(fp32, calibration, chosen["alpha"])
    chosen["test"] = score(model, reference["test"], data["test"], tokenizer)
    result = {
        **run_info(),
        "variant": "smooth_activations_(alpha) + keep_outlier_channels_(1) + calibrate_gptq_ + int8 per_batch",
        "validation_examples": len(data["validation"]),
        "test_examples": len(data["test"]),
        "rule": "highest validation logits SQNR",
        "chosen_alpha": chosen["alpha"],
        "rows": rows,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print("\n| alpha | validation agreement b128 / b32 | validation SQNR | test agreement b128 / b32 | test SQNR |")
    print("|---|---|---|---|---|")
    for r in rows:
        v, t = r["validation"], r.get("test")
        test = (
            f"{t['argmax_agreement_vs_fp32']:.2%} / {t['argmax_agreement_vs_fp32_batch32']:.2%} | "
            f"{t['logits_sqnr_db_vs_fp32']} dB"
            if t
            else "— | —"
        )
        print(
            f"| {r['alpha']} | {v['argmax_agreement_vs_fp32']:.2%} / {v['argmax_agreement_vs_fp32_batch32']:.2%} | "
            f"{v['logits_sqnr_db_vs_fp32']} dB | {test} |"
        )
    print(f"\nchosen alpha {chosen['alpha']}; wrote {args.output}")


if __name__ == "__main__":
    main()
