"""CompressionTrainer: distil from a teacher while pruning, as movement pruning reaches its published numbers."""

from __future__ import annotations

from ..albert import to_albert
from .compression_args import CompressionTrainingArguments
from .distillation_trainer import DistillationTrainer
from .pruning_trainer import PruningMixin


class CompressionTrainer(PruningMixin, DistillationTrainer):
    """DistillationTrainer plus PruningTrainer's masks and schedule, in one loop; an ALBERT-style student if asked."""

    _tag_names = ["hf_compress", "distillation", "pruning"]

    def __init__(self, model=None, args: CompressionTrainingArguments | None = None, teacher_model=None, **kwargs):
        if not isinstance(args, CompressionTrainingArguments):
            raise ValueError(f"args must be a CompressionTrainingArguments, got {type(args).__name__}")
        if args.albert_conversion and model is not None and model.config.model_type != "albert":
            # Converted before Trainer sees it, so the optimizer holds the shared, factorised parameters.
            model = to_albert(model, args.embedding_size, args.num_hidden_groups, args.sharing_init)
        super().__init__(model=model, args=args, teacher_model=teacher_model, **kwargs)
        self._setup_pruning()
