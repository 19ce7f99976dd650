"""What every packaged `evaluate` metric module shares: its MetricInfo, built from its docs and input features.

The metric scripts import this (and `hf_compress.checks`) as the installed package; they define no class of their
own but their metric, because `evaluate` takes the first EvaluationModule subclass a script's namespace holds.
"""

from __future__ import annotations

import datasets
import evaluate

CLASS_IDS = {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}


def metric_info(description: str, inputs_description: str, citation: str, features: dict, **kwargs):
    """`evaluate.MetricInfo` of a packaged metric; `features` maps input names to `datasets` feature types."""
    return evaluate.MetricInfo(
        description=description,
        citation=citation,
        inputs_description=inputs_description,
        features=datasets.Features(features),
        **kwargs,
    )
