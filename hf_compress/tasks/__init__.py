"""Per task: the Auto class, data preparation, collator, metrics and post-processing, behind one small interface."""

from __future__ import annotations

from .text_classification import TextClassification

TASKS = {"text-classification": TextClassification}


def get_task(name: str):
    """The task object for a recipe's `task` field (a ValueError names the supported ones)."""
    from ..checks import check_choice

    check_choice("task", name, tuple(TASKS))
    return TASKS[name]()


__all__ = ["TASKS", "TextClassification", "get_task"]
