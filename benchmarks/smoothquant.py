"""SmoothQuant vs plain int8 on the tweets teacher: argmax agreement with fp32, accuracy, logits SQNR, latency.

Usage: python -m benchmarks.smoothquant [--model PATH] [--quick] [--alphas 0.5 0.75 0.85] [--breakdown-examples N]
                                       [--split test|validation] [--skip-latency] [--output PATH]
--model defaults to the tweets teacher (benchmarks.common.TEACHER_DIR; this script never trains it).
Rows: fp32, int8 per_batch, int8 per_token, and smooth_activations_ (8 calibration batches of 32 train tweets) then
int8 per_batch for each alpha; an experiment with per-token ranges for the FFN down projections only; the middle
alpha with one outlier channel per FFN down projection in float (keep_outlier_channels_), without and with GPTQ
rounding (calibrate_gptq_), and both without SmoothQuant; and the fp32 model with 1/s folded into the LayerNorms (the
paper's pre-LN recipe), to show what that does to post-LN BERT. Agreement at batch 128 (predict's default) and 32.
One thread; latencies are medians of interleaved rounds (evaluation.measure).
The breakdown quantizes one kind of module at a time (the rest fp32) to show whose rounding error dominates: errors of
independent modules add up in noise power, so the kind with the lowest SQNR is the one to fix.
Writes benchmarks/results/smoothquant.json and prints Markdown tables for RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from hf_compress import (
    Int8Calibration,
    Int8QuantizationConfig,
    calibrate_gptq_,
    keep_outlier_channels_,
    minilm_path,
    quantize_,
    smooth_activations_,
)
from hf_compress.evaluation.measure import latency_ms, predict
from hf_compress.methods.int8.modules import Int8Linear
from hf_compress.methods.int8.smoothquant import fold_reciprocal, input_maxima, smoothing_factors

from .common import TEACHER_DIR, run_info, tweets_tokenized
from .quantization import rounded_sqnr

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Module kinds of a BERT classifier, by a substring of their names (the breakdown).
KINDS = {
    "query/key/value": ("attention.self.query", "attention.self.key", "attention.self.value"),
    "attention output": ("attention.output.dense",),
    "FFN up": ("intermediate.dense",),
    "FFN down": ("output.dense",),
    "pooler + classifier": ("pooler.dense", "classifier"),
    "word embeddings": ("word_embeddings",),
}


def calibration_batches(train, tokenizer, n: int, batch_size: int = 32) -> list[dict]:
    """`n` padded batches of train tweets (fixed shuffle): what a user would pass to smooth_activations_."""
    rows = train.shuffle(seed=0).select(range(n * batch_size))
    collate = DataCollatorWithPadding(tokenizer)
    keys = [k for k in INPUTS if k in rows.column_names]
    return [
        collate([{k: rows[i][k] for k in keys} for i in range(s, s + batch_size)])
        for s in range(0, len(rows), batch_size)
    ]


def kind_of(name: str) -> str | None:
    for kind, parts in KINDS.items():
        if any(p in name for p in parts) and not (kind == "FFN down" and "attention" in name):
            return kind
    return None


def scores(ref: np.ndarray, logits: np.ndarray, labels: np.ndarray) -> dict:
    return {
        "argmax_agreement_vs_fp32": round(float((logits.argmax(-1) == ref.argmax(-1)).mean()), 4),
        "accuracy": round(float((logits.argmax(-1) == labels).mean()), 4),
        "logits_sqnr_db_vs_fp32": rounded_sqnr(ref, logits),
    }


def breakdown(fp32, smoothed, data, tokenizer, ref, labels) -> list[dict]:
    """Logits SQNR and agreement with one kind of module in int8 and the rest fp32: per_batch plain and smoothed, and
    per_token."""
    names = [n for n in quantize_kinds(fp32) if kind_of(n)]
    smoothed_model, found = smoothed  # the smoothed float model and its run-time factors
    arms = (
        ("per_batch", fp32, "per_batch", False),
        ("per_batch smoothed", smoothed_model, "per_batch", True),
        ("per_token", fp32, "per_token", False),
    )
    rows = []
    for kind in KINDS:
        chosen = [n for n in names if kind_of(n) == kind]
        row = {"kind": kind, "modules": len(chosen)}
        for label, model, activation_range, with_factors in arms:
            config = Int8QuantizationConfig(activation_range=activation_range, modules_to_convert=chosen)
            # Only the factors of the modules converted here (quantize_ refuses a calibration of float modules).
            part = Int8Calibration(smoothing={n: s for n, s in found.smoothing.items() if n in chosen})
            int8 = quantize_(copy.deepcopy(model), config, calibration=part if with_factors else None)
            row[label] = scores(ref, predict(int8, data, tokenizer), labels)
        rows.append(row)
    return rows


@torch.no_grad()
def layernorm_folded(fp32, calibration: list[dict], alpha: float):
    """fp32 copy with SmoothQuant's 1/s folded into the LayerNorms that feed query/key/value and the FFN up projection,
    the paper's recipe for pre-LN models: on post-LN BERT this changes the float model (the residual stream is
    scaled too), which this row measures."""
    model = copy.deepcopy(fp32)
    layers = model.bert.encoder.layer
    pairs = []
    for i, layer in enumerate(layers):
        before = model.bert.embeddings.LayerNorm if i == 0 else layers[i - 1].output.LayerNorm
        pairs.append((before, [layer.attention.self.query, layer.attention.self.key, layer.attention.self.value]))
        pairs.append((layer.attention.output.LayerNorm, [layer.intermediate.dense]))
    names = {id(m): n for n, m in model.named_modules()}
    maxima, _ = input_maxima(model, [names[id(m)] for _, ls in pairs for m in ls], calibration, len(calibration))
    for norm, linears in pairs:
        x_max = torch.stack([maxima[names[id(m)]] for m in linears]).amax(dim=0)
        s = smoothing_factors(x_max, torch.cat([m.weight.abs() for m in linears]).amax(dim=0), alpha)
        for m in linears:
            m.weight.mul_(s)
        fold_reciprocal(norm, s)
    return model


def quantize_kinds(model) -> list[str]:
    word = model.get_input_embeddings()
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) or m is word]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=TEACHER_DIR, help="fine-tuned classifier directory (default: teacher)")
    parser.add_argument("--quick", action="store_true", help="500 test tweets and fewer latency rounds")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.75, 0.85])
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--breakdown-examples", type=int, default=1000, help="0 skips the per-kind breakdown")
    parser.add_argument("--output", default=os.path.join(RESULTS, "smoothquant.json"))
    parser.add_argument(
        "--split",
        default="test",
        choices=["test", "validation"],
        help="tweets split scored (validation: a check on examples no choice was made on)",
    )
    parser.add_argument("--skip-latency", action="store_true", help="agreement only (e.g. beside another job)")
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.model, "config.json")):
        raise SystemExit(f"{args.model} has no config.json (the teacher is not trained yet? pass --model PATH)")
    torch.set_num_threads(1)
    torch.manual_seed(0)

    fp32 = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=3).eval()
    has_tokenizer = os.path.exists(os.path.join(args.model, "tokenizer_config.json"))
    tokenizer = AutoTokenizer.from_pretrained(args.model if has_tokenizer else minilm_path())
    data, _ = tweets_tokenized(tokenizer)
    test = data[args.split].select(range(500)) if args.quick else data[args.split]
    labels = np.asarray(test["label"])
    calibration = calibration_batches(data["train"], tokenizer, args.calibration_batches)

    per_batch = {"activation_range": "per_batch"}
    models = {
        "fp32": fp32,
        "int8 per_batch": quantize_(copy.deepcopy(fp32), Int8QuantizationConfig(**per_batch)),
        "int8 per_token": quantize_(copy.deepcopy(fp32), Int8QuantizationConfig(activation_range="per_token")),
    }
    smoothed = {}
    for alpha in args.alphas:
        model = copy.deepcopy(fp32)
        smoothed[alpha] = (model, smooth_activations_(model, calibration, alpha=alpha, num_batches=len(calibration)))
        name = f"SmoothQuant a={alpha} + int8 per_batch"
        models[name] = quantize_(
            copy.deepcopy(model), Int8QuantizationConfig(**per_batch), calibration=smoothed[alpha][1]
        )

    # Experiment pointed to by the breakdown (FFN down dominates the smoothed model's error): one range per token
    # for the FFN down projections only. Not a config option: set on the modules, so it does not survive a save.
    best_guess = args.alphas[len(args.alphas) // 2]
    best_model, best_calibration = smoothed[best_guess]
    mixed = quantize_(copy.deepcopy(best_model), Int8QuantizationConfig(**per_batch), calibration=best_calibration)
    for name, module in mixed.named_modules():
        if isinstance(module, Int8Linear) and kind_of(name) == "FFN down":
            module.per_token = True
    models[f"SmoothQuant a={best_guess} + int8 per_batch, FFN down per_token (experiment)"] = mixed

    # The FFN down projections' outlier channel in float (keep_outlier_channels_), then GPTQ rounding
    # (calibrate_gptq_), on the same calibration batches; with and without SmoothQuant.
    def calibrated(model, gptq: bool, found=None):
        found = found or Int8Calibration()
        found |= keep_outlier_channels_(model, calibration, num_channels=1, num_batches=len(calibration))
        if gptq:
            found |= calibrate_gptq_(model, calibration, num_batches=len(calibration))
        return quantize_(model, Int8QuantizationConfig(**per_batch), calibration=found)

    smoothed_name = f"SmoothQuant a={best_guess} + int8 per_batch"
    models[f"{smoothed_name} + outlier channels"] = calibrated(copy.deepcopy(best_model), False, best_calibration)
    models[f"{smoothed_name} + outlier channels + GPTQ"] = calibrated(
        copy.deepcopy(best_model), True, best_calibration
    )
    models["int8 per_batch + outlier channels + GPTQ (no SmoothQuant)"] = calibrated(copy.deepcopy(fp32), gptq=True)

    repeats = 5 if args.quick else 30
    latency = {
        bs: None if args.skip_latency else latency_ms(models, tokenizer, batch_size=bs, repeats=repeats)
        for bs in (1, 32)
    }
    logits = {name: predict(model, test, tokenizer) for name, model in models.items()}
    ref = logits["fp32"]
    # One int8 range per call makes the outputs depend on the batch (its largest activation sets the step): the
    # agreement at batch 32, the batch size of the speed goal, beside predict's default of 128.
    logits32 = {name: predict(model, test, tokenizer, batch_size=32) for name, model in models.items()}
    rows = []
    for name in models:
        agreement32 = (logits32[name].argmax(-1) == logits32["fp32"].argmax(-1)).mean()
        rows.append(
            {
                "model": name,
                **scores(ref, logits[name], labels),
                "argmax_agreement_vs_fp32_batch32": round(float(agreement32), 4),
                **(
                    {}
                    if args.skip_latency
                    else {
                        "latency_ms_batch1": round(latency[1][name], 2),
                        "latency_ms_batch32": round(latency[32][name], 1),
                        "speedup_batch1": round(latency[1]["fp32"] / latency[1][name], 2),
                        "speedup_batch32": round(latency[32]["fp32"] / latency[32][name], 2),
                    }
                ),
            }
        )

    folded = predict(layernorm_folded(fp32, calibration, best_guess), test, tokenizer)
    rows.append(
        {
            "model": f"fp32, 1/s (a={best_guess}) folded into the LayerNorms (pre-LN recipe)",
            **scores(ref, folded, labels),
        }
    )
    best = max(args.alphas, key=lambda a: logits_sqnr(ref, logits[f"SmoothQuant a={a} + int8 per_batch"]))
    result = {
        **run_info(),
        "model": args.model,
        "split": args.split,
        "test_examples": len(test),
        "calibration": {"batches": len(calibration), "batch_size": 32, "split": "train"},
        "latency": {"seq_len": 48, "repeats": repeats, "statistic": "median, interleaved", "threads": 1},
        "goal": "argmax agreement >= 0.995 at >= 1.6x batch-32 speed",
        "rows": rows,
    }
    if args.breakdown_examples:
        subset = test.select(range(min(args.breakdown_examples, len(test))))
        sub_ref, sub_labels = ref[: len(subset)], labels[: len(subset)]
        result["breakdown"] = {
            "examples": len(subset),
            "activation_range": "per_batch",
            "smoothing_alpha": best,
            "rows": breakdown(fp32, smoothed[best], subset, tokenizer, sub_ref, sub_labels),
        }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print_tables(result)
    print(f"\nwrote {args.output}")


def logits_sqnr(ref: np.ndarray, approx: np.ndarray) -> float:
    value = rounded_sqnr(ref, approx)
    return float("inf") if value is None else value


def print_tables(result: dict) -> None:
    print(f"\n{result['machine']}, {result['date']}, 1 thread; {result['model']}; {result['test_examples']} tweets\n")
    print(
        "| model | argmax agreement (batch 128) | agreement (batch 32) | accuracy | logits SQNR dB | batch 1 ms | "
        "batch 32 ms | speed-up b1 / b32 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        sqnr = "—" if r["logits_sqnr_db_vs_fp32"] is None else r["logits_sqnr_db_vs_fp32"]
        timed = "latency_ms_batch1" in r
        a32 = r.get("argmax_agreement_vs_fp32_batch32")
        print(
            f"| {r['model']} | {r['argmax_agreement_vs_fp32']:.4f} | {'—' if a32 is None else f'{a32:.4f}'} | "
            f"{r['accuracy']:.4f} | {sqnr} | "
            + (
                f"{r['latency_ms_batch1']:.2f} | {r['latency_ms_batch32']:.1f} | "
                f"{r['speedup_batch1']:.2f}× / {r['speedup_batch32']:.2f}× |"
                if timed
                else "— | — | — |"
            )
        )
    if "breakdown" in result:
        b = result["breakdown"]
        print(
            f"\nOne kind in int8 per_batch, the rest fp32 ({b['examples']} tweets; "
            f"smoothed: a={b['smoothing_alpha']})\n"
        )
        arms = ("per_batch", "per_batch smoothed", "per_token")
        print("| module kind | modules | " + " | ".join(f"SQNR dB / agreement, {a}" for a in arms) + " |")
        print("|---|---|---|---|---|")
        for r in b["rows"]:
            cells = [f"{r[a]['logits_sqnr_db_vs_fp32']} / {r[a]['argmax_agreement_vs_fp32']:.4f}" for a in arms]
            print(f"| {r['kind']} | {r['modules']} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
