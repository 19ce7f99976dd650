"""CompressionTrainer: distil from a teacher while pruning, as movement pruning reaches its published numbers."""

from __future__ import annotations

from ..transforms.albert import to_albert, token_frequencies
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
            weights = self._token_weights(args, model, kwargs.get("train_dataset"))
            model = to_albert(model, args.embedding_size, args.num_hidden_groups, args.sharing_init, weights)
        super().__init__(model=model, args=args, teacher_model=teacher_model, **kwargs)
        self._setup_pruning()

    @staticmethod
    def _token_weights(args: CompressionTrainingArguments, model, train_dataset):
        """Vocabulary row weights for the factorisation, counted over the training data's input_ids."""
        if args.embedding_weighting == "uniform" or args.embedding_size is None:
            return None
        if train_dataset is None or "input_ids" not in getattr(train_dataset, "column_names", ()):
            raise ValueError(
                f"embedding_weighting={args.embedding_weighting!r} is invalid without a tokenised train_dataset; "
                "allowed: 'uniform', or give the trainer a train_dataset with input_ids"
            )
        counts = token_frequencies(train_dataset["input_ids"], model.config.vocab_size)
        return counts if args.embedding_weighting == "frequency" else (counts > 0).double()

    def _finalize_model(self) -> None:
        """Quantize after pruning has been baked and sliced (the rest of finalization runs first)."""
        super()._finalize_model()
        if self.args.quantization == "none" or getattr(self.model.config, "quantization_config", None) is not None:
            return
        from ..quantization import Int8QuantizationConfig, quantize_

        config = Int8QuantizationConfig(modules_to_not_convert=self.args.quantization_modules_to_not_convert)
        quantize_(self.model, config)
