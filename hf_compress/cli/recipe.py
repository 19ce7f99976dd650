"""Recipes: the flat fields of RecipeArguments and one TrainingArguments subclass, written as YAML."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import yaml
from transformers import HfArgumentParser

from ..data import packaged_file

PACKAGE_SCHEME = "pkg://"


def resolve_model_path(name_or_path: str | None) -> str | None:
    """`pkg://<package>/<dir>` names a checkpoint an installed package ships; anything else goes to from_pretrained."""
    if name_or_path is None or not name_or_path.startswith(PACKAGE_SCHEME):
        return name_or_path
    package, _, inner = name_or_path[len(PACKAGE_SCHEME) :].partition("/")
    return packaged_file(package, *inner.split("/"))


@dataclass
class RecipeArguments:
    """What to compress and on which data: the recipe fields that are not training arguments."""

    dataset_name: str = field(
        default="tweets",
        metadata={"help": "'tweets' (the packaged example task), a Hub dataset id, or a local CSV/JSON file."},
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the input text."})
    label_column: str = field(default="label", metadata={"help": "Column holding the integer class label."})
    eval_split: str = field(default="test", metadata={"help": "Split the final report evaluates on."})
    max_length: int = field(default=64, metadata={"help": "Tokens kept per example (> 0)."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Use only the first N training examples (after the seeded shuffle)."}
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Evaluate on at most N examples."})
    student_model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Start the student from this checkpoint (Hub id, dir or pkg://) instead of the teacher, e.g. the "
            "pretrained model for movement pruning while fine-tuning; it gets a fresh head labelled like the teacher."
        },
    )
    student_num_hidden_layers: int | None = field(
        default=None,
        metadata={
            "help": "Student depth; layers are taken evenly spaced from the teacher (or the student checkpoint)."
        },
    )
    student_layers: list[int] | None = field(
        default=None, metadata={"help": "Explicit teacher layer ids (0-based) that initialise the student."}
    )
    finetune_teacher: bool = field(
        default=False,
        metadata={"help": "Fine-tune the teacher on the task first (when it is a base checkpoint without a head)."},
    )
    teacher_num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs of teacher fine-tuning (> 0)."})
    teacher_learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate of teacher fine-tuning."})
    teacher_max_train_samples: int | None = field(
        default=None, metadata={"help": "Fine-tune the teacher on at most N training examples."}
    )
    overwrite_output: bool = field(
        default=False,
        metadata={"help": "Allow the final save to replace a different model already in output_dir."},
    )
    prune_vocabulary: bool = field(
        default=False,
        metadata={
            "help": "After training, keep only the word embeddings of tokens the training split uses (plus special "
            "tokens and single characters) and save a matching stock tokenizer: a smaller model, same outputs on "
            "text made of kept tokens, other words split into kept pieces. Applied before int8."
        },
    )
    report: bool = field(default=True, metadata={"help": "Evaluate teacher and student and print the comparison."})
    report_latency_repeats: int = field(default=10, metadata={"help": "Timed forward passes per model and batch."})

    def __post_init__(self):
        if self.max_length <= 0:
            raise ValueError(f"max_length={self.max_length} is invalid; allowed: an integer > 0")
        for name in (
            "max_train_samples",
            "max_eval_samples",
            "teacher_max_train_samples",
            "student_num_hidden_layers",
        ):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name}={value} is invalid; allowed: an integer > 0 or null")
        if self.student_num_hidden_layers is not None and self.student_layers is not None:
            raise ValueError(
                f"student_num_hidden_layers={self.student_num_hidden_layers} and student_layers="
                f"{self.student_layers} are both set; allowed: at most one of them"
            )
        if self.teacher_num_train_epochs <= 0:
            raise ValueError(f"teacher_num_train_epochs={self.teacher_num_train_epochs} is invalid; allowed: > 0")


def recipe_fields(*classes) -> set[str]:
    """Every key a recipe for these dataclasses may use."""
    return {f.name for cls in classes for f in dataclasses.fields(cls) if f.init}


def load_recipe(path: str) -> dict:
    """The recipe file as a flat dict (a clear error for anything that is not a mapping)."""
    if not os.path.isfile(path):
        raise ValueError(f"recipe={path!r} is not a file")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"recipe={path!r} must be a YAML mapping of field: value, got {type(data).__name__}")
    return data


def parse_recipe(path: str | None, argv: list[str], *classes):
    """Parse the recipe's keys, then command-line flags on top of them, into the given dataclasses."""
    values = load_recipe(path) if path else {}
    known = recipe_fields(*classes)
    unknown = sorted(set(values) - known)
    if unknown:
        names = ", ".join(c.__name__ for c in classes)
        raise ValueError(f"recipe key(s) {unknown} are not fields of {names}; check the spelling")
    parser = HfArgumentParser(classes)
    parser.set_defaults(**values)
    # Required arguments would still be demanded on the command line: the recipe provides them.
    for action in parser._actions:
        if action.dest in values:
            action.required = False
    return parser.parse_args_into_dataclasses(args=argv)
