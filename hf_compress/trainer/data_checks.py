"""Model/data compatibility checked when a trainer is built: label count, label names, label column, label type.

Without these checks a mismatch surfaces mid-training (`IndexError: Target 2 is out of bounds` at step 5, or
`Unable to create tensor ... excessive nesting` for string labels), after the teacher has loaded and time was spent.
"""

from __future__ import annotations

from datasets import ClassLabel, Dataset, Sequence

from ..checks import invalid
from ..methods.distillation.loss import SPAN_LABELS, head_kind

LABEL_COLUMNS = ("labels", "label", "label_ids")


def _named_labels(config) -> dict[int, str]:
    return {int(k): str(v) for k, v in (config.id2label or {}).items() if not str(v).startswith("LABEL_")}


def check_dataset_labels(model, dataset, field: str) -> None:
    """Raise a ValueError naming `field` when `dataset` cannot train or evaluate `model`'s head.

    Checked for `datasets.Dataset` (other datasets are iterated lazily and left to Trainer): span heads need both
    start/end positions or neither; classification heads need integer labels below `num_labels` (string labels:
    map them to a ClassLabel first), and ClassLabel names equal to the model's id2label when both are named.
    """
    if not isinstance(dataset, Dataset) or len(dataset) == 0:
        return
    kind = head_kind(model)
    columns = set(dataset.column_names)
    if kind == "span":
        present = [c for c in SPAN_LABELS if c in columns]
        if len(present) == 1:
            raise invalid(field, f"<columns {sorted(columns)}>", "both start_positions and end_positions, or neither")
        return
    if "input_ids" not in columns and "inputs_embeds" not in columns:
        raise invalid(field, f"<columns {sorted(columns)}>", "a tokenised dataset (an input_ids column)")
    column = next((c for c in LABEL_COLUMNS if c in columns), None)
    if column is None or kind not in ("sequence", "token"):
        return  # unlabelled data: distillation with alpha=1 (the trainer says so if it needs labels)
    feature = dataset.features[column]
    inner = feature.feature if isinstance(feature, Sequence) else feature
    num_labels = model.config.num_labels
    if isinstance(inner, ClassLabel):
        named = _named_labels(model.config)
        if named and named != dict(enumerate(inner.names)):
            raise invalid(
                field, f"<{column} names {inner.names}>", f"the model's labels {named} (the same names in order)"
            )
        values = range(inner.num_classes)
    else:
        values = dataset[column]
        if kind == "token" or (values and isinstance(values[0], list)):
            values = [v for row in values for v in row]
        if any(isinstance(v, str) for v in values):
            raise invalid(
                field,
                f"<string {column} such as {next(v for v in values if isinstance(v, str))!r}>",
                "integer class ids: cast the column to a ClassLabel (datasets' class_encode_column) first",
            )
    top = max((int(v) for v in values if v is not None and int(v) != -100), default=-1)
    if top >= num_labels:
        raise invalid(
            field,
            f"<{column} up to {top}>",
            f"class ids in [0, {num_labels}) for a model with num_labels={num_labels}; give the model "
            f"num_labels={top + 1} (from_pretrained(..., num_labels=...)) or check the data",
        )


def check_trainer_datasets(model, train_dataset=None, eval_dataset=None) -> None:
    """`check_dataset_labels` for a trainer's train and eval datasets (eval may be a dict of datasets)."""
    check_dataset_labels(model, train_dataset, "train_dataset")
    evals = eval_dataset if isinstance(eval_dataset, dict) else {"": eval_dataset}
    for name, dataset in evals.items():
        check_dataset_labels(model, dataset, f"eval_dataset[{name!r}]" if name else "eval_dataset")
