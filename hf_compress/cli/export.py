"""Export a saved model to ONNX or OpenVINO, checked against PyTorch, with its tokenizer, config.json and card.

`hf-compress export MODEL_DIR OUTPUT_DIR --format onnx|openvino|compressed-tensors [--opset N] [--precision f32|bf16]
[--overwrite]`:
hf_compress.export.export with the same fields; bad input ends in one line and exit code 2 before any model loads.
"""

from __future__ import annotations

import argparse

# hf_compress.export.FORMATS, repeated so that building the parser imports no torch
FORMATS = ("onnx", "openvino", "compressed-tensors")
PRECISIONS = ("f32", "bf16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `hf-compress export` (the names of hf_compress.export.export's fields)."""
    parser.add_argument(
        "model_dir", metavar="MODEL_DIR", help="a model directory hf_compress saved (with its tokenizer)"
    )
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="where the file, tokenizer, config.json and card go")
    parser.add_argument(
        "--format",
        default="onnx",
        help=f"{', '.join(FORMATS)} (default: onnx; compressed-tensors: an int8 / low-bit model as a checkpoint stock "
        "transformers loads)",
    )
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    parser.add_argument(
        "--precision",
        default="f32",
        help=f"OpenVINO inference precision recorded for serving: {' or '.join(PRECISIONS)} (default: f32; "
        "bf16 is also checked by argmax agreement)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT_DIR if it holds files")


def run(args: argparse.Namespace) -> dict:
    """Export and print where the file went and what the check measured; return the export's record."""
    from ..export import export, verify

    record = export(
        args.model_dir,
        args.output_dir,
        format=args.format,
        opset=args.opset,
        precision=args.precision,
        overwrite=args.overwrite,
    )
    check = record["check"]
    print(
        f"Exported {args.model_dir} to {args.output_dir}/{record['file']} ({record['format']}"
        f"{', opset ' + str(record['opset']) if record['opset'] else ''}"
        f"{', ' + str(record['int8_matmuls']) + ' int8 matmuls' if record.get('int8_matmuls') else ''}); checked in "
        f"{check['runtime']} on {check['sequences']} sample sequences: {verify.measured(check)} ({check['bound']})"
    )
    return record
