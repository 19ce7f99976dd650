"""Student search: one budget (parameters, MB, latency or speed-up on this machine) in, a compress recipe out.

Names load with their modules on first use, so the CLI's parser reads `SearchArguments` without torch.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "BUDGETS": ".config",
    "SearchArguments": ".config",
    "Importance": ".importance",
    "importance_scores": ".importance",
    "LatencyTable": ".latency",
    "measure_latency_table": ".latency",
    "SearchResult": ".search",
    "search_student": ".search",
    "Candidate": ".space",
}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name], __name__), name)
