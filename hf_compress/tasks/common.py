"""What every task's data reading and report checks share."""

from __future__ import annotations

import os
from collections.abc import Callable

from datasets import Dataset, DatasetDict

from ..checks import invalid


def read_task_data(dataset_name: str, record_files: dict[str, str], read_own_format: Callable) -> DatasetDict:
    """The raw splits of `dataset_name` (a `task-data://` folder, a local path or a Hub id).

    A local file whose extension is in `record_files` (extension → `datasets` builder) is a file of Hub-schema
    records; any other local path is the task's own format (`read_own_format(path)`: CoNLL columns, SQuAD JSON); a
    name that is not a local path goes to `load_dataset`. A single split becomes `train`.
    Raises ValueError naming the file and what is wrong with it (`load_data_file`), and for a split without examples.
    """
    from ..data import check_not_empty, load_data_file, load_data_folder
    from ..loading import resolve_data_path

    path = resolve_data_path(dataset_name)
    builder = record_files.get(os.path.splitext(path)[1].lower()) if os.path.isfile(path) else None
    if builder:
        raw = load_data_file(path, builder)
    else:
        raw = read_own_format(path) if os.path.exists(path) else load_data_folder(path)
    raw = DatasetDict(train=raw) if isinstance(raw, Dataset) else raw
    check_not_empty(raw, "dataset_name", dataset_name)
    return raw


def check_head(model, model_dir: str, task) -> None:
    """The report's check that `model` has the head of `task` (the class its `auto_class` loads, e.g.
    `...ForTokenClassification`).

    Raises:
        ValueError: naming MODEL_DIR and the model's class, before any scoring starts.
    """
    kind = getattr(model, "architecture", None) or type(model).__name__  # an exported file: its model's class
    if not kind.endswith(task.auto_class.__name__.removeprefix("AutoModel")):
        raise invalid(
            "MODEL_DIR",
            model_dir,
            f"a {task.name} model to score on --dataset (this is a {kind}; omit --dataset to measure size and "
            "latency only)",
        )
