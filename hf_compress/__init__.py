"""hf_compress: distil, prune, ALBERT-compress and quantize BERT-style models with Hugging Face Transformers.

The public names load with their modules when first used (PEP 562), so `hf-compress --help`, a refused recipe and
`import hf_compress` do not pay for datasets, scipy and transformers' model-loading internals. Importing the package
registers the saved formats (int8, low-bit, low-rank layout) with `from_pretrained`, as soon as transformers loads its
quantizers (`hf_compress.format.registration`; `import hf_compress.quantization` registers at once).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.2.0"

from .format.registration import register_when_quantizers_load  # noqa: E402

# The loaders of our formats join from_pretrained's when transformers' quantizers load (format/registration.py).
register_when_quantizers_load()

# Public name -> the module that defines it (relative to this package).
_LAZY: dict[str, str] = {
    "CompressionTrainer": ".trainer.compression_trainer",
    "CompressionTrainingArguments": ".trainer.compression_args",
    "DistillationTrainer": ".trainer.distillation_trainer",
    "DistillationTrainingArguments": ".methods.distillation.config",
    "FAMILIES": ".families",
    "FFNPruner": ".methods.ffn_pruning.pruner",
    "FakeQuantEmbedding": ".methods.low_bit.fake_quant",
    "FakeQuantLinear": ".methods.low_bit.fake_quant",
    "HeadImportance": ".methods.pruning.heads",
    "Int8Calibration": ".methods.int8.calibration",
    "Int8QuantizationConfig": ".format.config",
    "LowBitEmbedding": ".methods.low_bit.modules",
    "LowBitLinear": ".methods.low_bit.modules",
    "LowRankConfig": ".format.config",
    "LowRankLinear": ".methods.low_rank.transform",
    "Pooling": ".tasks.sentence_embedding",
    "Pruner": ".methods.pruning.pruner",
    "PruningTrainer": ".trainer.pruning_trainer",
    "PruningTrainingArguments": ".methods.pruning.config",
    "QuestionAnswering": ".tasks",
    "RemainingPruner": ".methods.pruning.pruner",
    "SearchArguments": ".search.config",
    "TeacherOutputCache": ".methods.distillation.teacher_cache",
    "SparsitySchedule": ".methods.pruning.schedule",
    "TextClassification": ".tasks",
    "TokenClassification": ".tasks",
    "albert_num_parameters": ".methods.albert.transform",
    "align_labels": ".tasks.token_classification",
    "allocate_bits": ".methods.low_bit.bit_widths",
    "attention_loss": ".methods.distillation.losses",
    "bake_low_bit_": ".methods.low_bit.modules",
    "best_spans": ".tasks.qa_postprocessing",
    "calibrate_gptq_": ".methods.int8.gptq",
    "ce_loss": ".methods.distillation.losses",
    "choose_bit_widths": ".methods.low_bit.bit_widths",
    "create_student": ".methods.student.transform",
    "embedding_terms": ".methods.distillation.losses",
    "cubic_sparsity": ".methods.pruning.schedule",
    "factorize_linear_": ".methods.low_rank.transform",
    "fake_quantize_": ".methods.low_bit.fake_quant",
    "family_of": ".families",
    "ffn_layers": ".methods.ffn_pruning.transform",
    "get_task": ".tasks",
    "hidden_state_loss": ".methods.distillation.losses",
    "kd_loss": ".methods.distillation.losses",
    "keep_outlier_channels_": ".methods.int8.outliers",
    "load_conll": ".data",
    "load_squad": ".data",
    "load_text_classification": ".data",
    "load_tweets": ".data",
    "minilm_path": ".data",
    "pack_codes": ".methods.low_bit.fake_quant",
    "prune_ffn_": ".methods.ffn_pruning.transform",
    "prune_vocabulary_": ".methods.vocabulary.transform",
    "quantize_": ".methods.int8.transform",
    "quantize_pretrained": ".methods.int8.transform",
    "read_pooling": ".tasks.sentence_embedding",
    "recorded_ranks": ".methods.low_rank.transform",
    "search_student": ".search.search",
    "restore_low_rank_layout": ".methods.low_rank.transform",
    "select_targets": ".methods.pruning.pruner",
    "sentence_embeddings": ".tasks.sentence_embedding",
    "set_low_bit_compute_": ".methods.low_bit.modules",
    "slice_ffn_": ".methods.ffn_pruning.transform",
    "smooth_activations_": ".methods.int8.smoothquant",
    "to_albert": ".methods.albert.transform",
    "tokenize": ".data",
    "unpack_codes": ".methods.low_bit.fake_quant",
    "use_int8_kernels_": ".format.compressed_tensors",
    "window_features": ".tasks.qa_postprocessing",
    "write_compressed_tensors": ".format.compressed_tensors",
    "write_sentence_transformers_files": ".tasks.sentence_embedding",
}

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
    "Int8Calibration",
    "Int8QuantizationConfig",
    "LowBitEmbedding",
    "LowBitLinear",
    "LowRankConfig",
    "LowRankLinear",
    "Pooling",
    "Pruner",
    "PruningTrainer",
    "PruningTrainingArguments",
    "QuestionAnswering",
    "RemainingPruner",
    "SearchArguments",
    "SparsitySchedule",
    "TeacherOutputCache",
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
    "embedding_terms",
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
    "read_pooling",
    "recorded_ranks",
    "restore_low_rank_layout",
    "search_student",
    "select_targets",
    "sentence_embeddings",
    "set_low_bit_compute_",
    "slice_ffn_",
    "smooth_activations_",
    "to_albert",
    "tokenize",
    "unpack_codes",
    "use_int8_kernels_",
    "window_features",
    "write_compressed_tensors",
    "write_sentence_transformers_files",
]


def __getattr__(name: str):
    """Load a public name's module on first use, then keep the name here (later lookups are plain attributes)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


if TYPE_CHECKING:  # what static tools and IDEs see: the eager imports
    from .data import load_conll, load_squad, load_text_classification, load_tweets, minilm_path, tokenize
    from .families import FAMILIES, family_of
    from .format.config import Int8QuantizationConfig, LowRankConfig
    from .methods.albert.transform import albert_num_parameters, to_albert
    from .methods.distillation.config import DistillationTrainingArguments
    from .methods.distillation.losses import attention_loss, ce_loss, hidden_state_loss, kd_loss
    from .methods.ffn_pruning.pruner import FFNPruner
    from .methods.ffn_pruning.transform import ffn_layers, prune_ffn_, slice_ffn_
    from .methods.int8.calibration import Int8Calibration
    from .methods.int8.gptq import calibrate_gptq_
    from .methods.int8.outliers import keep_outlier_channels_
    from .methods.int8.smoothquant import smooth_activations_
    from .methods.int8.transform import quantize_, quantize_pretrained
    from .methods.low_bit.bit_widths import allocate_bits, choose_bit_widths
    from .methods.low_bit.fake_quant import (
        FakeQuantEmbedding,
        FakeQuantLinear,
        fake_quantize_,
        pack_codes,
        unpack_codes,
    )
    from .methods.low_bit.modules import LowBitEmbedding, LowBitLinear, bake_low_bit_, set_low_bit_compute_
    from .methods.low_rank.transform import LowRankLinear, factorize_linear_, recorded_ranks, restore_low_rank_layout
    from .methods.pruning.config import PruningTrainingArguments
    from .methods.pruning.heads import HeadImportance
    from .methods.pruning.pruner import Pruner, RemainingPruner, select_targets
    from .methods.pruning.schedule import SparsitySchedule, cubic_sparsity
    from .methods.student.transform import create_student
    from .methods.vocabulary.transform import prune_vocabulary_
    from .search.config import SearchArguments
    from .search.search import search_student
    from .tasks import QuestionAnswering, TextClassification, TokenClassification, get_task
    from .tasks.qa_postprocessing import best_spans, window_features
    from .tasks.token_classification import align_labels
    from .trainer.compression_args import CompressionTrainingArguments
    from .trainer.compression_trainer import CompressionTrainer
    from .trainer.distillation_trainer import DistillationTrainer
    from .trainer.pruning_trainer import PruningTrainer
