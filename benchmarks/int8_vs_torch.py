"""Our PyTorch int8 against torch's own int8 paths, paired round by round (#34 item 4).

    python -m benchmarks.int8_vs_torch [--rounds-b1 40] [--rounds-b32 30] [--skip-compiled] [--skip-accuracy]
                                       [--output PATH]

Models (the cached tweets teacher, one thread, random ids at 48 tokens): torch's `quantize_dynamic` as a user calls
it (fbgemm, per-tensor weights: the reference of every ratio); `quantize_dynamic` with per-channel weights
(`per_channel_dynamic_qconfig`, the weight granularity ours has); ours (`quantize_`, per-row weights, one activation
range per call, int8 word embeddings), ours with float word embeddings (`quantize_embeddings=False`, what
`quantize_dynamic` keeps) and ours with per-tensor weights (`weight_granularity="per-tensor"`, quantize_dynamic's
granularity and fbgemm kernel). Then, unless --skip-compiled, ours (per-row and per-tensor) and torchao's
`Int8DynamicActivationInt8WeightConfig`, each under `torch.compile(fullgraph=True, dynamic=True)` (torchao must be
installed; it is not a dependency). Unless --skip-accuracy, every eager model's accuracy and argmax agreement with
the fp32 teacher on the 4,000 test tweets: what a granularity costs.

Every round times each model in turn (N forward passes; the order rotates every round), and a model's speed relative
to the reference is the ratio of the two times *within a round*: the machine's drift between rounds cancels. The
median and quartiles of those ratios are reported. Writes JSON (machine, date, command) and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
import warnings

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification

from hf_compress import Int8QuantizationConfig, quantize_

from .common import TEACHER_DIR, run_info, tweets_tokenized

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "int8-vs-torch.json")
TOKENS = 48
FORWARDS = {1: 30, 32: 3}  # forward passes per model per round
PER_TENSOR = Int8QuantizationConfig(weight_granularity="per-tensor")


def paired_ratios(models: dict, reference: str, batch_size: int, rounds: int) -> dict[str, dict]:
    """{name: {median_ms, speed_vs_reference: {median, q1, q3}}}: per-round time ratios against `reference`."""
    generator = torch.Generator().manual_seed(batch_size)
    ids = torch.randint(1000, 20000, (batch_size, TOKENS), generator=generator)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
    names, n = list(models), FORWARDS[batch_size]
    times = {name: [] for name in names}
    with torch.inference_mode():
        for model in models.values():  # warm-up (and compilation)
            for _ in range(3):
                model(**inputs)
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                for _ in range(n):
                    models[name](**inputs)
                times[name].append((time.perf_counter() - start) / n * 1e3)
    ref = np.array(times[reference])
    out = {}
    for name in names:
        ratio = ref / np.array(times[name])  # > 1: faster than the reference
        out[name] = {
            "median_ms": round(float(np.median(times[name])), 3),
            "speed_vs_reference": {
                "median": round(float(np.median(ratio)), 3),
                "q1": round(float(np.percentile(ratio, 25)), 3),
                "q3": round(float(np.percentile(ratio, 75)), 3),
            },
        }
    return out


def tweets_accuracy(models: dict) -> dict[str, dict]:
    """{name: {accuracy, agreement_with_fp32}} on the 4,000 test tweets; `models` starts with the fp32 teacher."""
    from transformers import AutoTokenizer

    from hf_compress.evaluation.measure import predict

    data, tokenizer = tweets_tokenized(AutoTokenizer.from_pretrained(TEACHER_DIR))
    test, labels = data["test"], np.asarray(data["test"]["label"])
    predictions = {name: predict(model, test, tokenizer).argmax(-1) for name, model in models.items()}
    fp32 = predictions[next(iter(models))]
    return {
        name: {"accuracy": float((p == labels).mean()), "agreement_with_fp32": float((p == fp32).mean())}
        for name, p in predictions.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.int8_vs_torch", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds-b1", type=int, default=40)
    parser.add_argument("--rounds-b32", type=int, default=30)
    parser.add_argument("--skip-compiled", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*torch.ao.quantization.*")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    fp32 = AutoModelForSequenceClassification.from_pretrained(TEACHER_DIR).eval()
    eager = {
        "quantize_dynamic (per-tensor weights)": quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, torch.qint8),
        "quantize_dynamic, per-channel weights": quantize_dynamic(
            copy.deepcopy(fp32), {torch.nn.Linear: per_channel_dynamic_qconfig}, torch.qint8
        ),
        "ours (per-row weights, int8 word embeddings)": quantize_(copy.deepcopy(fp32)).eval(),
        "ours, float word embeddings": quantize_(
            copy.deepcopy(fp32), Int8QuantizationConfig(quantize_embeddings=False)
        ).eval(),
        "ours, per-tensor weights": quantize_(copy.deepcopy(fp32), PER_TENSOR).eval(),
    }
    reference = next(iter(eager))
    result = {**run_info(), "threads": 1, "tokens": TOKENS, "forwards_per_round": FORWARDS, "eager": {}}
    for batch, rounds in ((1, args.rounds_b1), (32, args.rounds_b32)):
        result["eager"][f"batch_{batch}"] = paired_ratios(eager, reference, batch, rounds)
    if not args.skip_accuracy:
        result["accuracy"] = tweets_accuracy({"fp32": fp32, **eager})
    if not args.skip_compiled:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig
        from torchao.quantization import quantize_ as torchao_quantize_

        torchao = copy.deepcopy(fp32)
        torchao_quantize_(torchao, Int8DynamicActivationInt8WeightConfig())
        compiled = {
            "torchao int8 dynamic, compiled": torch.compile(torchao, fullgraph=True, dynamic=True),
            "ours, compiled": torch.compile(quantize_(copy.deepcopy(fp32)).eval(), fullgraph=True, dynamic=True),
            "ours, per-tensor weights, compiled": torch.compile(
                quantize_(copy.deepcopy(fp32), PER_TENSOR).eval(), fullgraph=True, dynamic=True
            ),
        }
        result["compiled"] = {
            f"batch_{batch}": paired_ratios(compiled, "torchao int8 dynamic, compiled", batch, rounds)
            for batch, rounds in ((1, args.rounds_b1 // 2), (32, args.rounds_b32 // 2))
        }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print("| path | reference | speed vs reference b1: median (IQR) | b32: median (IQR) |\n|---|---|---|---|")
    for part, ref in (("eager", reference), ("compiled", "torchao int8 dynamic, compiled")):
        if part not in result:
            continue
        for name in result[part]["batch_1"]:
            cells = [result[part][f"batch_{b}"][name]["speed_vs_reference"] for b in (1, 32)]
            text = [f"{c['median']:.3f} ({c['q1']:.3f}–{c['q3']:.3f})" for c in cells]
            print(f"| {name} | {ref} | {text[0]} | {text[1]} |")
    for name, row in result.get("accuracy", {}).items():
        print(f"{name}: accuracy {row['accuracy']:.4f}, agreement with fp32 {row['agreement_with_fp32']:.2%}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
