"""The one table of compression methods, in the order a run applies them.

Each technique lives in its own package here (`methods/<name>/`: its fields and their checks in `config.py`, its
transform, its module kinds) and declares itself once as a `Method` in its `__init__.py`: its stages, when it is on,
its hooks and the combinations it refuses. Arguments classes, trainers, finalization, provenance and model cards read
this table; none of them names a technique.

Order matters within each stage (a trainer runs every conversion, then every training hook; finalization in table
order): ALBERT before low-rank before fake quantization; the distillation projection detached, masks baked and pruned
FFN neurons sliced before low-bit packing or int8, and the vocabulary cut last.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import albert, distillation, ffn_pruning, int8, low_bit, low_rank, pruning, student, vocabulary
from .method import STAGES, Method

METHODS: tuple[Method, ...] = (
    student.METHOD,
    albert.METHOD,
    low_rank.METHOD,
    distillation.METHOD,
    ffn_pruning.METHOD,
    pruning.METHOD,
    low_bit.METHOD,
    int8.METHOD,
    vocabulary.METHOD,
)


def get_method(name: str) -> Method:
    """The method called `name`; ValueError naming the known ones otherwise."""
    for method in METHODS:
        if method.name == name:
            return method
    raise ValueError(f"method={name!r} is invalid; allowed: {', '.join(repr(m.name) for m in METHODS)}")


def enabled_methods(args: Any, stage: str | None = None) -> Iterator[Method]:
    """The methods `args` turns on, in table order; only those taking part in `stage` when given."""
    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage={stage!r} is invalid; allowed: {STAGES}")
    for method in METHODS:
        if (stage is None or stage in method.stages) and method.is_enabled(args):
            yield method


def check_methods(args: Any) -> None:
    """Each method's own field checks and combination rules, in table order (from `__post_init__`)."""
    for method in METHODS:
        method.check_arguments(args)


__all__ = ["METHODS", "STAGES", "Method", "check_methods", "enabled_methods", "get_method"]
