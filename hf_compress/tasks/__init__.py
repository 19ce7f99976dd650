"""Per task: the Auto class, data preparation, collator, metrics and post-processing, behind one small interface.

A task object has: `name`, `auto_class`, `primary_metric`, `pipeline_tag`, `card_metrics` ((score key, model-index
metric type, display name) of what the model card states); data: `load(recipe) -> (raw DatasetDict,
label names | None)`, `num_labels(raw, names)`, `label_kwargs(names, num_labels)`, `label_kwargs_from(config)`,
`check_model_labels(config, names, num_labels, field)`, `prepare_splits(raw, tokenizer, recipe) -> DatasetDict` (what
trainers train and evaluate the loss on), `prepare_eval(raw, tokenizer, recipe, split=None)` (what the report scores),
`collator(tokenizer)`, `trainer_metrics(raw_validation, tokenizer, recipe) -> compute_metrics | None`; scoring:
`predict(model, eval_data, tokenizer) -> predictions`, `score(predictions, eval_data) -> metrics dict`,
`agreement(predictions, reference_predictions) -> float`, `num_examples(eval_data)`,
`check_model_for_data(model, model_dir, eval_data)`. See `text_classification.TextClassification`.

The tokenizer properties the preparations rely on (pre-split words tokenised as running text, a fast tokenizer, right
padding, `model_max_length`, a vocabulary that knows the data's words) are set or refused in `tokenizer_checks`.
Question answering decides from the data, when it loads it, whether SQuAD v1.1 or 2.0 (unanswerable questions) applies.
"""

from __future__ import annotations

from .question_answering import QAEvalData, QuestionAnswering
from .sentence_embedding import SentenceEmbedding
from .text_classification import TextClassification
from .token_classification import NerEvalData, TokenClassification

TASKS = {
    "text-classification": TextClassification,
    "token-classification": TokenClassification,
    "question-answering": QuestionAnswering,
    "sentence-embedding": SentenceEmbedding,
}


def get_task(name: str):
    """The task object for a recipe's `task` field (a ValueError names the supported ones)."""
    from ..checks import check_choice

    check_choice("task", name, tuple(TASKS))
    return TASKS[name]()


def task_for_model(config):
    """The task whose head a config's `architectures` names: sentence embeddings for a base model (`BertModel`,
    `MPNetModel`, ...: what a sentence-transformers folder holds); text classification when it names none we know."""
    architectures = getattr(config, "architectures", None) or []
    for task in (TextClassification, TokenClassification, QuestionAnswering):
        suffix = task.auto_class.__name__.removeprefix("AutoModel")
        if any(a.endswith(suffix) for a in architectures):
            return task()
    if any(a.endswith("Model") for a in architectures):
        return SentenceEmbedding()
    return TextClassification()


__all__ = [
    "TASKS",
    "NerEvalData",
    "QAEvalData",
    "QuestionAnswering",
    "SentenceEmbedding",
    "TextClassification",
    "TokenClassification",
    "get_task",
    "task_for_model",
]
