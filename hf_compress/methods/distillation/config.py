"""Arguments of DistillationTrainer: the TrainingArguments you know plus the teacher and the loss mixture."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from transformers import TrainingArguments

from ...checks import check_choice, check_layer_ids, invalid, require
from ...config_fields import config_field
from ..method import MethodArguments
from ..vocabulary.config import VocabularyArguments

ATTENTION_LOSS_TYPES = ("kl", "mse")
TEACHER_QUANTIZATIONS = (None, "int8")
EMBEDDING_POOLINGS = (None, "mean", "cls", "max")
# field -> the loss term it weighs (methods/distillation/losses.py embedding_terms)
EMBEDDING_WEIGHTS = {
    "embedding_mse_weight": "embedding_mse",
    "embedding_cosine_weight": "embedding_cosine",
    "similarity_loss_weight": "similarity_loss",
}


def default_teacher_layer_mapping(num_student_layers: int, num_teacher_layers: int) -> list[int]:
    """Uniform map (TinyBERT): student layer i ↔ teacher layer round((i+1)·L_t/L_s) − 1, 0-based; last ↔ last."""
    return [round((i + 1) * num_teacher_layers / num_student_layers) - 1 for i in range(num_student_layers)]


def refuse_old_layer_mapping(value: Any) -> None:
    """`layer_mapping` was 1-based (0 = embeddings); it is now `teacher_layer_mapping`, 0-based like student_layers."""
    if value is None:
        return
    ok = isinstance(value, (list, tuple)) and all(isinstance(i, int) and i >= 1 for i in value)
    rewritten = f"teacher_layer_mapping={[i - 1 for i in value]}" if ok else "teacher_layer_mapping"
    raise invalid(
        "layer_mapping",
        value,
        f"null; it was renamed: write {rewritten} (0-based teacher layer ids, as student_layers and "
        "model.encoder.layer[i]; matching the embeddings, old id 0, is no longer offered)",
    )


@dataclass
class DistillationTrainingArguments(MethodArguments, VocabularyArguments, TrainingArguments):
    """TrainingArguments for knowledge distillation (Hinton et al. 2015; TinyBERT-style intermediate terms)."""

    renamed_fields = ("layer_mapping",)  # kept only to refuse the old spelling; recipes never write them

    teacher_model_name_or_path: str | None = config_field(
        None, "Hub id or local directory of the teacher; ignored when `teacher_model=` is passed."
    )
    teacher_model_init_kwargs: dict | str | None = config_field(
        None,
        "Keyword arguments (a dict, or a JSON string on the command line) for the teacher's "
        '`from_pretrained`, e.g. {"dtype": "bfloat16"} to halve its memory.',
    )
    temperature: float = config_field(
        2.0, "Softmax temperature T > 0 of the soft targets; the KL term is scaled by T²."
    )
    alpha: float = config_field(
        0.5,
        "Weight in [0, 1] of the distillation term; 1 - alpha weighs the hard-label cross-entropy. "
        "Use 1.0 for unlabelled (transfer) data.",
    )
    hidden_loss_weight: float = config_field(
        0.0, "Weight (>= 0) of the MSE between mapped student and teacher hidden states."
    )
    attention_loss_weight: float = config_field(0.0, "Weight (>= 0) of the divergence between mapped attention maps.")
    attention_loss_type: str = config_field(
        "kl", "Attention term: 'kl' (MiniLM) or 'mse' (TinyBERT) on attention maps."
    )
    teacher_layer_mapping: list[int] | None = config_field(
        None,
        "For the hidden-state and attention terms: the teacher layer (0-based, as student_layers) whose "
        "output each student layer is trained to match, one per student layer, e.g. [1, 3, 5] for 3 of 6. "
        "Default: uniform, student layer i ↔ teacher layer round((i+1)·L_t/L_s) − 1 (last ↔ last, TinyBERT).",
    )
    layer_mapping: list[int] | None = config_field(
        None, "Renamed to teacher_layer_mapping (0-based layer ids); refused with the new spelling."
    )
    cache_teacher_logits: bool = config_field(
        False,
        "Compute teacher logits once per example into an on-disk, memory-mapped table that later epochs, every "
        "DDP rank, a resumed run and later runs with the same teacher and tokens read instead of running the "
        "teacher (30 bytes of RAM per example for the index; logit-only distillation: requires "
        "hidden_loss_weight = attention_loss_weight = 0).",
    )
    teacher_cache_dir: str | None = config_field(
        None,
        "Folder of the teacher-output cache (one sub-folder per teacher fingerprint). null: "
        "$HF_COMPRESS_TEACHER_CACHE, else $HF_COMPRESS_CACHE/teacher-outputs, else "
        "~/.cache/hf_compress/teacher-outputs. Only with cache_teacher_logits.",
    )

    embedding_pooling: str | None = config_field(
        None,
        "Sentence embeddings (a base-model student, e.g. AutoModel): how token states become the sentence "
        "vector, 'mean', 'cls' or 'max'. null: the teacher's sentence-transformers pooling (1_Pooling, and "
        "2_Normalize when it has one), else mean. Only for a base-model student.",
    )
    embedding_mse_weight: float = config_field(
        1.0,
        "Sentence embeddings: weight (>= 0) of the MSE between the student's and the teacher's pooled embeddings "
        "(sentence-transformers' model distillation, Reimers & Gurevych 2020, arXiv:2004.09813).",
    )
    embedding_cosine_weight: float = config_field(
        0.0, "Sentence embeddings: weight (>= 0) of 1 - cosine(student, teacher) per sentence."
    )
    similarity_loss_weight: float = config_field(
        0.0,
        "Sentence embeddings: weight (>= 0) of the MSE between the student's and the teacher's in-batch "
        "cosine-similarity matrices (the relations a retrieval index reads).",
    )

    teacher_quantization: str | None = config_field(
        None,
        "'int8': the teacher's forward runs with int8 weights and activations (hf_compress.quantize_, one "
        "activation range per batch; fbgemm, so CPU only) on a quantized copy, the teacher passed in is left as "
        "it is. The teacher's share of a step shrinks (1.2-1.7x less of it in benchmarks/tasks.py's QA step times) "
        "at the cost of int8's rounding in the soft targets (the SQuAD teacher kept 99.8 percent of its F1). "
        "null: the teacher as loaded.",
    )

    def __post_init__(self):
        # Our own fields first: TrainingArguments.__post_init__ loads transformers' model-loading internals (seconds),
        # and a bad value should come back before that.
        refuse_old_layer_mapping(self.layer_mapping)
        check_choice("teacher_quantization", self.teacher_quantization, TEACHER_QUANTIZATIONS)
        require(self.temperature > 0, "temperature", self.temperature, "a number > 0")
        require(0.0 <= self.alpha <= 1.0, "alpha", self.alpha, "a number in [0, 1]")
        require(self.hidden_loss_weight >= 0, "hidden_loss_weight", self.hidden_loss_weight, "a number >= 0")
        require(self.attention_loss_weight >= 0, "attention_loss_weight", self.attention_loss_weight, "a number >= 0")
        check_choice("attention_loss_type", self.attention_loss_type, ATTENTION_LOSS_TYPES)
        check_choice("embedding_pooling", self.embedding_pooling, EMBEDDING_POOLINGS)
        for name in EMBEDDING_WEIGHTS:
            require(getattr(self, name) >= 0, name, getattr(self, name), "a number >= 0")
        if self.teacher_layer_mapping is not None:
            check_layer_ids("teacher_layer_mapping", self.teacher_layer_mapping)
        super().__post_init__()
        if isinstance(self.teacher_model_init_kwargs, str):
            try:
                self.teacher_model_init_kwargs = json.loads(self.teacher_model_init_kwargs)
            except json.JSONDecodeError as err:
                raise invalid(
                    "teacher_model_init_kwargs",
                    self.teacher_model_init_kwargs,
                    f"a dict or a JSON object string ({err})",
                ) from None
        require(
            self.teacher_model_init_kwargs is None or isinstance(self.teacher_model_init_kwargs, dict),
            "teacher_model_init_kwargs",
            self.teacher_model_init_kwargs,
            "a dict or a JSON object string",
        )
        require(
            self.label_smoothing_factor == 0,
            "label_smoothing_factor",
            self.label_smoothing_factor,
            "0 with distillation (the distillation loss replaces Trainer's, which smoothing acts on; the teacher's "
            "soft targets are the smoothing)",
        )
        require(
            not (self.cache_teacher_logits and (self.hidden_loss_weight > 0 or self.attention_loss_weight > 0)),
            "cache_teacher_logits",
            self.cache_teacher_logits,
            "False when hidden_loss_weight or attention_loss_weight > 0 (those terms need a teacher forward "
            "on every step, so caching logits saves nothing)",
        )

        require(
            self.teacher_cache_dir is None or self.cache_teacher_logits,
            "teacher_cache_dir",
            self.teacher_cache_dir,
            "null unless cache_teacher_logits is true (without the cache nothing reads the folder)",
        )

    @property
    def intermediate_terms(self) -> bool:
        """Whether a hidden-state or attention term is used (they need a layer map and the teacher every step)."""
        return self.hidden_loss_weight > 0 or self.attention_loss_weight > 0
