"""hf_compress: distil, prune, ALBERT-compress and quantize BERT-style models with Hugging Face Transformers."""

__version__ = "0.1.0"

from .data import load_text_classification, load_tweets, minilm_path, tokenize  # noqa: E402
from .losses import attention_loss, ce_loss, hidden_state_loss, kd_loss  # noqa: E402
from .pruning.pruner import Pruner, select_targets  # noqa: E402
from .pruning.schedule import cubic_sparsity  # noqa: E402
from .pruning.structured import ffn_layers, prune_ffn_, slice_ffn_  # noqa: E402
from .quantization import Int8QuantizationConfig, quantize_, quantize_pretrained  # noqa: E402  (registers the loader)
from .trainer.compression_args import CompressionTrainingArguments  # noqa: E402
from .trainer.compression_trainer import CompressionTrainer  # noqa: E402
from .trainer.distillation_args import DistillationTrainingArguments  # noqa: E402
from .trainer.distillation_trainer import DistillationTrainer  # noqa: E402
from .trainer.pruning_args import PruningTrainingArguments  # noqa: E402
from .trainer.pruning_trainer import PruningTrainer  # noqa: E402
from .transforms.albert import albert_num_parameters, to_albert  # noqa: E402
from .transforms.low_rank import (  # noqa: E402
    LowRankLinear,
    factorize_linear_,
    recorded_ranks,
    restore_low_rank_layout,
)
from .transforms.student import create_student  # noqa: E402
from .transforms.vocabulary import prune_vocabulary_  # noqa: E402

__all__ = [
    "Int8QuantizationConfig",
    "quantize_",
    "quantize_pretrained",
    "CompressionTrainer",
    "CompressionTrainingArguments",
    "Pruner",
    "PruningTrainer",
    "PruningTrainingArguments",
    "cubic_sparsity",
    "ffn_layers",
    "prune_ffn_",
    "prune_vocabulary_",
    "slice_ffn_",
    "select_targets",
    "to_albert",
    "albert_num_parameters",
    "LowRankLinear",
    "factorize_linear_",
    "recorded_ranks",
    "restore_low_rank_layout",
    "DistillationTrainer",
    "DistillationTrainingArguments",
    "attention_loss",
    "ce_loss",
    "create_student",
    "hidden_state_loss",
    "kd_loss",
    "load_text_classification",
    "load_tweets",
    "minilm_path",
    "tokenize",
]
