"""CompressionTrainer: distil from a teacher while pruning, as movement pruning reaches its published numbers."""

from __future__ import annotations

from ..transforms.albert import to_albert
from .compression_args import CompressionTrainingArguments
from .distillation_trainer import DistillationTrainer
from .pruning_trainer import PruningMixin


class CompressionTrainer(PruningMixin, DistillationTrainer):
    """DistillationTrainer plus PruningTrainer's masks and schedule, in one loop; an ALBERT-style student if asked;
    int8 at finalization if asked."""

    _tag_names = ["hf_compress", "distillation", "pruning"]

    def __init__(self, model=None, args: CompressionTrainingArguments | None = None, teacher_model=None, **kwargs):
        if not isinstance(args, CompressionTrainingArguments):
            raise ValueError(f"args must be a CompressionTrainingArguments, got {type(args).__name__}")
        if args.albert_conversion and model is not None and model.config.model_type != "albert":
            # Converted before Trainer sees it, so the optimizer holds the shared, factorised parameters.
            model = to_albert(model, args.embedding_size, args.num_hidden_groups, args.sharing_init)
        super().__init__(model=model, args=args, teacher_model=teacher_model, **kwargs)
        self._setup_pruning()

    def _finalize_model(self) -> None:
        """Quantize after pruning has been baked and sliced (the rest of finalization runs first)."""
        super()._finalize_model()
        if self.args.quantization == "none" or getattr(self.model.config, "quantization_config", None) is not None:
            return
        from ..quantization import Int8QuantizationConfig, quantize_

        config = Int8QuantizationConfig(modules_to_not_convert=self.args.quantization_modules_to_not_convert)
        quantize_(self.model, config)
