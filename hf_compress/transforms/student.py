"""Create a smaller student of the same family from a teacher's embeddings and chosen layers (DistilBERT-style)."""

from __future__ import annotations

import copy

from torch import nn
from transformers import PreTrainedModel

from ..provenance import record


def encoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The ModuleList of transformer layers of a BERT-style model (BertModel or a task model around one)."""
    base = getattr(model, model.base_model_prefix, model)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"{type(model).__name__} has no `encoder.layer` ModuleList; create_student supports BERT-style models "
            "(BERT, RoBERTa, ELECTRA, MiniLM, ...)"
        )
    return layers


def uniform_layers(num_teacher_layers: int, num_student_layers: int) -> list[int]:
    """Evenly spaced teacher layer ids from the bottom (6→3 gives [0, 2, 4], every other layer as in DistilBERT)."""
    return [i * num_teacher_layers // num_student_layers for i in range(num_student_layers)]


def create_student(
    teacher: PreTrainedModel, num_hidden_layers: int | None = None, layers: list[int] | None = None
) -> PreTrainedModel:
    """A stock model of the teacher's class with the teacher's embeddings, head and the chosen layers, copied.

    Sanh et al. 2019 (DistilBERT, arXiv:1910.01108) initialise the student from every other teacher layer.
    """
    teacher_layers = encoder_layers(teacher)
    n_teacher = len(teacher_layers)
    if (num_hidden_layers is None) == (layers is None):
        raise ValueError("create_student: give exactly one of num_hidden_layers or layers")
    if layers is None:
        if not 1 <= num_hidden_layers <= n_teacher:
            raise ValueError(f"num_hidden_layers={num_hidden_layers} must be in [1, {n_teacher}] (teacher depth)")
        layers = uniform_layers(n_teacher, num_hidden_layers)
    layers = list(layers)
    if not layers or any(not 0 <= i < n_teacher for i in layers):
        raise ValueError(f"layers={layers} must be a non-empty list of teacher layer ids in [0, {n_teacher - 1}]")

    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = type(teacher)(config)
    # Everything but the encoder layers (embeddings, pooler, classifier) has the same shape: copy it wholesale.
    kept = {k: v for k, v in teacher.state_dict().items() if ".encoder.layer." not in f".{k}"}
    missing, unexpected = student.load_state_dict(kept, strict=False)
    assert not unexpected, unexpected
    student_layers = encoder_layers(student)
    for student_id, teacher_id in enumerate(layers):
        student_layers[student_id].load_state_dict(teacher_layers[teacher_id].state_dict())
    record(student.config, "student", {"teacher": teacher.config.name_or_path or None, "layers": layers})
    return student.to(next(teacher.parameters()).device)
