"""A teacher through our int8 paths against the peer path a user gets without hf_compress: the fp32 teacher exported to
OpenVINO and quantized by NNCF's post-training quantization (`nncf.quantize`, transformer preset).

    python -m benchmarks.peer_openvino TEACHER_DIR [--calibration-samples 300] [--threads 1] [--repeats 10]

Rows (every one evaluated on the 4,000 test tweets in its own runtime, and timed interleaved with the others, batch
32 and batch 1, 48 tokens, one thread): the fp32 teacher in PyTorch (the reference of agreement and speed); OpenVINO
fp32 (`hf-compress export --format openvino`); the peer: that IR through `nncf.quantize` on
--calibration-samples train tweets; ours: `quantize_` (default: one activation range per call) and the calibrated
recipe's int8 (`recipes/tweets-int8-calibrated.yaml`'s fields: per-token ranges, SmoothQuant 0.75, 1 outlier
channel, GPTQ, 8 batches of 32 train tweets), each in PyTorch and exported to OpenVINO with its own codes. Writes
benchmarks/results/peer-openvino.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from transformers import AutoTokenizer, DataCollatorWithPadding
from transformers.utils import ModelOutput

from hf_compress.evaluation.exported import ExportedModel, _runner
from hf_compress.evaluation.measure import latency_ms, predict
from hf_compress.export import export
from hf_compress.loading import load_saved_model
from hf_compress.methods.int8 import quantize_calibrated_

from .common import run_info, tweets_tokenized

CALIBRATED = dict(
    calibrated=True,
    calibration_batches=8,
    smoothquant_alpha=0.75,
    num_outlier_channels=1,
    gptq=True,
    quantization_modules_to_not_convert=None,
    activation_range="per_token",
)


class OpenVINOFile(nn.Module):
    """An OpenVINO IR (the peer's, which `hf-compress export` did not write) called like the transformers model."""

    def __init__(self, path: str, config, threads: int):
        super().__init__()
        self.config = config
        self._run = _runner("openvino", path, ("logits",), "f32", threads)
        self._anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, **inputs):
        feeds = {k: v.numpy().astype(np.int64) for k, v in inputs.items()}
        return ModelOutput(logits=torch.from_numpy(np.asarray(self._run(feeds)["logits"], dtype=np.float32)))


def directory_bytes(path: str, suffixes: tuple[str, ...]) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(suffixes))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("teacher_dir")
    parser.add_argument("--calibration-samples", type=int, default=300)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output", default="benchmarks/results/peer-openvino.json")
    args = parser.parse_args()
    import nncf
    import openvino as ov

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(args.teacher_dir)
    data, _ = tweets_tokenized(tokenizer)
    test, train = data["test"], data["train"]
    collator = DataCollatorWithPadding(tokenizer)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in train.column_names]
    with tempfile.TemporaryDirectory() as work:
        # Ours: int8 in PyTorch, saved, and exported to OpenVINO with its own codes.
        ours = {}
        calibration = [
            collator([{k: train[i][k] for k in keys} for i in range(start, start + 32)]) for start in range(0, 256, 32)
        ]
        for name, fields in (("int8", None), ("int8 calibrated", CALIBRATED)):
            model = load_saved_model(args.teacher_dir)
            batches = [{k: v for k, v in b.items() if k != "labels"} for b in calibration]
            if fields is None:
                from hf_compress import quantize_

                quantize_(model)
            else:
                quantize_calibrated_(model, SimpleNamespace(**fields), batches)
            saved = os.path.join(work, name.replace(" ", "-"))
            model.save_pretrained(saved)
            tokenizer.save_pretrained(saved)
            ours[name] = saved
            export(saved, saved + "-openvino", format="openvino")
        export(args.teacher_dir, os.path.join(work, "fp32-openvino"), format="openvino")
        # The peer: NNCF PTQ of the fp32 IR on train tweets, one sequence per sample (its calibration loop's unit).
        fp32_ir = os.path.join(work, "fp32-openvino", "openvino_model.xml")
        count = args.calibration_samples
        samples = [{k: np.asarray([train[i][k]], dtype=np.int64) for k in keys} for i in range(count)]
        quantized = nncf.quantize(
            ov.Core().read_model(fp32_ir),
            nncf.Dataset(samples),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=count,
        )
        peer_dir = os.path.join(work, "nncf")
        os.makedirs(peer_dir)
        ov.save_model(quantized, os.path.join(peer_dir, "openvino_model.xml"))

        teacher = load_saved_model(args.teacher_dir)
        models = {
            "teacher fp32 (PyTorch)": teacher,
            "OpenVINO fp32": ExportedModel(os.path.join(work, "fp32-openvino"), args.threads),
            "peer: OpenVINO + NNCF PTQ int8": OpenVINOFile(
                os.path.join(peer_dir, "openvino_model.xml"), teacher.config, args.threads
            ),
            "ours int8 (PyTorch)": load_saved_model(ours["int8"]),
            "ours int8 -> OpenVINO": ExportedModel(ours["int8"] + "-openvino", args.threads),
            "ours int8 calibrated (PyTorch)": load_saved_model(ours["int8 calibrated"]),
            "ours int8 calibrated -> OpenVINO": ExportedModel(ours["int8 calibrated"] + "-openvino", args.threads),
        }
        sizes = {
            "teacher fp32 (PyTorch)": directory_bytes(args.teacher_dir, (".safetensors",)),
            "OpenVINO fp32": directory_bytes(os.path.join(work, "fp32-openvino"), (".bin", ".xml")),
            "peer: OpenVINO + NNCF PTQ int8": directory_bytes(peer_dir, (".bin", ".xml")),
            "ours int8 (PyTorch)": directory_bytes(ours["int8"], (".safetensors",)),
            "ours int8 -> OpenVINO": directory_bytes(ours["int8"] + "-openvino", (".bin", ".xml")),
            "ours int8 calibrated (PyTorch)": directory_bytes(ours["int8 calibrated"], (".safetensors",)),
            "ours int8 calibrated -> OpenVINO": directory_bytes(
                ours["int8 calibrated"] + "-openvino", (".bin", ".xml")
            ),
        }
        labels = np.asarray(test["label"])
        with torch.inference_mode():
            logits = {name: predict(m, test, tokenizer) for name, m in models.items()}
            ms = {b: latency_ms(models, tokenizer, b, repeats=args.repeats) for b in (32, 1)}
    reference = logits["teacher fp32 (PyTorch)"].argmax(-1)
    rows = {}
    for name, value in logits.items():
        rows[name] = {
            "accuracy": float((value.argmax(-1) == labels).mean()),
            "agreement_with_fp32": float((value.argmax(-1) == reference).mean()),
            "mb": sizes[name] / 1e6,
            "speedup_b32": ms[32]["teacher fp32 (PyTorch)"] / ms[32][name],
            "speedup_b1": ms[1]["teacher fp32 (PyTorch)"] / ms[1][name],
            "ms_b32": ms[32][name],
            "ms_b1": ms[1][name],
        }
    result = {**run_info(), "teacher_dir": args.teacher_dir, "test_examples": len(labels), "rows": rows}
    result["openvino"], result["nncf"] = ov.__version__, nncf.__version__
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print("| path | accuracy | agreement with fp32 | MB | speed-up b32 | b1 |")
    print("|---|---|---|---|---|---|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['accuracy']:.4f} | {row['agreement_with_fp32']:.2%} | {row['mb']:.1f} | "
            f"{row['speedup_b32']:.2f}× | {row['speedup_b1']:.2f}× |"
        )


if __name__ == "__main__":
    main()
