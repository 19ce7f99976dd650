"""Where a model runs fastest: the teacher and compressed students in every CPU runtime path, side by side.

    python -m benchmarks.runtimes TEACHER_DIR [--student NAME=DIR ...] [--threads 1] [--repeats 10]
        [--calibration-batches 8] [--skip-compiled] [--output benchmarks/results/runtimes.json]

Every row is evaluated on the tweets test split (4,000) in its own runtime (accuracy, argmax agreement with the fp32
PyTorch teacher) and timed in one interleaved loop with every other row (`latency_ms`: batch 32 and batch 1, 48
tokens, median of --repeats), so each speed-up is against the fp32 PyTorch teacher of the same run. Rows:

- the teacher (float): PyTorch fp32; our int8 (`quantize_`, one activation range per call) eager and under
  `torch.compile`; torch's own `quantize_dynamic` (fbgemm); torchao's int8 dynamic-activation int8-weight under
  `torch.compile` (if torchao is installed); ONNX Runtime fp32 and int8 (`onnxruntime.quantization.quantize_dynamic`
  of our fp32 export, the peer path of ONNX Runtime users); OpenVINO fp32 (our export, and the peer's: the stock model
  through `openvino.convert_model`); the peer's int8: that IR through `nncf.quantize` (transformer preset) on 300
  train tweets, as a user without hf_compress would; and ours:
  `hf-compress quantize TEACHER --runtime openvino` (NNCF on the recipe's calibration batches);
- each student (a saved hf_compress model, e.g. the headline recipe's 4-bit student with its pruned tokenizer): as
  saved in PyTorch; exported with its own codes to ONNX Runtime and OpenVINO (`hf-compress export`); and
  `hf-compress quantize STUDENT --runtime openvino`.

OpenVINO rows are compiled with INFERENCE_PRECISION_HINT f32 (this CPU would default to bf16 for the float parts).
Writes the JSON and prints a Markdown table. Machine, date and command go in the JSON (`run_info`).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
from transformers import AutoTokenizer

from hf_compress.cli import main as cli
from hf_compress.evaluation.exported import ExportedModel
from hf_compress.evaluation.measure import latency_ms, predict
from hf_compress.export import export
from hf_compress.loading import load_saved_model

from .common import run_info, tweets_tokenized
from .peer_openvino import OpenVINOFile

TEACHER = "teacher fp32 (PyTorch)"


def folder_bytes(path: str, suffixes: tuple[str, ...]) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(suffixes))


def onnxruntime_int8(fp32_dir: str, out_dir: str, threads: int) -> ExportedModel:
    """The peer path of ONNX Runtime users: quantize_dynamic (int8 weights per channel) of the fp32 ONNX export."""
    import shutil

    from onnxruntime.quantization import QuantType, quantize_dynamic

    shutil.copytree(fp32_dir, out_dir)
    for name in os.listdir(out_dir):
        if name.startswith("model.onnx"):  # the graph and its external weights, if any
            os.remove(os.path.join(out_dir, name))
    quantize_dynamic(
        os.path.join(fp32_dir, "model.onnx"),
        os.path.join(out_dir, "model.onnx"),
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    return ExportedModel(out_dir, threads)


def peer_fp32_ir(teacher_dir: str, out_dir: str, train, keys) -> str:
    """What a user without hf_compress does: the stock transformers model through `openvino.convert_model` (its
    PyTorch frontend, traced on one example batch), saved as IR with fp32 weights."""
    import openvino as ov
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    length = min(len(train[i]["input_ids"]) for i in range(2))
    example = {k: torch.tensor([train[i][k][:length] for i in range(2)], dtype=torch.long) for k in keys}
    converted = ov.convert_model(model, example_input=example)
    converted.outputs[0].get_tensor().set_names({"logits"})
    os.makedirs(out_dir)
    ov.save_model(converted, os.path.join(out_dir, "openvino_model.xml"), compress_to_fp16=False)
    return out_dir


def peer_nncf(fp32_ir_dir: str, out_dir: str, train, keys, count: int):
    import nncf
    import openvino as ov

    samples = [{k: np.asarray([train[i][k]], dtype=np.int64) for k in keys} for i in range(count)]
    quantized = nncf.quantize(
        ov.Core().read_model(os.path.join(fp32_ir_dir, "openvino_model.xml")),
        nncf.Dataset(samples),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=count,
    )
    os.makedirs(out_dir)
    ov.save_model(quantized, os.path.join(out_dir, "openvino_model.xml"))
    return out_dir


def ours_openvino(model_dir: str, out_dir: str, batches: int) -> None:
    """`hf-compress quantize MODEL_DIR OUT --runtime openvino` on the tweets recipe's calibration batches."""
    argv = ["quantize", model_dir, out_dir, "--runtime", "openvino", "--dataset_name", "tweets"]
    argv += ["--max_length", "64", "--calibration_batches", str(batches), "--calibration_batch_size", "32"]
    if cli(argv) != 0:
        raise SystemExit(f"hf-compress {' '.join(argv)} failed")


def compiled(model):
    """Inductor, one graph, dynamic batch and sequence (the test batches vary in length)."""
    return torch.compile(model, fullgraph=True, dynamic=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("teacher_dir")
    parser.add_argument("--student", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--peer-samples", type=int, default=300)
    parser.add_argument("--skip-compiled", action="store_true")
    parser.add_argument("--test-examples", type=int, default=None)
    parser.add_argument("--output", default="benchmarks/results/runtimes.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from hf_compress import quantize_

    tokenizer = AutoTokenizer.from_pretrained(args.teacher_dir)
    data, _ = tweets_tokenized(tokenizer)
    train = data["train"]
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in train.column_names]
    tests = {}  # tokenizer directory -> tokenized test split

    def test_split(model_dir: str):
        if model_dir not in tests:
            own = AutoTokenizer.from_pretrained(model_dir)
            split = tweets_tokenized(own)[0]["test"]
            if args.test_examples:
                split = split.select(range(args.test_examples))
            tests[model_dir] = (split, own)
        return tests[model_dir]

    models, sizes, sources, seconds, refused = {}, {}, {}, {}, {}
    with tempfile.TemporaryDirectory() as work:
        start = time.time()
        teacher = load_saved_model(args.teacher_dir).eval()
        models[TEACHER], sources[TEACHER] = teacher, args.teacher_dir
        sizes[TEACHER] = folder_bytes(args.teacher_dir, (".safetensors",))
        int8 = quantize_(copy.deepcopy(teacher))
        int8_dir = os.path.join(work, "teacher-int8")
        int8.save_pretrained(int8_dir)
        models["teacher, our int8 (PyTorch eager)"], sources["teacher, our int8 (PyTorch eager)"] = (
            int8,
            args.teacher_dir,
        )
        sizes["teacher, our int8 (PyTorch eager)"] = folder_bytes(int8_dir, (".safetensors",))
        ao = torch.ao.quantization.quantize_dynamic(copy.deepcopy(teacher), {torch.nn.Linear}, dtype=torch.qint8)
        models["teacher, torch.ao quantize_dynamic"], sources["teacher, torch.ao quantize_dynamic"] = (
            ao,
            args.teacher_dir,
        )
        if not args.skip_compiled:
            t0 = time.time()
            models["teacher, our int8 compiled"] = compiled(int8)
            sources["teacher, our int8 compiled"] = args.teacher_dir
            try:
                from torchao.quantization import Int8DynamicActivationInt8WeightConfig
                from torchao.quantization import quantize_ as torchao_quantize_

                tao = copy.deepcopy(teacher)
                torchao_quantize_(tao, Int8DynamicActivationInt8WeightConfig())
                models["teacher, torchao int8 compiled"] = compiled(tao)
                sources["teacher, torchao int8 compiled"] = args.teacher_dir
            except ImportError:
                print("torchao not installed: no torchao row", file=sys.stderr)
            seconds["compile setup"] = time.time() - t0
        # ONNX Runtime and OpenVINO, float and int8
        fp32_onnx, fp32_ov = os.path.join(work, "teacher-onnx"), os.path.join(work, "teacher-openvino")
        export(args.teacher_dir, fp32_onnx, format="onnx")
        export(args.teacher_dir, fp32_ov, format="openvino")
        rows = {
            "teacher, ONNX Runtime fp32": (ExportedModel(fp32_onnx, args.threads), fp32_onnx, (".onnx", ".data")),
            "teacher, ONNX Runtime int8 (quantize_dynamic)": (
                onnxruntime_int8(fp32_onnx, os.path.join(work, "teacher-onnx-int8"), args.threads),
                os.path.join(work, "teacher-onnx-int8"),
                (".onnx", ".data"),
            ),
            "teacher, OpenVINO fp32": (ExportedModel(fp32_ov, args.threads), fp32_ov, (".xml", ".bin")),
        }
        for fmt, suffixes in (("onnx", (".onnx", ".data")), ("openvino", (".xml", ".bin"))):
            out = os.path.join(work, f"teacher-int8-{fmt}")
            tokenizer.save_pretrained(int8_dir)
            export(int8_dir, out, format=fmt)
            name = f"teacher, our int8 -> {'ONNX Runtime' if fmt == 'onnx' else 'OpenVINO'} (its own codes)"
            rows[name] = (ExportedModel(out, args.threads), out, suffixes)
        # The peer's IR is the user's own `openvino.convert_model` of the stock model, not our export (until
        # 2026-12-04 it was our ONNX-route IR, which ran its int8 1.10x slower than this one).
        peer_fp32 = peer_fp32_ir(args.teacher_dir, os.path.join(work, "peer-fp32"), train, keys)
        rows["teacher, peer: OpenVINO fp32 (openvino.convert_model)"] = (
            OpenVINOFile(os.path.join(peer_fp32, "openvino_model.xml"), teacher.config, args.threads),
            peer_fp32,
            (".xml", ".bin"),
        )
        peer_dir = peer_nncf(peer_fp32, os.path.join(work, "peer-nncf"), train, keys, args.peer_samples)
        rows["teacher, peer: OpenVINO + NNCF int8 (300 tweets)"] = (
            OpenVINOFile(os.path.join(peer_dir, "openvino_model.xml"), teacher.config, args.threads),
            peer_dir,
            (".xml", ".bin"),
        )
        ours_dir = os.path.join(work, "teacher-ours-openvino")
        ours_openvino(args.teacher_dir, ours_dir, args.calibration_batches)
        rows["teacher, ours: quantize --runtime openvino"] = (
            ExportedModel(ours_dir, args.threads),
            ours_dir,
            (".xml", ".bin"),
        )
        for name, (model, folder, suffixes) in rows.items():
            models[name], sources[name], sizes[name] = model, args.teacher_dir, folder_bytes(folder, suffixes)
        for spec in args.student:
            label, student_dir = spec.split("=", 1)
            student = load_saved_model(student_dir).eval()
            name = f"{label} (PyTorch, as saved)"
            models[name], sources[name] = student, student_dir
            sizes[name] = folder_bytes(student_dir, (".safetensors",))
            for fmt, suffixes in (("onnx", (".onnx", ".data")), ("openvino", (".xml", ".bin"))):
                out = os.path.join(work, f"{label}-{fmt}")
                name = f"{label}, {'ONNX Runtime' if fmt == 'onnx' else 'OpenVINO'} (its own codes)"
                try:
                    export(student_dir, out, format=fmt)
                except ValueError as err:  # the export's check refused the file: a row of its own in the JSON
                    refused[name] = str(err)
                    print(f"refused: {name}: {err}", file=sys.stderr)
                    continue
                models[name], sources[name] = ExportedModel(out, args.threads), student_dir
                sizes[name] = folder_bytes(out, suffixes)
            out = os.path.join(work, f"{label}-ours-openvino")
            ours_openvino(student_dir, out, args.calibration_batches)
            name = f"{label}, ours: quantize --runtime openvino"
            models[name], sources[name] = ExportedModel(out, args.threads), student_dir
            sizes[name] = folder_bytes(out, (".xml", ".bin"))
        seconds["setup"] = time.time() - start

        logits, labels = {}, None
        with torch.inference_mode():
            for name, model in models.items():
                split, own = test_split(sources[name])
                t0 = time.time()
                logits[name] = predict(model, split, own)
                seconds[f"evaluate {name}"] = time.time() - t0
                labels = np.asarray(split["label"])
                print(f"evaluated {name}: {float((logits[name].argmax(-1) == labels).mean()):.4f}", flush=True)
            tokenizers = {name: test_split(sources[name])[1] for name in models}
            ms = {b: latency_ms(models, tokenizer, b, repeats=args.repeats, tokenizers=tokenizers) for b in (32, 1)}
    reference = logits[TEACHER].argmax(-1)
    result_rows = {}
    for name in models:
        predicted = logits[name].argmax(-1)
        result_rows[name] = {
            "accuracy": float((predicted == labels).mean()),
            "agreement_with_teacher_fp32": float((predicted == reference).mean()),
            "mb": sizes.get(name, 0) / 1e6,
            "ms_b32": ms[32][name],
            "ms_b1": ms[1][name],
            "speedup_b32": ms[32][TEACHER] / ms[32][name],
            "speedup_b1": ms[1][TEACHER] / ms[1][name],
        }
    import nncf
    import onnxruntime
    import openvino

    result = {
        **run_info(),
        "command": "python -m benchmarks.runtimes " + " ".join(sys.argv[1:]),
        "threads": args.threads,
        "repeats": args.repeats,
        "teacher_dir": args.teacher_dir,
        "students": args.student,
        "test_examples": int(len(labels)),
        "versions": {
            "openvino": openvino.__version__,
            "nncf": nncf.__version__,
            "onnxruntime": onnxruntime.__version__,
            "torch": torch.__version__,
        },
        "seconds": seconds,
        "rows": result_rows,
        "refused_exports": refused,
    }
    os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print("| path | accuracy | agreement with the fp32 teacher | MB | speed-up b32 | b1 |")
    print("|---|---|---|---|---|---|")
    for name, row in result_rows.items():
        print(
            f"| {name} | {row['accuracy']:.4f} | {row['agreement_with_teacher_fp32']:.2%} | {row['mb']:.1f} | "
            f"{row['speedup_b32']:.2f}× | {row['speedup_b1']:.2f}× |"
        )


if __name__ == "__main__":
    main()
