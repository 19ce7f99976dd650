"""Validation rules shared by arguments classes, recipes, the CLI and transforms: each rule lives here once.

Every rule raises the one message format of the project: ``field=value is invalid; allowed: ...``. A rule that needs a
model's shape takes it as an optional argument: arguments classes call it without (what can be checked before any
model is loaded), transforms and trainers call it with (what only the model can tell).
"""

from __future__ import annotations

from typing import Any

SHARING_INITS = ("first", "mean")


def invalid(field: str, value: Any, allowed: str) -> ValueError:
    """The project's one error message: the field, the value as given, and what is allowed."""
    return ValueError(f"{field}={value!r} is invalid; allowed: {allowed}")


def require(condition: bool, field: str, value: Any, allowed: str) -> None:
    """Raise `invalid(field, value, allowed)` unless `condition` holds."""
    if not condition:
        raise invalid(field, value, allowed)


def is_int(value: Any) -> bool:
    """An int that is not a bool (YAML and argparse can hand either)."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_choice(field: str, value: Any, choices: tuple) -> None:
    """`value` is one of `choices`."""
    require(value in choices, field, value, ", ".join(repr(c) for c in choices))


def check_fraction(field: str, value: Any, closed: bool = False) -> None:
    """A number in [0, 1) (or [0, 1] when `closed`)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0)
    require(ok, field, value, "a number in [0, 1]" if closed else "a number in [0, 1)")


def check_positive_int(field: str, value: Any, optional: bool = False) -> None:
    """An integer >= 1 (or None when `optional`)."""
    if optional and value is None:
        return
    require(is_int(value) and value >= 1, field, value, "an integer >= 1" + (" or null" if optional else ""))


def check_embedding_size(value: Any, hidden_size: int | None = None, field: str = "embedding_size") -> None:
    """ALBERT-style factorised embedding size E: None (no factorisation) or an int in [1, hidden_size]."""
    if value is None:
        return
    upper = "hidden_size" if hidden_size is None else str(hidden_size)
    ok = is_int(value) and value >= 1 and (hidden_size is None or value <= hidden_size)
    require(ok, field, value, f"null or an integer in [1, {upper}]")


def check_num_hidden_groups(value: Any, num_layers: int | None = None, field: str = "num_hidden_groups") -> None:
    """ALBERT-style sharing groups G: None (no sharing) or a divisor of the (student's) number of layers."""
    if value is None:
        return
    if num_layers is None:
        require(is_int(value) and value >= 1, field, value, "null or a divisor of the number of layers")
        return
    divisors = [g for g in range(1, num_layers + 1) if num_layers % g == 0]
    require(is_int(value) and value in divisors, field, value, f"null or a divisor of {num_layers} layers: {divisors}")


def check_sharing_init(value: Any, layers_per_group: int | None = None, field: str = "sharing_init") -> None:
    """How a shared layer is initialised from its group: 'first', 'mean', or an index within the group."""
    upper = "layers per group - 1" if layers_per_group is None else str(layers_per_group - 1)
    ok = value in SHARING_INITS or (
        is_int(value) and value >= 0 and (layers_per_group is None or value < layers_per_group)
    )
    require(ok, field, value, f"'first', 'mean' or a layer index within a group in [0, {upper}]")


def check_student_depth(
    num_hidden_layers: Any = None,
    layers: Any = None,
    teacher_depth: int | None = None,
    prefix: str = "",
) -> None:
    """Student depth: exactly one of num_hidden_layers (1..teacher depth) or layers (0-based teacher layer ids)."""
    n_field, l_field = f"{prefix}num_hidden_layers", f"{prefix}layers"
    if num_hidden_layers is not None and layers is not None:
        raise invalid(l_field, layers, f"null when {n_field}={num_hidden_layers!r} is set (give at most one)")
    if num_hidden_layers is not None:
        upper = "the teacher's depth" if teacher_depth is None else str(teacher_depth)
        ok = is_int(num_hidden_layers) and num_hidden_layers >= 1
        ok = ok and (teacher_depth is None or num_hidden_layers <= teacher_depth)
        require(ok, n_field, num_hidden_layers, f"an integer in [1, {upper}]")
    if layers is not None:
        check_layer_ids(l_field, layers, teacher_depth)


def check_layer_ids(field: str, layers: Any, depth: int | None = None, allow_repeats: bool = True) -> None:
    """A non-empty list of 0-based layer ids (module indices, as in `model.encoder.layer[i]`), below `depth`."""
    upper = "depth - 1" if depth is None else str(depth - 1)
    ok = isinstance(layers, (list, tuple)) and len(layers) > 0 and all(is_int(i) and i >= 0 for i in layers)
    ok = ok and (depth is None or all(i < depth for i in layers))
    ok = ok and (allow_repeats or len(set(layers)) == len(layers))
    require(ok, field, layers, f"a non-empty list of 0-based layer ids in [0, {upper}]")
