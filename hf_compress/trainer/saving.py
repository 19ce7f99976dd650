"""Saving helpers shared by the trainers: no pickles in what we write."""

from __future__ import annotations

import os

from transformers.trainer import TRAINING_ARGS_NAME

TRAINING_ARGS_JSON = "training_args.json"


def replace_pickled_args(output_dir: str, args) -> None:
    """Swap Trainer's pickled training_args.bin for readable JSON: a pushed repo should hold no pickle."""
    pickled = os.path.join(output_dir, TRAINING_ARGS_NAME)
    if os.path.exists(pickled):
        os.remove(pickled)
    with open(os.path.join(output_dir, TRAINING_ARGS_JSON), "w") as f:
        f.write(args.to_json_string())
