"""Arguments of DistillationTrainer: the TrainingArguments you know plus the teacher and the loss mixture."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainingArguments

ATTENTION_LOSS_TYPES = ("kl", "mse")


def _require(condition: bool, field_name: str, value: Any, allowed: str) -> None:
    """Raise the ValueError every arguments class uses: the field, the value, and what is allowed."""
    if not condition:
        raise ValueError(f"{field_name}={value!r} is invalid; allowed: {allowed}")


@dataclass
class DistillationTrainingArguments(TrainingArguments):
    """TrainingArguments for knowledge distillation (Hinton et al. 2015; TinyBERT-style intermediate terms)."""

    teacher_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Hub id or local directory of the teacher; ignored when `teacher_model=` is passed."},
    )
    teacher_model_init_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments (a dict, or a JSON string on the command line) for the teacher's "
            '`from_pretrained`, e.g. {"dtype": "bfloat16"} to halve its memory.'
        },
    )
    temperature: float = field(
        default=2.0, metadata={"help": "Softmax temperature T > 0 of the soft targets; the KL term is scaled by T²."}
    )
    alpha: float = field(
        default=0.5,
        metadata={
            "help": "Weight in [0, 1] of the distillation term; 1 - alpha weighs the hard-label cross-entropy. "
            "Use 1.0 for unlabelled (transfer) data."
        },
    )
    hidden_loss_weight: float = field(
        default=0.0, metadata={"help": "Weight (>= 0) of the MSE between mapped student and teacher hidden states."}
    )
    attention_loss_weight: float = field(
        default=0.0, metadata={"help": "Weight (>= 0) of the divergence between mapped attention maps."}
    )
    attention_loss_type: str = field(
        default="kl",
        metadata={"help": "Attention term: 'kl' (MiniLM) or 'mse' (TinyBERT) on attention maps."},
    )
    layer_mapping: list[int] | None = field(
        default=None,
        metadata={
            "help": "Teacher layer (1-based; 0 = embeddings) matched by each student layer 1..L_s, e.g. [2, 4, 6]. "
            "Default: uniform spacing, student layer i ↔ teacher layer round(i·L_t/L_s)."
        },
    )
    cache_teacher_logits: bool = field(
        default=False,
        metadata={
            "help": "Compute teacher logits once per example and reuse them on later epochs (logit-only "
            "distillation: requires hidden_loss_weight = attention_loss_weight = 0)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if isinstance(self.teacher_model_init_kwargs, str):
            try:
                self.teacher_model_init_kwargs = json.loads(self.teacher_model_init_kwargs)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"teacher_model_init_kwargs={self.teacher_model_init_kwargs!r} is invalid; allowed: a dict "
                    f"or a JSON object string ({err})"
                ) from None
        _require(
            self.teacher_model_init_kwargs is None or isinstance(self.teacher_model_init_kwargs, dict),
            "teacher_model_init_kwargs",
            self.teacher_model_init_kwargs,
            "a dict or a JSON object string",
        )
        _require(self.temperature > 0, "temperature", self.temperature, "a number > 0")
        _require(0.0 <= self.alpha <= 1.0, "alpha", self.alpha, "a number in [0, 1]")
        _require(self.hidden_loss_weight >= 0, "hidden_loss_weight", self.hidden_loss_weight, "a number >= 0")
        _require(self.attention_loss_weight >= 0, "attention_loss_weight", self.attention_loss_weight, "a number >= 0")
        _require(
            self.attention_loss_type in ATTENTION_LOSS_TYPES,
            "attention_loss_type",
            self.attention_loss_type,
            " or ".join(repr(t) for t in ATTENTION_LOSS_TYPES),
        )
        if self.layer_mapping is not None:
            _require(
                len(self.layer_mapping) > 0 and all(isinstance(i, int) and i >= 0 for i in self.layer_mapping),
                "layer_mapping",
                self.layer_mapping,
                "a non-empty list of teacher layer ids >= 0, one per student layer",
            )
        _require(
            not (self.cache_teacher_logits and (self.hidden_loss_weight > 0 or self.attention_loss_weight > 0)),
            "cache_teacher_logits",
            self.cache_teacher_logits,
            "False when hidden_loss_weight or attention_loss_weight > 0 (those terms need a teacher forward "
            "on every step, so caching logits saves nothing)",
        )
