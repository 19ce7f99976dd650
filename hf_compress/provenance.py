"""What was applied to a model, recorded in its config so that config.json, a reload and a model card can tell.

Also the one table of step names and Hub tags, and how a model or file is named in a saved artifact: never by an
absolute path of this machine.
"""

from __future__ import annotations

import os
from typing import Any

from transformers import PretrainedConfig

from .methods import METHODS

KEY = "compression"

# What each step recorded in config.compression is called in a model card, and its tags on the Hub: the teacher's
# fine-tuning (a recipe stage, not a compression method), then each method of the table under its record key.
TEACHER_FINETUNING = ("teacher fine-tuned on the task first", [])
STEPS: dict[str, tuple[str, list[str]]] = {
    "teacher_finetuning": TEACHER_FINETUNING,
    **{m.record_key: (m.label, list(m.tags)) for m in METHODS if m.variant is None},
}
TRAINED_STEPS = ("distillation", "pruning")
# A step whose recorded `method` names a variant with its own label and tags (key: (step, method)).
STEP_VARIANTS: dict[tuple[str, str], tuple[str, list[str]]] = {
    (m.record_key, m.variant): (m.label, list(m.tags)) for m in METHODS if m.variant is not None
}


def step_label(step: str, details: Any = None) -> tuple[str, list[str]]:
    """(card label, Hub tags) of a step recorded in config.compression, by its recorded method where that matters."""
    method = details.get("method") if isinstance(details, dict) else None
    return STEP_VARIANTS.get((step, method)) or STEPS.get(step, (step, []))


def record(config: PretrainedConfig, step: str, details: dict[str, Any]) -> None:
    """Append one applied step (e.g. "student", "pruning") with JSON-serialisable details to config.compression."""
    from . import __version__

    history = dict(getattr(config, KEY, None) or {})
    history["hf_compress_version"] = __version__
    history[step] = details
    setattr(config, KEY, history)


def applied(config: PretrainedConfig) -> dict[str, Any]:
    """The steps recorded so far (empty for a model hf_compress never touched)."""
    return dict(getattr(config, KEY, None) or {})


def portable_reference(value: str | None, relative_to: str | None = None) -> str | None:
    """How a model, dataset or folder is named in a saved artifact: never by an absolute path of this machine.

    A Hub id or `pkg://` name is kept; a file inside an installed package becomes `pkg://<package>/<path>`; another
    local path becomes relative to `relative_to` (the folder the artifact is written to) when given, else its last
    component. Relative paths as the user wrote them are kept.
    """
    if value is None or not isinstance(value, str) or not os.path.isabs(value):
        return value
    parts = os.path.normpath(value).split(os.sep)
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return "pkg://" + "/".join(parts[parts.index(marker) + 1 :])
    if relative_to is not None:
        return os.path.relpath(value, os.path.abspath(relative_to)).replace(os.sep, "/")
    return os.path.basename(os.path.normpath(value)) or value


def portable_values(data: Any, relative_to: str | None = None) -> Any:
    """`portable_reference` applied to every string in nested dicts and lists (for JSON and YAML artifacts)."""
    if isinstance(data, dict):
        return {k: portable_values(v, relative_to) for k, v in data.items()}
    if isinstance(data, list):
        return [portable_values(v, relative_to) for v in data]
    return portable_reference(data, relative_to) if isinstance(data, str) else data
