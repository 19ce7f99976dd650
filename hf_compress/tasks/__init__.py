"""Per task: the Auto class, data preparation, collator, metrics and post-processing, behind one small interface.

A task object has: `name`, `auto_class`, `primary_metric`, `pipeline_tag`; data: `load(recipe) -> (raw DatasetDict,
label names | None)`, `num_labels(raw, names)`, `label_kwargs(names, num_labels)`, `label_kwargs_from(config)`,
`check_model_labels(config, names, num_labels, field)`, `prepare_splits(raw, tokenizer, recipe) -> DatasetDict` (what
trainers train and evaluate the loss on), `prepare_eval(raw, tokenizer, recipe, split=None)` (what the report scores),
`collator(tokenizer)`, `trainer_metrics(raw_validation, tokenizer, recipe) -> compute_metrics | None`; scoring:
`predict(model, eval_data, tokenizer) -> predictions`, `score(predictions, eval_data) -> metrics dict`,
`agreement(predictions, reference_predictions) -> float`, `num_examples(eval_data)`,
`check_model_for_data(model, model_dir, eval_data)`. See `text_classification.TextClassification`.
"""

from __future__ import annotations

from .text_classification import TextClassification

TASKS = {"text-classification": TextClassification}


def get_task(name: str):
    """The task object for a recipe's `task` field (a ValueError names the supported ones)."""
    from ..checks import check_choice

    check_choice("task", name, tuple(TASKS))
    return TASKS[name]()


__all__ = ["TASKS", "TextClassification", "get_task"]
