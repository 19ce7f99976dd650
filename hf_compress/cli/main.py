"""`hf-compress <command>`: one parser for every command; each command's body lives in its own module.

distill | prune | compress  run a YAML recipe (`train.py`): RecipeArguments + the command's arguments class
quantize                    int8 post-training quantization of a saved model, calibrated if asked (`quantize.py`)
report                      size, sparsity, latency and task metric of saved models side by side (`report.py`)

Bad input ends in one line on stderr and exit code 2, before any model is loaded.
"""

from __future__ import annotations

import argparse
import sys

from ..methods.distillation.config import DistillationTrainingArguments
from ..methods.pruning.config import PruningTrainingArguments
from ..trainer.compression_args import CompressionTrainingArguments
from . import export, quantize, report
from .recipe import RecipeArguments, RecipeParser

RECIPE_COMMANDS = {
    "distill": (DistillationTrainingArguments, "distil a student from a teacher (DistillationTrainer)"),
    "prune": (PruningTrainingArguments, "prune a model while fine-tuning it (PruningTrainer)"),
    "compress": (CompressionTrainingArguments, "distil, prune, ALBERT-convert and quantize (CompressionTrainer)"),
}
TOOL_COMMANDS = {
    "export": (export, "a saved model as an ONNX or OpenVINO file, checked against PyTorch"),
    "quantize": (quantize, "int8 post-training quantization of a saved model"),
    "report": (report, "compare saved models: size, sparsity, latency, task metric"),
}


class _Parser(RecipeParser):
    """The subparser class: recipe commands get their dataclasses' fields, tools their own arguments."""

    def __init__(self, dataclass_types=(), **kwargs):
        super().__init__(dataclass_types, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The one parser; `hf-compress <recipe command> --help` lists every recipe field with its help text."""
    parser = argparse.ArgumentParser(prog="hf-compress", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command, (args_class, text) in RECIPE_COMMANDS.items():
        p = sub.add_parser(
            command,
            dataclass_types=(RecipeArguments, args_class),
            help=text,
            description=f"{text}. Recipe keys are the fields below; flags after the recipe override them.",
        )
        p.add_argument("recipe", nargs="?", help="path to a YAML recipe (see recipes/)")
    for command, (module, text) in TOOL_COMMANDS.items():
        classes = getattr(module, "CLASSES", ())  # a command whose fields are dataclasses (quantize)
        p = sub.add_parser(command, dataclass_types=classes, help=text, description=module.__doc__.splitlines()[0])
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hf-compress` console script; bad input ends in one line and exit code 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    command = argv[0] if argv and argv[0] in parser._subparsers._group_actions[0].choices else None
    try:
        if command is None:
            parser.parse_args(argv)  # usage, --help, or argparse's own error for an unknown command
            return 2
        subparser = parser._subparsers._group_actions[0].choices[command]
        if command in RECIPE_COMMANDS:
            from .recipe import parse_recipe
            from .train import run_recipe

            path = next((a for a in argv[1:2] if not a.startswith("-")), None)
            classes = (RecipeArguments, RECIPE_COMMANDS[command][0])
            rest = argv[2:] if path is not None else argv[1:]
            recipe, training_args = parse_recipe(path, rest, *classes, parser=subparser)
            run_recipe(recipe, training_args, command)
        elif hasattr(TOOL_COMMANDS[command][0], "CLASSES"):
            TOOL_COMMANDS[command][0].run(argv[1:])  # parses its recipe and flags into its dataclasses
        else:
            TOOL_COMMANDS[command][0].run(subparser.parse_args(argv[1:]))
    except (ValueError, OSError) as err:  # OSError: from_pretrained's and the file system's own messages
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"hf-compress {command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
