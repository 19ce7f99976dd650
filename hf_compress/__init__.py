"""hf_compress: distil, prune, ALBERT-compress and quantize BERT-style models with Hugging Face Transformers."""

__version__ = "0.2.0"

from .data import load_conll, load_squad, load_text_classification, load_tweets, minilm_path, tokenize  # noqa: E402
from .families import FAMILIES, family_of  # noqa: E402
from .format import quantizer as _quantizer  # noqa: E402, F401  (registers the loaders with from_pretrained)
from .format.config import (
    Int8QuantizationConfig,  # noqa: E402
    LowRankConfig,  # noqa: E402
)
from .methods.albert.transform import albert_num_parameters, to_albert  # noqa: E402
from .methods.distillation.config import DistillationTrainingArguments  # noqa: E402
from .methods.distillation.losses import attention_loss, ce_loss, hidden_state_loss, kd_loss  # noqa: E402
from .methods.ffn_pruning.pruner import FFNPruner  # noqa: E402
from .methods.ffn_pruning.transform import ffn_layers, prune_ffn_, slice_ffn_  # noqa: E402
from .methods.int8.gptq import calibrate_gptq_  # noqa: E402
from .methods.int8.outliers import keep_outlier_channels_  # noqa: E402
from .methods.int8.smoothquant import smooth_activations_  # noqa: E402
from .methods.int8.transform import quantize_, quantize_pretrained  # noqa: E402
from .methods.low_bit.bit_widths import allocate_bits, choose_bit_widths  # noqa: E402
from .methods.low_bit.fake_quant import (  # noqa: E402
    FakeQuantEmbedding,
    FakeQuantLinear,
    fake_quantize_,
    pack_codes,
    unpack_codes,
)
from .methods.low_bit.modules import LowBitEmbedding, LowBitLinear, bake_low_bit_, set_low_bit_compute_  # noqa: E402
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
