"""What was applied to a model, recorded in its config so that config.json, a reload and a model card can tell."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

KEY = "compression"


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
