"""`hf-compress <command>`: run a recipe (distill) or a transform on a saved model, from the shell."""

from __future__ import annotations

import argparse
import os
import sys

from ..trainer.compression_args import CompressionTrainingArguments
from ..trainer.distillation_args import DistillationTrainingArguments
from .recipe import RecipeArguments, parse_recipe

RECIPE_COMMANDS = {
    "distill": (DistillationTrainingArguments, "run_recipe"),
    "compress": (CompressionTrainingArguments, "run_recipe"),
}


def _run_recipe(command: str, recipe_path: str | None, overrides: list[str]) -> None:
    """Parse the recipe plus overrides, then run the command's job."""
    args_class, job_name = RECIPE_COMMANDS[command]
    recipe, training_args = parse_recipe(recipe_path, overrides, RecipeArguments, args_class)
    from . import train as run

    getattr(run, job_name)(recipe, training_args)


def _quantize_command(argv: list[str]) -> int:
    """`hf-compress quantize MODEL_DIR OUTPUT_DIR [--keep MODULE ...]`: int8 quantization of a saved model."""
    parser = argparse.ArgumentParser(prog="hf-compress quantize", description=_quantize_command.__doc__)
    parser.add_argument("model_dir")
    parser.add_argument("output_dir")
    parser.add_argument("--keep", nargs="*", default=None, help="modules kept in full precision, e.g. classifier")
    parser.add_argument("--overwrite", action="store_true", help="replace a model already in OUTPUT_DIR")
    opts = parser.parse_args(argv)
    try:
        if not os.path.isfile(os.path.join(opts.model_dir, "config.json")):
            raise ValueError(f"MODEL_DIR={opts.model_dir!r} holds no saved model (no config.json)")
        from .train import check_output_dir

        check_output_dir(opts.output_dir, opts.overwrite)
        from ..quantization import Int8QuantizationConfig, quantize_pretrained
        from ..trainer.saving import staged_directory

        with staged_directory(opts.output_dir) as staging:
            quantize_pretrained(opts.model_dir, staging, Int8QuantizationConfig(modules_to_not_convert=opts.keep))
    except ValueError as err:
        print(f"hf-compress quantize: error: {err}", file=sys.stderr)
        return 2
    print(f"int8 model saved to {opts.output_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; recipe commands pass unknown flags on as recipe overrides."""
    parser = argparse.ArgumentParser(prog="hf-compress", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for command, (args_class, _) in RECIPE_COMMANDS.items():
        p = sub.add_parser(
            command,
            help=f"train with a YAML recipe of RecipeArguments + {args_class.__name__} fields",
            description="Flags after the recipe override its keys, e.g. --num_train_epochs 2.",
        )
        p.add_argument("recipe", help="path to a YAML recipe (see recipes/)")
    sub.add_parser("quantize", help="int8 post-training quantization of a saved model (hf-compress quantize -h)")
    sub.add_parser("report", help="compare saved models: size, sparsity, latency, accuracy (hf-compress report -h)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hf-compress` console script; bad input ends in one line and exit code 2."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["quantize"]:
        return _quantize_command(argv[1:])
    if argv[:1] == ["report"]:  # its own parser: MODEL_DIR... and flags, no recipe
        from .report import main as report_main

        return report_main(argv[1:])
    parser = build_parser()
    known, overrides = parser.parse_known_args(argv)
    try:
        if known.command in RECIPE_COMMANDS:
            _run_recipe(known.command, known.recipe, overrides)
    except ValueError as err:
        print(f"hf-compress {known.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
