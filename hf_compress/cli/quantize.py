"""`hf-compress quantize MODEL_DIR OUTPUT_DIR [--keep MODULE ...]`: int8 quantization of a saved model."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `hf-compress quantize`."""
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="a saved model directory (save_pretrained)")
    parser.add_argument("output_dir", metavar="OUTPUT_DIR", help="where the int8 model and its tokenizer go")
    parser.add_argument("--keep", nargs="*", default=None, help="modules kept in full precision, e.g. classifier")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in OUTPUT_DIR")


def run(args: argparse.Namespace) -> None:
    """Check both directories, quantize, and write the result atomically."""
    from ..loading import check_path_or_id
    from ..quantization import Int8QuantizationConfig, quantize_pretrained
    from ..trainer.saving import staged_directory
    from .train import check_output_dir

    check_path_or_id("MODEL_DIR", args.model_dir)
    check_output_dir(args.output_dir, args.overwrite)
    with staged_directory(args.output_dir) as staging:
        quantize_pretrained(args.model_dir, staging, Int8QuantizationConfig(modules_to_not_convert=args.keep))
    print(f"int8 model saved to {args.output_dir}")
