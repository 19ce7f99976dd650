"""How our trainers save: resumable checkpoints; a final model finalized once, written atomically, pickle-free.

Whether a save is a checkpoint or the final model is decided by the call path, never by a folder's name: Trainer
writes checkpoints through `_save_checkpoint`, and everything else (`save_model`, `push_to_hub`) is a final save.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile

from transformers import PreTrainedModel
from transformers.trainer import TRAINING_ARGS_NAME

TRAINING_ARGS_JSON = "training_args.json"


def replace_pickled_args(output_dir: str, args) -> None:
    """Swap Trainer's pickled training_args.bin for readable JSON: a pushed repo should hold no pickle."""
    pickled = os.path.join(output_dir, TRAINING_ARGS_NAME)
    if os.path.exists(pickled):
        os.remove(pickled)
    from ..provenance import portable_values

    values = portable_values(json.loads(args.to_json_string()), output_dir)  # no absolute path of this machine
    with open(os.path.join(output_dir, TRAINING_ARGS_JSON), "w") as f:
        json.dump(values, f, indent=2, sort_keys=True)


def _umask_mode(mode: int = 0o777) -> int:
    """`mode` as the user's umask would leave it for a newly created directory."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def apply_umask(directory: str) -> None:
    """Give every file and folder under `directory` the mode the user's umask gives new ones.

    Some writers (safetensors via transformers, mkdtemp) create files 0600 / folders 0700, which would hide a saved
    model from other users and serving containers.
    """
    dir_mode, file_mode = _umask_mode(0o777), _umask_mode(0o666)
    os.chmod(directory, dir_mode)
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            os.chmod(os.path.join(root, name), dir_mode)
        for name in files:
            os.chmod(os.path.join(root, name), file_mode)


@contextlib.contextmanager
def staged_directory(target: str):
    """Yield a staging folder beside `target`; on success it replaces `target` in one rename, on failure it vanishes.

    An interrupted save therefore never leaves `target` half-written or holding a mix of two models: until the
    final rename the previous contents are untouched. Sub-folders already in `target` (checkpoints, the fine-tuned
    teacher) are carried over; stale model files are not. The folder gets the permissions the user's umask gives
    (mkdtemp's 0700 would hide the model from other users and serving containers).
    """
    target = os.path.abspath(target)
    parent, name = os.path.split(target)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.staging-", dir=parent)
    try:
        yield staging
        apply_umask(staging)  # only what this save wrote; carried-over folders keep their modes
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


class FinalizeMixin:
    """The lifecycle our trainers share: the enabled methods' checks and training hooks at the end of __init__;
    finalize() once, at the end of train() or at the first final save; checkpoints untouched; atomic final saves.

    Each method of `hf_compress.methods.METHODS` adds its part of finalization as its `finalize` hook, run in table
    order (so steps run and are recorded in the order they were applied); mixins add final files in
    `_write_final_files`.
    """

    _finalized = False
    _saving_checkpoint = False

    def _after_init(self) -> None:
        """At the end of __init__: each enabled method's `after_trainer` conversion, its `validate` checks, then its
        training hooks (`setup`), in table order, before any training."""
        from ..methods import enabled_methods

        for method in enabled_methods(self.args, "convert"):
            if method.after_trainer is not None:
                method.after_trainer(self)
        for method in enabled_methods(self.args):
            if method.validate is not None:
                method.validate(self)
        for method in enabled_methods(self.args, "train"):
            if method.setup is not None:
                method.setup(self)

    def finalize(self) -> PreTrainedModel:
        """Bake masks, slice pruned FFN neurons, drop training-only modules, quantize and record provenance, once.

        Idempotent: later calls return the same model. Afterwards `trainer.model` is exactly the model a final save
        writes, `evaluate()`/`predict()` measure it, and `train()` is refused.
        """
        if not self._finalized:
            self._finalize_model()
            self._finalized = True
        return self.model

    def _finalize_model(self) -> None:
        """Each enabled method's `finalize` hook, in table order."""
        from ..methods import enabled_methods

        for method in enabled_methods(self.args, "finalize"):
            method.finalize(self)

    def _write_final_files(self, output_dir: str) -> None:
        """The base of the cooperative chain: nothing beside the model."""

    def train(self, *args, **kwargs):
        """Trainer.train, then finalize(). A finalized trainer refuses to train again."""
        if self._finalized:
            raise RuntimeError(
                "train() after finalize() is refused: the model was finalized (masks baked, pruned FFN neurons "
                "sliced, training-only modules removed, quantized if asked), so the optimizer no longer matches it. "
                "To train further, load the saved model into a new trainer."
            )
        output = super().train(*args, **kwargs)
        self.finalize()
        return output

    def _save_checkpoint(self, model, trial):
        """Trainer's checkpoint, marked as one so that `_save` does not finalize or write final files."""
        self._saving_checkpoint = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._saving_checkpoint = False

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """A final save finalizes first and is staged and swapped in atomically; checkpoints are Trainer's own."""
        output_dir = output_dir or self.args.output_dir
        if self._saving_checkpoint:
            return super().save_model(output_dir, _internal_call)
        self.finalize()
        if not self.args.should_save:
            return super().save_model(output_dir, _internal_call)
        with staged_directory(output_dir) as staging:
            super().save_model(staging, _internal_call)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Trainer's save with the training arguments as JSON instead of a pickle, plus final files where final."""
        output_dir = output_dir or self.args.output_dir
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            replace_pickled_args(output_dir, self.args)
            if not self._saving_checkpoint:
                self._write_final_files(output_dir)
