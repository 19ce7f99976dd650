"""`hf-compress <command>`: one parser for every command; each command's body lives in its own module.

distill | prune | compress  run a YAML recipe (`train.py`): RecipeArguments + the command's arguments class
quantize                    int8 post-training quantization of a saved model, calibrated if asked (`quantize.py`)
report                      size, sparsity, latency and task metric of saved models side by side (`report.py`)
search                      a student for one budget, written as a compress recipe (`search.py`)

Bad input ends in one line on stderr and exit code 2, before any model is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from ..methods.distillation.config import DistillationTrainingArguments
from ..methods.pruning.config import PruningTrainingArguments
from ..trainer.compression_args import CompressionTrainingArguments
from . import export, quantize, report, search
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
    "search": (search, "choose a student for one budget (size, parameters, latency): writes a compress recipe"),
}


class _Parser(RecipeParser):
    """The subparser class: recipe commands get their dataclasses' fields, tools their own arguments.

    `--help` lists our fields first, one group per technique in the methods table's order, then the generic
    TrainingArguments options (some 500 lines) last.
    """

    def __init__(self, dataclass_types=(), **kwargs):
        super().__init__(dataclass_types, **kwargs)

    def _add_dataclass_arguments(self, dtype):
        from transformers import TrainingArguments

        from ..methods import METHODS

        hints = typing.get_type_hints(dtype)
        fields = [f for f in dataclasses.fields(dtype) if f.init]
        base = (
            {f.name for f in dataclasses.fields(TrainingArguments)} if issubclass(dtype, TrainingArguments) else set()
        )
        groups = []  # (title, field names), in the order --help prints them
        if not base:  # RecipeArguments, QuantizeArguments: one group, titled by the class
            groups.append(
                (
                    f"{dtype.__name__}: {(dtype.__doc__ or '').strip().splitlines()[0].rstrip('.')}",
                    [f.name for f in fields],
                )
            )
        placed = set()
        mixins = {
            f.name
            for m in METHODS
            if m.arguments and issubclass(dtype, m.arguments)
            for f in dataclasses.fields(m.arguments)
        }
        for method in METHODS if base else ():
            # A method's fields: its arguments mixin, or the arguments class of its own folder (distillation, pruning).
            module = f"{__package__.rpartition('.')[0]}.methods.{method.name}.config"
            owner = method.arguments or next((c for c in dtype.__mro__ if c.__module__ == module), None)
            if owner is None or not issubclass(dtype, owner):
                continue
            others = set() if method.arguments else mixins  # a folder's class inherits the mixins: theirs stay apart
            own = [f.name for f in dataclasses.fields(owner) if f.init and f.name not in base | placed | others]
            if own:
                groups.append((f"{method.name}: {method.label}", own))
                placed.update(own)
        if base:
            rest = [f.name for f in fields if f.name not in base | placed]
            if rest:
                groups.append((f"{dtype.__name__}", rest))
            groups.append(
                ("transformers TrainingArguments (Trainer's own options)", [f.name for f in fields if f.name in base])
            )
        by_name = {f.name: f for f in fields}
        for title, names in groups:
            group = self.add_argument_group(title)
            for name in names:
                field = by_name[name]
                field.type = hints[name]
                self._parse_dataclass_field(group, field)


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

            path = next((a for a in argv[1:2] if not a.startswith("-")), None)
            classes = (RecipeArguments, RECIPE_COMMANDS[command][0])
            rest = argv[2:] if path is not None else argv[1:]
            recipe, training_args = parse_recipe(path, rest, *classes, parser=subparser)
            from .train import run_recipe  # after parsing: a bad recipe is refused without loading data or models

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
