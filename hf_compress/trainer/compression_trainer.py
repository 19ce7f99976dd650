"""CompressionTrainer: distillation plus every method of the table a run turns on, applied in the table's order."""

from __future__ import annotations

import itertools

from torch.utils.data import DataLoader

from ..checks import invalid
from ..methods import enabled_methods
from .compression_args import CompressionTrainingArguments
from .distillation_trainer import DistillationTrainer
from .pruning_trainer import PruningMixin
from .trainer_options import refuse_distillation_options


class CompressionTrainer(PruningMixin, DistillationTrainer):
    """DistillationTrainer plus PruningTrainer's masks and schedule, in one loop, and the conversions and final steps
    of every enabled method of the table `hf_compress.methods.METHODS`.

    Lifecycle: `before_trainer` conversions (before Trainer.__init__, so the optimizer sees the converted
    parameters), Trainer.__init__, `after_trainer` conversions (they need the collator and train batches), the
    `validate` checks, the training hooks (`setup`); after training, finalize() runs each method's `finalize` once.
    """

    _tag_names = ["hf_compress", "distillation", "pruning"]
    low_bit_widths: dict[str, int] | None = None  # module name -> bits of the fake-quantized student, if any

    def __init__(self, model=None, args: CompressionTrainingArguments | None = None, teacher_model=None, **kwargs):
        if not isinstance(args, CompressionTrainingArguments):
            raise ValueError(f"args must be a CompressionTrainingArguments, got {type(args).__name__}")
        refuse_distillation_options(type(self).__name__, args, kwargs)  # before the conversions below
        for method in enabled_methods(args, "convert"):
            if method.before_trainer is not None:
                model = method.before_trainer(args, model, kwargs.get("train_dataset"))
        replacing = [m.name for m in enabled_methods(args, "convert") if m.after_trainer is not None]
        if replacing and (kwargs.get("optimizers") or (None,))[0] is not None:
            raise invalid(
                "optimizers",
                "(an optimizer, ...)",
                f"(None, ...) with {' and '.join(replacing)} on: the student's modules are replaced in __init__, an "
                "optimizer built before holds the replaced modules",
            )
        # Trainer.__init__, then (in _after_init) the after_trainer conversions, checks and training hooks: the
        # pruners hold the same Parameters the fake-quantized modules train.
        super().__init__(model=model, args=args, teacher_model=teacher_model, **kwargs)

    def calibration_batches(self, count: int, purpose: str) -> list[dict]:
        """The first `count` train batches (in order, unsharded: every process computes the same result), with the
        student's inputs only (the teacher's extra columns dropped)."""
        dataset = self._remove_unused_columns(self.train_dataset, description=purpose)
        loader = DataLoader(dataset, batch_size=self.args.per_device_train_batch_size, collate_fn=self.data_collator)
        student_inputs = self._inputs_of["student"]
        return [{k: v for k, v in b.items() if k in student_inputs} for b in itertools.islice(loader, count)]
