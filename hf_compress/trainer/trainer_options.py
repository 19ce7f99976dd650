"""Trainer options our trainers cannot honour: refused at construction, naming the option and why.

Every `Trainer.__init__` argument and `TrainingArguments` field, decided once (transformers 5):
- `model`, `args`, `data_collator`, datasets, `processing_class`, `compute_metrics`, `callbacks`: honoured.
- `model_init`: refused by every trainer here; the student is checked and set up (teacher compatibility, pruners,
  hidden projection, conversions) in __init__, and Trainer would replace it with a fresh model at train().
- `compute_loss_func`, `label_smoothing_factor`: honoured by PruningTrainer (it keeps Trainer's loss); refused by
  the distillation trainers, whose compute_loss is the distillation mixture (a CE term of their own); the
  distillation arguments refuse `label_smoothing_factor` themselves (methods/distillation/config.py).
- `label_names`: the distillation loss reads the hard labels of each head by their stock names; others refused.
- `optimizers`: honoured, except when the trainer adds trainable parameters or replaces modules after
  Trainer.__init__ (the hidden-state projection; CompressionTrainer's conversions): an optimizer built before would
  miss or hold the wrong parameters.
- `optimizer_cls_and_kwargs`, `preprocess_logits_for_metrics`, `include_for_metrics`, `batch_eval_metrics`,
  `eval_do_concat_batches`, `prediction_loss_only`: honoured (Trainer builds the optimizer at train() over every
  parameter, and its evaluation loop applies them to our compute_loss outputs).
"""

from __future__ import annotations

from ..checks import invalid
from ..methods.distillation.loss import SPAN_LABELS

DISTILLATION_LABELS = ("labels", *SPAN_LABELS)


def _refuse(kwargs: dict, name: str, allowed: str) -> None:
    """Trainer keyword `name`, refused unless None."""
    if kwargs.get(name) is not None:
        raise invalid(name, kwargs[name], allowed)


def refuse_model_init(trainer: str, kwargs: dict) -> None:
    """`model_init` is refused by every trainer of ours."""
    why = f"{trainer} checks and sets it up in __init__ and model_init would replace it at train()"
    _refuse(kwargs, "model_init", f"None with {trainer}: pass the instantiated model; {why}")


def refuse_distillation_options(trainer: str, args, kwargs: dict) -> None:
    """The options the distillation loss and its trainable projection cannot honour."""
    refuse_model_init(trainer, kwargs)
    why = "its loss is the distillation mixture (temperature, alpha, loss weights)"
    _refuse(
        kwargs, "compute_loss_func", f"None with {trainer}: {why}; override compute_loss in a subclass to change it"
    )
    if args.label_names is not None and not set(args.label_names) <= set(DISTILLATION_LABELS):
        raise invalid(
            "label_names", args.label_names, f"None or names among {list(DISTILLATION_LABELS)} with {trainer}"
        )


def refuse_optimizer(kwargs: dict, allowed: str) -> None:
    """`optimizers` with an optimizer, refused when the trainer changes the trainable parameters after building."""
    if (kwargs.get("optimizers") or (None,))[0] is not None:
        raise invalid("optimizers", "(an optimizer, ...)", allowed)
