"""The int8 kernel facts behind rounding.py and fbgemm.py, measured on this machine.

Usage: python -m benchmarks.int8_kernel [--repeats 100]
1. Saturation: fbgemm's int8 linear with codes 127 on two input channels and activations at the uint8 maximum, for
   channel pairs (0, 1), (1, 2), (2, 3): without VNNI, pairs (2k, 2k+1) add in a saturating int16.
2. Weight SQNR of the cached tweets teacher's Linears: 7-bit codes ([-63, 63], absmax) against rounding.linear_codes
   (8-bit codes under the pair limit, per-row scale from the grid).
3. Timing, one thread, interleaved medians, 32 x 48 tokens: per-batch int8 with the bias added after the kernel vs
   fused into it (384->384, 384->1536, 1536->384); query/key/value as three int8 matmuls vs one 384->1152 matmul.
Writes benchmarks/results/int8-kernel.json and prints the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from transformers import AutoModelForSequenceClassification

from hf_compress.methods.int8 import kernel as fbgemm
from hf_compress.methods.int8.modules import SEVEN_BIT_QMAX, quantize_rows
from hf_compress.methods.int8.rounding import linear_codes

from .common import TEACHER_DIR, run_info

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def saturation() -> dict:
    out = {}
    for pair in ((0, 1), (1, 2), (2, 3)):
        codes = torch.zeros(8, 64, dtype=torch.int8)
        codes[:, list(pair)] = 127
        x = torch.zeros(4, 64)
        x[0] = 1.0  # the call's range is [0, 1]: every activation of row 0 is 255
        y = fbgemm.linear(x, fbgemm.pack(codes, torch.ones(8)), None, None, per_token=False)
        out[f"channels {pair}"] = {"kernel": round(y[0, 0].item(), 3), "exact": 254.0}
    return out


def weight_sqnr() -> dict:
    model = AutoModelForSequenceClassification.from_pretrained(TEACHER_DIR)
    rows = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.startswith("bert.encoder.layer."):
            w = module.weight.detach().float()
            result = {}
            for label, (codes, scale) in (("7-bit", quantize_rows(w, SEVEN_BIT_QMAX)), ("pair-8", linear_codes(w))):
                error = (w - codes.float() * scale[:, None]).square().sum()
                result[label] = round(10 * torch.log10(w.square().sum() / error).item(), 2)
            rows[name] = result
    return rows


def medians(calls: dict, repeats: int) -> dict:
    times = {k: [] for k in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {k: round(sorted(v)[len(v) // 2] * 1e3, 3) for k, v in times.items()}


def bias_calls(x, w, b, packed) -> dict:
    return {
        "fp32": lambda: torch.nn.functional.linear(x, w, b),
        "int8, bias after": lambda: fbgemm.linear(x, packed, None, b, False, fuse_bias=False),
        "int8, bias fused": lambda: fbgemm.linear(x, packed, None, b, False),
    }


def timings(repeats: int) -> dict:
    torch.manual_seed(0)
    out = {}
    for i, o in ((384, 384), (384, 1536), (1536, 384)):
        w, b, x = torch.randn(o, i), torch.randn(o), torch.randn(32, 48, i)
        packed = fbgemm.pack(*linear_codes(w), b)  # with a copy that has the bias fused
        out[f"{i}->{o}"] = medians(bias_calls(x, w, b, packed), repeats)
    ws, b, x = [torch.randn(384, 384) for _ in range(3)], torch.randn(384), torch.randn(32, 48, 384)
    packs = [fbgemm.pack(*linear_codes(w), b) for w in ws]
    fused_bias = torch.cat([b, b, b])
    fused = fbgemm.pack(*linear_codes(torch.cat(ws)), fused_bias)
    out["query/key/value"] = medians(
        {
            "three int8 matmuls": lambda: [fbgemm.linear(x, p, None, b, False) for p in packs],
            "one 384->1152 int8 matmul": lambda: fbgemm.linear(x, fused, None, fused_bias, False).split(384, -1),
        },
        repeats,
    )
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--output", default=os.path.join(RESULTS, "int8-kernel.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = {
        **run_info(),
        "saturation": saturation(),
        "weight_sqnr_db": weight_sqnr(),
        "timing_ms": timings(args.repeats),
    }
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    shown = ("saturation", "weight_sqnr_db", "timing_ms")
    print(json.dumps({k: v for k, v in result.items() if k in shown}, indent=1))


if __name__ == "__main__":
    main()
