"""hf_compress: distil, prune, ALBERT-compress and quantize BERT-style models with Hugging Face Transformers."""

__version__ = "0.2.0"

from .data import load_conll, load_squad, load_text_classification, load_tweets, minilm_path, tokenize  # noqa: E402
from .families import FAMILIES, family_of  # noqa: E402
from .methods.albert.transform import albert_num_parameters, to_albert  # noqa: E402
from .methods.distillation.config import DistillationTrainingArguments  # noqa: E402
from .methods.distillation.losses import attention_loss, ce_loss, hidden_state_loss, kd_loss  # noqa: E402
from .methods.ffn_pruning.pruner import FFNPruner  # noqa: E402
from .methods.ffn_pruning.transform import ffn_layers, prune_ffn_, slice_ffn_  # noqa: E402
from .methods.low_rank.layout import LowRankConfig  # noqa: E402  (registers the factorised-layout loader)
from .methods.low_rank.transform import (  # noqa: E402
    LowRankLinear,
    factorize_linear_,
    recorded_ranks,
    restore_low_rank_layout,
)
from .methods.pruning.config import PruningTrainingArguments  # noqa: E402
from .methods.pruning.heads import HeadImportance  # noqa: E402
from .methods.pruning.pruner import Pruner, RemainingPruner, select_targets  # noqa: E402
from .methods.pruning.schedule import SparsitySchedule, cubic_sparsity  # noqa: E402
from .methods.student.transform import create_student  # noqa: E402
from .methods.vocabulary.transform import prune_vocabulary_  # noqa: E402
from .quantization import (  # noqa: E402  (registers the loader)
    FakeQuantEmbedding,
    FakeQuantLinear,
    Int8QuantizationConfig,
    LowBitEmbedding,
    LowBitLinear,
    allocate_bits,
    bake_low_bit_,
    calibrate_gptq_,
    choose_bit_widths,
    fake_quantize_,
    keep_outlier_channels_,
    pack_codes,
    quantize_,
    quantize_pretrained,
    set_low_bit_compute_,
    smooth_activations_,
    unpack_codes,
)
from .tasks import QuestionAnswering, TextClassification, TokenClassification, get_task  # noqa: E402
from .tasks.qa_postprocessing import best_spans, window_features  # noqa: E402
from .tasks.token_classification import align_labels  # noqa: E402
from .trainer.compression_args import CompressionTrainingArguments  # noqa: E402
from .trainer.compression_trainer import CompressionTrainer  # noqa: E402
from .trainer.distillation_trainer import DistillationTrainer  # noqa: E402
from .trainer.pruning_trainer import PruningTrainer  # noqa: E402

__all__ = [
    "FAMILIES",
    "CompressionTrainer",
    "CompressionTrainingArguments",
    "DistillationTrainer",
    "DistillationTrainingArguments",
    "FFNPruner",
    "FakeQuantEmbedding",
    "FakeQuantLinear",
    "HeadImportance",
    "Int8QuantizationConfig",
    "LowBitEmbedding",
    "LowBitLinear",
    "LowRankConfig",
    "LowRankLinear",
    "Pruner",
    "PruningTrainer",
    "PruningTrainingArguments",
    "QuestionAnswering",
    "RemainingPruner",
    "SparsitySchedule",
    "TextClassification",
    "TokenClassification",
    "albert_num_parameters",
    "align_labels",
    "allocate_bits",
    "attention_loss",
    "bake_low_bit_",
    "best_spans",
    "calibrate_gptq_",
    "ce_loss",
    "choose_bit_widths",
    "create_student",
    "cubic_sparsity",
    "factorize_linear_",
    "fake_quantize_",
    "family_of",
    "ffn_layers",
    "get_task",
    "hidden_state_loss",
    "kd_loss",
    "keep_outlier_channels_",
    "load_conll",
    "load_squad",
    "load_text_classification",
    "load_tweets",
    "minilm_path",
    "pack_codes",
    "prune_ffn_",
    "prune_vocabulary_",
    "quantize_",
    "quantize_pretrained",
    "recorded_ranks",
    "restore_low_rank_layout",
    "select_targets",
    "set_low_bit_compute_",
    "slice_ffn_",
    "smooth_activations_",
    "to_albert",
    "tokenize",
    "unpack_codes",
    "window_features",
]
