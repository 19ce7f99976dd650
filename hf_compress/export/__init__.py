"""Deploy what we compress: a saved model as an ONNX (ONNX Runtime) or OpenVINO file, checked against PyTorch.

`export(model_dir, output_dir, format="onnx")` (the CLI: `hf-compress export MODEL_DIR OUTPUT_DIR --format onnx`)
loads any model hf_compress saves (a distilled or pruned student, an ALBERT-style, vocabulary-pruned, low-rank, int8
or low-bit model) with a sequence-classification, token-classification or extractive-QA head, or a
sentence-transformers base model (its pooling, and normalisation if declared, then run inside the graph: output
`sentence_embedding`); captures its graph with torch.export (dynamic batch and sequence axes) and writes it with
torch.onnx's dynamo exporter for ONNX, or converts the program with OpenVINO's PyTorch frontend for OpenVINO; runs the
file on sample inputs and compares it with the PyTorch model; and only then puts it in `output_dir` with the
tokenizer, a config.json and a README card. The work happens in a staging folder renamed at the end: a refused
argument, a failed export or a check beyond its bound leaves no file.

Int8 matmuls go into the graph with the model's own codes and scales (see int8.py): in ONNX as its dynamic int8
(DynamicQuantizeLinear + MatMulInteger), in OpenVINO as int8 compressed weights whose activations the runtime
quantizes. OpenVINO's own static int8 (NNCF post-training quantization on calibration text) is
`export_openvino_int8` (openvino_int8.py).

`format="compressed-tensors"` writes an int8 or low-bit model as a checkpoint stock transformers loads (see
format/compressed_tensors.py), checked by stock transformers in a fresh process that cannot import hf_compress; a
sentence-embedding model also keeps its sentence-transformers files and is checked by `SentenceTransformer(path)`.
"""

from __future__ import annotations

import os

from .arguments import FORMATS, PRECISIONS, check_export
from .openvino_int8 import export_openvino_int8

__all__ = [
    "FORMATS",
    "PRECISIONS",
    "export",
    "export_compressed_tensors",
    "export_onnx",
    "export_openvino",
    "export_openvino_int8",
]


def export(
    model_dir: str,
    output_dir: str,
    format: str = "onnx",
    opset: int | None = None,
    precision: str = "f32",
    overwrite: bool = False,
) -> dict:
    """Export the model saved in `model_dir` to `output_dir` as `format` ("onnx", "openvino" or "compressed-tensors");
    return the export's record (also in output_dir/config.json under "export": files, inputs, outputs, the check's
    numbers).

    `opset`: the ONNX opset, 18 to 23 (default: the exporter's, 20 with torch 2.13; format="onnx" only).
    `precision`: OpenVINO's inference precision recorded for serving, "f32" or "bf16" (the file is checked in f32
    against the bound, and with "bf16" also compiled in bf16 and checked as int8 is). `overwrite`: replace an
    output_dir that holds files.
    Raises ValueError before any work for a bad argument, and after the export when the file is beyond its bound
    (float graphs: max |logit difference| 1e-4; graphs with int8 matmuls: logits SQNR 15 dB and argmax agreement
    99.5% on the decisions that are not ties at int8 precision; see verify.py); nothing is written then.
    """
    plan = check_export(model_dir, output_dir, format, opset, precision, overwrite)
    from .. import __version__
    from ..checks import invalid
    from ..evaluation.measure import linear_sparsity
    from ..loading import load_saved_model
    from ..tasks import task_for_model
    from ..trainer.saving import staged_directory
    from . import graph, verify

    model = load_saved_model(plan.model_dir)
    task = task_for_model(model.config)
    outputs = graph.OUTPUTS[task.name]
    names = graph.input_names(model, plan.tokenizer)
    max_length = graph.max_sequence_length(model, plan.tokenizer)
    vocab_size = min(model.config.vocab_size, len(plan.tokenizer))
    batches = verify.sample_batches(plan.tokenizer, names, max_length, vocab_size)
    computed = graph.graph_model(model, task, plan.model_dir)
    reference = verify.torch_outputs(computed, batches, outputs)
    import torch

    if format == "compressed-tensors":
        return _export_compressed_tensors(plan, model, task, batches, reference, names, outputs, max_length)
    example = {name: torch.from_numpy(array[:2, :8].copy()) for name, array in batches[2].items()}
    with staged_directory(plan.output_dir) as staging:
        if format == "onnx":
            onnx_path = os.path.join(staging, graph.ONNX_FILE)
            opset, int8_matmuls = graph.write_onnx(computed, example, outputs, onnx_path, plan.opset, max_length)
            run, runtime, compiled_precision = verify.onnxruntime_runner(onnx_path), _version("onnxruntime"), None
        else:
            xml_path = os.path.join(staging, graph.OPENVINO_FILE)
            opset = None  # converted from the PyTorch program: no ONNX graph in between
            int8_matmuls = graph.write_openvino_from_torch(computed, example, outputs, xml_path, max_length)
            run, compiled_precision = verify.openvino_runner(xml_path, outputs)
            runtime = _version("openvino")
        stats = verify.compare(reference, [run(batch) for batch in batches], batches, task.name)
        ok, bound = verify.within_bound(stats, int8=int8_matmuls > 0)
        check = {"runtime": runtime, **stats, "bound": bound}
        if compiled_precision is not None:
            check["precision"] = compiled_precision
        if not ok:
            raise invalid(
                "model_dir",
                plan.model_dir,
                f"a model whose {format} file computes what PyTorch computes ({bound}; measured "
                f"{verify.measured(stats)} on {stats['sequences']} sample sequences): nothing was written",
            )
        if format == "openvino" and precision == "bf16":
            check["bf16"] = verify.check_bf16(
                os.path.join(staging, graph.OPENVINO_FILE), outputs, reference, batches, task.name
            )
        record = {
            "format": format,
            "file": graph.ONNX_FILE if format == "onnx" else graph.OPENVINO_FILE,
            "opset": opset,
            "inputs": list(names),
            "outputs": list(outputs),
            "dynamic_axes": {"batch": 0, "sequence": 1},
            "max_sequence_length": max_length,
            "int8_matmuls": int8_matmuls,
            # What the report shows for this file's row (measured on the PyTorch model it came from).
            "parameters": model.num_parameters(),
            "sparsity": linear_sparsity(model),
            "precision": precision if format == "openvino" else "f32",
            "check": check,
            "hf_compress_version": __version__,
        }
        _write_beside(staging, plan, model, record, task)
    return record


def _export_compressed_tensors(plan, model, task, batches, reference, names, outputs, max_length) -> dict:
    """The compressed-tensors checkpoint of an int8 / low-bit model, checked by stock transformers in a process that
    cannot import hf_compress (see format/compressed_tensors.py)."""
    from .. import __version__
    from ..checks import invalid
    from ..evaluation.measure import linear_sparsity
    from ..format.compressed_tensors import write_compressed_tensors
    from ..trainer.saving import staged_directory
    from . import verify

    architecture = type(model).__name__
    with staged_directory(plan.output_dir) as staging:
        stored = write_compressed_tensors(model, staging)
        if task.name == "sentence-embedding":
            _for_sentence_transformers(plan, model, staging)
        got = verify.stock_transformers_outputs(staging, batches, architecture, outputs)
        stats = verify.compare(reference, got, batches, task.name)
        ok, bound = verify.within_bound(stats, int8=True)
        runtime = f"{_version('transformers')} + {_version('compressed-tensors')}, without hf_compress"
        check = {"runtime": runtime, **stats, "bound": bound}
        if not ok:
            raise invalid(
                "model_dir",
                plan.model_dir,
                f"a model that stock transformers loads from compressed-tensors computing what hf_compress computes "
                f"({bound}; measured {verify.measured(stats)} on {stats['sequences']} sample sequences): nothing "
                "was written",
            )
        record = {
            "format": "compressed-tensors",
            "file": "model.safetensors",
            "architecture": architecture,
            "opset": None,
            "inputs": list(names),
            "outputs": list(outputs),
            "dynamic_axes": {"batch": 0, "sequence": 1},
            "max_sequence_length": max_length,
            "quantization": stored,
            "parameters": model.num_parameters(),
            "sparsity": linear_sparsity(model),
            "precision": "f32",
            "check": check,
            "hf_compress_version": __version__,
        }
        _write_beside(staging, plan, model, record, task)
    return record


def _for_sentence_transformers(plan, model, staging: str) -> None:
    """Make a compressed-tensors checkpoint of an embedding model a sentence-transformers folder that stock
    `SentenceTransformer(path)` runs: the tokenizer and the source's module files (its pooling), and
    `dequantize: true` in the quantization config. Why: compressed-tensors decompresses a checkpoint lazily, in a
    forward pre-hook on the model, and sentence-transformers 5 calls `model.forward(...)` directly, which skips
    hooks, so the int8 weights would reach F.linear; dequantized at load, the weights are the same floats that the
    hook would make."""
    import json

    from ..tasks.sentence_embedding import keep_sentence_transformers_files

    plan.tokenizer.save_pretrained(staging)
    keep_sentence_transformers_files(plan.model_dir, staging, model.config.hidden_size)
    path = os.path.join(staging, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["quantization_config"]["dequantize"] = True
    with open(path, "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")


def _write_beside(staging: str, plan, model, record: dict, task) -> None:
    """What lies beside every exported file: the tokenizer, config.json with the record, and the README card."""
    from . import card

    plan.tokenizer.save_pretrained(staging)
    card.write_config(staging, model.config, record)
    card.write_card(staging, model.config, record, task, os.path.basename(os.path.normpath(plan.model_dir)))


def export_compressed_tensors(model_dir: str, output_dir: str, **fields) -> dict:
    """`export(model_dir, output_dir, format="compressed-tensors", **fields)`: an int8 or low-bit model as a
    checkpoint stock transformers loads (with the compressed-tensors package), checked without hf_compress."""
    return export(model_dir, output_dir, format="compressed-tensors", **fields)


def export_onnx(model_dir: str, output_dir: str, **fields) -> dict:
    """`export(model_dir, output_dir, format="onnx", **fields)`."""
    return export(model_dir, output_dir, format="onnx", **fields)


def export_openvino(model_dir: str, output_dir: str, **fields) -> dict:
    """`export(model_dir, output_dir, format="openvino", **fields)`."""
    return export(model_dir, output_dir, format="openvino", **fields)


def _version(package: str) -> str:
    from importlib import metadata

    return f"{package} {metadata.version(package)}"
