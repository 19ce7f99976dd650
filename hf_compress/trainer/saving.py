"""Saving helpers shared by the trainers: no pickles in what we write, and final saves that are atomic."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

from transformers.trainer import TRAINING_ARGS_NAME

TRAINING_ARGS_JSON = "training_args.json"


def replace_pickled_args(output_dir: str, args) -> None:
    """Swap Trainer's pickled training_args.bin for readable JSON: a pushed repo should hold no pickle."""
    pickled = os.path.join(output_dir, TRAINING_ARGS_NAME)
    if os.path.exists(pickled):
        os.remove(pickled)
    with open(os.path.join(output_dir, TRAINING_ARGS_JSON), "w") as f:
        f.write(args.to_json_string())


@contextlib.contextmanager
def staged_directory(target: str):
    """Yield a staging folder beside `target`; on success it replaces `target` in one rename, on failure it vanishes.

    An interrupted save therefore never leaves `target` half-written or holding a mix of two models: until the
    final rename the previous contents are untouched. Sub-folders already in `target` (checkpoints, the fine-tuned
    teacher) are carried over; stale model files are not.
    """
    target = os.path.abspath(target)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.staging-", dir=parent)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not os.path.exists(target):
        os.rename(staging, target)
        return
    old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
    os.rename(target, os.path.join(old, name))
    os.rename(staging, target)
    previous = os.path.join(old, name)
    for entry in os.listdir(previous):
        source = os.path.join(previous, entry)
        if os.path.isdir(source) and not os.path.exists(os.path.join(target, entry)):
            os.rename(source, os.path.join(target, entry))
    shutil.rmtree(old, ignore_errors=True)


class AtomicSaveMixin:
    """Final saves (not checkpoints, which go to fresh folders) are staged and swapped in atomically."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        output_dir = output_dir or self.args.output_dir
        if _internal_call or not self.args.should_save:
            return super().save_model(output_dir, _internal_call)
        with staged_directory(output_dir) as staging:
            super().save_model(staging, _internal_call)
