"""Create a smaller student of the same family from a teacher's embeddings and chosen layers (DistilBERT-style)."""

from __future__ import annotations

import copy

import torch
from transformers import PreTrainedModel
from transformers.initialization import no_init_weights

from ...checks import check_student_depth, invalid
from ...families import base_prefix, family_of, layer_list
from ...provenance import portable_reference, record


def uniform_layers(num_teacher_layers: int, num_student_layers: int) -> list[int]:
    """Evenly spaced 0-based teacher layer ids from the bottom (6→3 gives [0, 2, 4], every other layer, DistilBERT)."""
    return [i * num_teacher_layers // num_student_layers for i in range(num_student_layers)]


def create_student(
    teacher: PreTrainedModel, num_hidden_layers: int | None = None, layers: list[int] | None = None
) -> PreTrainedModel:
    """A stock model of the teacher's class with the teacher's embeddings, head and the chosen layers, copied.

    `layers` are 0-based teacher layer ids (module indices, as `model.encoder.layer[i]`); `num_hidden_layers` takes
    evenly spaced ones from the bottom. Sanh et al. 2019 (DistilBERT, arXiv:1910.01108) initialise the student from
    every other teacher layer. Works for every family in `hf_compress.families` except ALBERT (whose layers are
    shared), and under `torch.no_grad()` / `torch.inference_mode()` (the student's tensors are always fresh, normal
    tensors, so it can be trained afterwards).

    Raises:
        ValueError: neither or both of num_hidden_layers / layers, ids outside the teacher, an unsupported family,
            a quantized teacher.
    """
    from ..int8.transform import check_not_quantized

    try:  # an int8 teacher's packed weights cannot be copied into float layers: refused before any copy
        check_not_quantized(teacher)
    except ValueError as err:
        raise invalid("teacher", type(teacher).__name__, f"a full-precision model ({err})") from None
    teacher_layers = layer_list(teacher)
    n_teacher = len(teacher_layers)
    if num_hidden_layers is None and layers is None:
        raise ValueError(
            "num_hidden_layers=None is invalid; allowed: an integer in [1, teacher depth], or give layers"
        )
    check_student_depth(num_hidden_layers, layers, n_teacher)
    layers = list(layers) if layers is not None else uniform_layers(n_teacher, num_hidden_layers)

    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    # Built outside inference mode (a student built inside it could never be trained) and without its random init:
    # every tensor is overwritten from the teacher below (a missing one is an error), and the init of a BERT-base
    # sized model costs a second or more, which a student search building dozens of skeletons pays each time.
    # no_init_weights also skips the tying of weights that init_weights does, so it is done here.
    with torch.inference_mode(False):
        with no_init_weights():
            student = type(teacher)(config)
        student.tie_weights()
        layer_prefix = f"{base_prefix(teacher)}{family_of(teacher).layers}."
        state = {}
        for name, tensor in teacher.state_dict().items():
            if name.startswith(layer_prefix):
                teacher_id, _, rest = name[len(layer_prefix) :].partition(".")
                for student_id in [s for s, t in enumerate(layers) if t == int(teacher_id)]:
                    state[f"{layer_prefix}{student_id}.{rest}"] = tensor.clone()
            else:  # embeddings, pooler, head: same shapes in teacher and student
                state[name] = tensor.clone()
        missing, unexpected = student.load_state_dict(state, strict=False)
    if unexpected or missing:
        raise ValueError(f"create_student could not map every tensor: missing {missing}, unexpected {unexpected}")
    student.train(teacher.training)
    record(
        student.config,
        "student",
        {"teacher": portable_reference(teacher.config.name_or_path) or None, "layers": layers},
    )
    return student.to(next(teacher.parameters()).device)
