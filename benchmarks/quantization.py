"""Post-training int8: fp32 vs hf_compress int8 vs ONNX Runtime int8: latency, bytes on disk, accuracy.

Usage: python -m benchmarks.quantization [--model PATH] [--quick] [--no-onnx]
--model defaults to the tweets teacher (benchmarks.common.TEACHER_DIR; this script never trains it). A model without a
trained classification head (e.g. the raw MiniLM) gets a random 3-label head and no accuracy.
Writes benchmarks/results/quantization.json and prints a Markdown table for RESULTS.md.
Latencies are medians of interleaved runs (every model once per round), so all share the machine's state.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.modeling_outputs import SequenceClassifierOutput

from hf_compress import Int8QuantizationConfig, minilm_path, quantize_
from hf_compress.evaluation.measure import latency_ms, predict

from .common import TEACHER_DIR, machine, tweets_tokenized

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def dir_bytes(path: str) -> int:
    """Bytes of the weight files in a saved model directory (safetensors or onnx), config excluded."""
    return sum(
        os.path.getsize(os.path.join(path, f))
        for f in os.listdir(path)
        if f.endswith((".safetensors", ".onnx", ".onnx.data"))
    )


def sqnr_db(ref: np.ndarray, approx: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio 10*log10(|ref|^2 / |ref - approx|^2) in dB."""
    noise = float(((ref - approx) ** 2).sum())
    return float("inf") if noise == 0 else 10 * float(np.log10((ref**2).sum() / noise))


def rounded_sqnr(ref: np.ndarray, approx: np.ndarray) -> float | None:
    """sqnr_db rounded to 0.1 dB; None (JSON null) for identical outputs, since JSON has no Infinity."""
    value = sqnr_db(ref, approx)
    return None if value == float("inf") else round(value, 1)


class OrtClassifier:
    """An onnxruntime session called like a transformers classifier: model(**batch).logits."""

    def __init__(self, path: str):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # same threads as torch, for a fair comparison
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def eval(self):
        return self

    def __call__(self, **batch) -> SequenceClassifierOutput:
        feeds = {k: v.numpy() for k, v in batch.items() if k in self.inputs}
        if "token_type_ids" in self.inputs and "token_type_ids" not in feeds:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        return SequenceClassifierOutput(logits=torch.from_numpy(self.session.run(None, feeds)[0]))


def export_onnx(model, tokenizer, workdir: str) -> tuple[str, str]:
    """Export with torch.onnx (dynamo exporter) and quantize with onnxruntime's dynamic int8; return both paths."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_path = os.path.join(workdir, "onnx-fp32", "model.onnx")
    int8_path = os.path.join(workdir, "onnx-int8", "model.onnx")
    os.makedirs(os.path.dirname(fp32_path))
    os.makedirs(os.path.dirname(int8_path))
    enc = tokenizer(["a sample tweet", "another one"], padding="max_length", max_length=16, return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", min=2, max=512)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (),
            fp32_path,
            kwargs={n: enc[n] for n in names},
            input_names=names,
            output_names=["logits"],
            dynamic_shapes={n: {0: batch, 1: seq} for n in names},
            dynamo=True,
            external_data=False,
        )
        # Per-channel symmetric int8 weights, as in hf_compress; reduce_range for non-VNNI x86 (ORT's advice).
        quantize_dynamic(fp32_path, int8_path, per_channel=True, reduce_range=True, weight_type=QuantType.QInt8)
    return fp32_path, int8_path


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=TEACHER_DIR, help="fine-tuned classifier directory (default: teacher)")
    parser.add_argument("--quick", action="store_true", help="500 test tweets and fewer latency rounds")
    parser.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime rows")
    parser.add_argument("--output", default=os.path.join(RESULTS, "quantization.json"))
    args = parser.parse_args()
    if not os.path.exists(os.path.join(args.model, "config.json")):
        raise SystemExit(f"{args.model} has no config.json (the teacher is not trained yet? pass --model PATH)")

    torch.manual_seed(0)
    model_fp32 = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=3).eval()
    has_head = any(a.endswith("ForSequenceClassification") for a in (model_fp32.config.architectures or []))
    has_tokenizer = os.path.exists(os.path.join(args.model, "tokenizer_config.json"))
    tokenizer = AutoTokenizer.from_pretrained(args.model if has_tokenizer else minilm_path())

    workdir = tempfile.mkdtemp(prefix="hf-compress-quant-")
    fp32_dir, int8_dir = os.path.join(workdir, "fp32"), os.path.join(workdir, "int8")
    model_fp32.save_pretrained(fp32_dir)  # the random head of a head-less model is saved too, so rows agree

    to_quantize = AutoModelForSequenceClassification.from_pretrained(fp32_dir).eval()
    start = time.perf_counter()
    quantize_(to_quantize)
    quantize_s = time.perf_counter() - start
    to_quantize.save_pretrained(int8_dir)
    model_int8 = AutoModelForSequenceClassification.from_pretrained(int8_dir)  # what a user loads
    per_batch = Int8QuantizationConfig(activation_range="per_batch")
    model_int8_batch = quantize_(AutoModelForSequenceClassification.from_pretrained(fp32_dir).eval(), per_batch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated: here only as the reference it was
        model_ao = torch.ao.quantization.quantize_dynamic(
            AutoModelForSequenceClassification.from_pretrained(fp32_dir).eval(), {torch.nn.Linear}, torch.qint8
        )

    models = {
        "fp32 (torch)": model_fp32,
        "int8 hf_compress": model_int8,
        "int8 hf_compress per_batch": model_int8_batch,
        "int8 torch.ao quantize_dynamic": model_ao,
    }
    sizes = {"fp32 (torch)": dir_bytes(fp32_dir), "int8 hf_compress": dir_bytes(int8_dir)}
    sizes["int8 hf_compress per_batch"] = sizes["int8 hf_compress"]  # same tensors; only the run-time path differs
    sizes["int8 torch.ao quantize_dynamic"] = None  # no safetensors format: it would need torch.save (pickle)
    if not args.no_onnx:
        fp32_onnx, int8_onnx = export_onnx(model_fp32, tokenizer, workdir)
        models["fp32 onnxruntime"] = OrtClassifier(fp32_onnx)
        models["int8 onnxruntime"] = OrtClassifier(int8_onnx)
        sizes["fp32 onnxruntime"] = dir_bytes(os.path.dirname(fp32_onnx))
        sizes["int8 onnxruntime"] = dir_bytes(os.path.dirname(int8_onnx))

    repeats = 5 if args.quick else 30
    latency = {bs: latency_ms(models, tokenizer, batch_size=bs, repeats=repeats) for bs in (1, 32)}

    data, _ = tweets_tokenized(tokenizer)
    test = data["test"].select(range(500)) if args.quick else data["test"]
    logits = {name: predict(model, test, tokenizer) for name, model in models.items()}
    labels = np.asarray(test["label"])
    ref = logits["fp32 (torch)"]

    rows = []
    for name in models:
        rows.append(
            {
                "model": name,
                "latency_ms_batch1": round(latency[1][name], 2),
                "latency_ms_batch32": round(latency[32][name], 1),
                "speedup_batch1": round(latency[1]["fp32 (torch)"] / latency[1][name], 2),
                "speedup_batch32": round(latency[32]["fp32 (torch)"] / latency[32][name], 2),
                "bytes_on_disk": sizes[name],
                "size_vs_fp32": None if sizes[name] is None else round(sizes[name] / sizes["fp32 (torch)"], 3),
                "accuracy": round(float((logits[name].argmax(-1) == labels).mean()), 4) if has_head else None,
                "logits_sqnr_db_vs_fp32": rounded_sqnr(ref, logits[name]),
                "argmax_agreement_vs_fp32": round(float((logits[name].argmax(-1) == ref.argmax(-1)).mean()), 4),
            }
        )

    result = {
        "command": "python -m benchmarks.quantization " + " ".join(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "torch_threads": torch.get_num_threads(),
        "model": args.model,
        "trained_head": has_head,
        "test_examples": len(test),
        "latency": {"seq_len": 48, "repeats": repeats, "statistic": "median, interleaved"},
        "quantize_seconds": round(quantize_s, 2),
        "rows": rows,
    }
    try:
        import onnxruntime

        result["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)

    print(f"\n{result['machine']}, {result['date']}; {args.model}; quantize_ took {quantize_s:.2f} s\n")
    print(
        "| model | batch 1 ms | batch 32 ms | speed-up b1 / b32 | MB on disk | size vs fp32 | accuracy | "
        "logits SQNR dB | argmax agreement |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        acc = "n/a" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        mb = "n/a" if r["bytes_on_disk"] is None else f"{r['bytes_on_disk'] / 1e6:.1f}"
        ratio = "n/a" if r["size_vs_fp32"] is None else f"{r['size_vs_fp32']:.1%}"
        sqnr = "—" if r["logits_sqnr_db_vs_fp32"] is None else r["logits_sqnr_db_vs_fp32"]
        print(
            f"| {r['model']} | {r['latency_ms_batch1']:.2f} | {r['latency_ms_batch32']:.1f} | "
            f"{r['speedup_batch1']:.2f}× / {r['speedup_batch32']:.2f}× | {mb} | {ratio} | {acc} | "
            f"{sqnr} | {r['argmax_agreement_vs_fp32']:.4f} |"
        )
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
