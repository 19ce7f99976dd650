"""Student creation: a shallower model of the teacher's family from its embeddings and chosen layers."""

from __future__ import annotations

from ..method import Method

# Built by the recipe (student_num_hidden_layers / student_layers) or by the user's create_student call, before any
# trainer exists: no arguments class turns it on.
METHOD = Method(
    name="student",
    label="student initialised from teacher layers (DistilBERT-style)",
    tags=("distillation",),
    stages=("student",),
)
