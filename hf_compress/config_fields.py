"""`config_field`: a field of one of our configuration dataclasses, with the help text that explains it.

Every argument and recipe field carries `metadata={"help": ...}`: `HfArgumentParser` prints it in `hf-compress
<command> --help`, as it does for `transformers.TrainingArguments`. Writing that dict out for each of the ~80 fields
made the declarations three to five lines of the same shape; this keeps one field to its default and its help.
"""

from __future__ import annotations

from dataclasses import MISSING, field
from typing import Any


def config_field(default: Any = MISSING, help: str | None = None, *, default_factory: Any = MISSING) -> Any:
    """`dataclasses.field(default=default, metadata={"help": help})`; `default_factory` for mutable defaults.

    Raises:
        ValueError: `help` is missing or empty (every field must say what it is for), or both `default` and
            `default_factory` are given.
    """
    if not help:
        raise ValueError(f"help={help!r} is invalid; allowed: a non-empty text saying what the field is for")
    if default_factory is not MISSING:
        if default is not MISSING:
            raise ValueError("default and default_factory are both set; allowed: one of them")
        return field(default_factory=default_factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})
