"""DistillationTrainer: Trainer whose loss mixes soft teacher targets, hard labels and intermediate-layer terms."""

from __future__ import annotations

import copy
import inspect
import os
from contextlib import contextmanager

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModel, PreTrainedModel, Trainer, TrainerCallback

from ..methods.distillation.config import (
    EMBEDDING_WEIGHTS,
    DistillationTrainingArguments,
    default_teacher_layer_mapping,
)
from ..methods.distillation.loss import (
    LossTermLog,
    count_items,
    head_kind,
    head_logits,
    logit_terms,
    pop_labels,
)
from ..methods.distillation.losses import attention_loss, hidden_state_loss
from ..methods.distillation.teacher_cache import TeacherOutputCache
from ..provenance import portable_reference, record
from ..tasks.sentence_embedding import Pooling, read_pooling, write_sentence_transformers_files
from .data_checks import check_trainer_datasets
from .saving import FinalizeMixin
from .trainer_options import refuse_distillation_options, refuse_optimizer

# The hidden-state projection is trained with the student but is not part of it. It is attached to the student as
# this submodule while training, so that Trainer's optimizer, zero_grad, gradient clipping, DDP gradient sync,
# checkpoints, resume and best-model loading all treat it exactly like the student's own parameters; finalize()
# detaches it, so the saved student is a stock checkpoint.
PROJECTION_MODULE = "hf_compress_hidden_projection"
OLD_PROJECTION_FILE = "distillation_projection.safetensors"  # checkpoints written before 0.2 kept it beside the model


@contextmanager
def eager_attention(*models: PreTrainedModel):
    """Run `models` with transformers' eager attention inside the block, then give each back the implementation it
    had (`config._attn_implementation`, e.g. "sdpa"), even when the block raises.

    Why: SDPA and flash kernels never materialise the attention probabilities that the attention term compares, so
    the loss needs eager attention; outside the loss the models keep the user's choice (SDPA is the faster one for
    inference, and it is what a stock `from_pretrained` of the saved student picks). A switch costs ~0.1 ms.
    """
    before = [m.config._attn_implementation for m in models]
    for m in models:
        m.set_attn_implementation("eager")
    try:
        yield
    finally:
        for m, implementation in zip(models, before):
            m.set_attn_implementation(implementation)


def project_hidden_states(module: nn.Module, args, output):
    """Forward hook of the student: while the trainer asks for it, return the layers' hidden states projected to the
    teacher's width (`hidden_states[0]`, the embeddings, unchanged).

    Why inside the forward: DDP (with `find_unused_parameters`, Trainer's default) marks every parameter that the
    forward's outputs do not reach as unused when the forward ends; a projection applied later, in compute_loss, is
    then marked ready a second time by its gradient and DDP fails. A key of its own in the output would not survive
    DDP either (it rebuilds the ModelOutput from its declared fields), so the projected states take `hidden_states`.
    """
    projection = getattr(module, PROJECTION_MODULE, None)
    hidden = getattr(output, "hidden_states", None)
    if projection is None or hidden is None or not getattr(projection, "active", False):
        return None
    output["hidden_states"] = (hidden[0], *(p(h) for p, h in zip(projection, hidden[1:])))
    return output


class TeacherCacheSync(TrainerCallback):
    """At each epoch start, every rank reads what the others cached (after a barrier, so all of it).

    Under DDP each rank sees its own share of an epoch; without this a rank would run the teacher again, in the next
    epoch, on the examples another rank already cached. Reading at epoch 0 picks up a resumed or earlier run's entries.
    """

    def __init__(self, trainer: DistillationTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args, state, control, **kwargs):
        cache = self.trainer._logit_cache
        if cache is None:
            return
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        cache.refresh()  # (before the first lookup there is nothing to read: that lookup opens the folder)


def check_compatible(teacher: PreTrainedModel, student: PreTrainedModel) -> None:
    """Raise a ValueError that says what differs when teacher and student cannot be distilled into one another."""
    from ..checks import invalid
    from ..families import FAMILIES
    from ..loading import auto_class_for

    for field, model in (("teacher_model", teacher), ("model", student)):  # the family first: other checks assume it
        model_type = getattr(model.config, "model_type", None)
        if model_type not in FAMILIES:
            allowed = f"a model of a supported family {sorted(FAMILIES)} (this one has model_type={model_type!r})"
            raise invalid(field, type(model).__name__, allowed)
    t, s = teacher.config, student.config
    problems = []
    if head_kind(teacher) != head_kind(student) or auto_class_for(teacher) is not auto_class_for(student):
        problems.append(f"task head: teacher {type(teacher).__name__} vs student {type(student).__name__}")
    if getattr(t, "vocab_size", None) != getattr(s, "vocab_size", None):
        problems.append(
            f"vocab_size: teacher {t.vocab_size} vs student {s.vocab_size} (teacher {t.name_or_path or t.model_type}, "
            f"student {s.name_or_path or s.model_type}): they need one tokenizer"
        )
    if auto_class_for(student) is not AutoModel and head_kind(student) != "span" and t.num_labels != s.num_labels:
        problems.append(f"num_labels: teacher {t.num_labels} vs student {s.num_labels}")
    teacher_labels = getattr(t, "id2label", None)
    student_labels = getattr(s, "id2label", None)
    if not problems and teacher_labels and student_labels and _is_named(t) and _is_named(s):
        if {int(k): v for k, v in teacher_labels.items()} != {int(k): v for k, v in student_labels.items()}:
            problems.append(f"id2label: teacher {teacher_labels} vs student {student_labels}")
    if problems:
        raise ValueError("teacher and student are incompatible: " + "; ".join(problems))


def int8_teacher(teacher: PreTrainedModel, device: torch.device) -> PreTrainedModel:
    """An int8 copy of the teacher for `teacher_quantization="int8"` (`quantize_`, one activation range per batch).

    A copy, so the caller's teacher keeps its float weights. Raises ValueError off the CPU (fbgemm's int8 kernels
    are CPU-only; elsewhere the int8 modules fall back to float matmuls, slower than the float teacher), for a
    teacher that is not float32 (the kernels take float32 activations) or that is already quantized.
    """
    from ..checks import invalid
    from ..methods.int8.transform import check_not_quantized, quantize_

    field = "teacher_quantization"
    if torch.device(device).type != "cpu":
        raise invalid(field, "int8", f"null on {device} (the int8 kernels are CPU-only: fbgemm)")
    dtype = next(teacher.parameters()).dtype
    if dtype != torch.float32:
        raise invalid(field, "int8", f"null for a {dtype} teacher (int8 is quantized from a float32 teacher)")
    try:
        check_not_quantized(teacher)
    except ValueError as err:
        raise invalid(field, "int8", f"null for a teacher that is already quantized ({err})") from None
    return quantize_(copy.deepcopy(teacher)).eval().requires_grad_(False)


def teacher_folder(teacher: nn.Module) -> str | None:
    """The local folder the teacher was loaded from (where its sentence-transformers files are), if any."""
    path = getattr(getattr(teacher, "config", None), "name_or_path", "") or ""
    return path if os.path.isdir(path) else None


def forward_arguments(model: nn.Module) -> set[str]:
    """The inputs a model's forward names (not its **kwargs): Trainer keeps a batch's columns by these names."""
    parameters = inspect.signature(model.forward).parameters.values()
    return {p.name for p in parameters if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def _is_named(config) -> bool:
    """Whether id2label holds real names rather than transformers' LABEL_i placeholders."""
    return any(not str(v).startswith("LABEL_") for v in config.id2label.values())


class DistillationTrainer(FinalizeMixin, Trainer):
    """Trainer for knowledge distillation into a smaller student (Hinton et al. 2015, arXiv:1503.02531).

    Loss: alpha·T²·KL(teacher ‖ student) + (1 − alpha)·CE + hidden_loss_weight·Σ MSE(W·h_s, h_t) +
    attention_loss_weight·Σ div(A_t, A_s) over the mapped layers, each term a sum over items (examples, labelled
    tokens) divided by Trainer's `num_items_in_batch`. Sequence classification, token classification and extractive
    QA heads (see `distillation_loss`).
    """

    _tag_names = ["hf_compress", "distillation"]

    def __init__(
        self,
        model: PreTrainedModel | None = None,
        args: DistillationTrainingArguments | None = None,
        teacher_model: PreTrainedModel | str | None = None,
        **kwargs,
    ):
        if not isinstance(args, DistillationTrainingArguments):
            raise ValueError(
                f"args must be a DistillationTrainingArguments (or subclass), got {type(args).__name__}; it holds "
                "temperature, alpha and the teacher"
            )
        if model is None or isinstance(model, str):
            raise ValueError("model must be an instantiated student model (see hf_compress.create_student)")
        refuse_distillation_options(type(self).__name__, args, kwargs)
        teacher_model = teacher_model if teacher_model is not None else args.teacher_model_name_or_path
        if teacher_model is None:
            raise ValueError("teacher_model=None and teacher_model_name_or_path=None: give the trainer a teacher")
        if isinstance(teacher_model, str):
            from ..loading import load_teacher

            teacher_model = load_teacher(teacher_model, model, args.teacher_model_init_kwargs)
        check_compatible(teacher_model, model)
        if args.teacher_quantization == "int8":
            teacher_model = int8_teacher(teacher_model, args.device)  # refused or copied before any other work
        check_trainer_datasets(model, kwargs.get("train_dataset"), kwargs.get("eval_dataset"))
        self.layer_mapping = self._resolve_layer_mapping(args, model, teacher_model)
        if args.hidden_loss_weight > 0 and model.config.hidden_size != teacher_model.config.hidden_size:
            refuse_optimizer(
                kwargs,
                f"(None, ...) or optimizer_cls_and_kwargs with hidden_loss_weight={args.hidden_loss_weight} between "
                f"widths {model.config.hidden_size} and {teacher_model.config.hidden_size}: the trained hidden "
                "projection is added after Trainer.__init__, an optimizer built before would not train it",
            )

        self.pooling = self._embedding_pooling(model, teacher_model, args)
        super().__init__(model=model, args=args, **kwargs)
        # Our loss is normalised by num_items_in_batch, so Trainer must count items and not divide again.
        self.model_accepts_loss_kwargs = True
        self.teacher = teacher_model.to(self.args.device).eval().requires_grad_(False)
        self.head_kind = head_kind(self.model)
        self._embedding_terms = tuple(term for name, term in EMBEDDING_WEIGHTS.items() if getattr(args, name) > 0)
        projection = self._build_projection(model, teacher_model)
        if projection is not None:
            self.model.add_module(PROJECTION_MODULE, projection.to(self.args.device))
            self._projection_hook = self.model.register_forward_hook(project_hidden_states)
        # Teacher and student of different families take different inputs (a BERT teacher's token_type_ids, which a
        # DistilBERT student has none of): each model gets the batch without what only the other one names.
        self._inputs_of = {"student": forward_arguments(model), "teacher": forward_arguments(teacher_model)}
        self._logit_cache = None
        if args.cache_teacher_logits:
            self._logit_cache = TeacherOutputCache(args.teacher_cache_dir)
            self.add_callback(TeacherCacheSync(self))
        self._terms = LossTermLog()
        self._steps_since_log = 0
        self.model.add_model_tags(self._tag_names)  # transformers 5 does not read _tag_names itself (TRL does this)
        self._after_init()

    @staticmethod
    def _embedding_pooling(student, teacher, args) -> Pooling | None:
        """The pooling of an embedding (base-model) student, checked before any work; None for a task head.

        The embedding fields are refused for a task head (they would be ignored), and an embedding student must
        keep the teacher's width (the loss compares the vectors themselves).
        """
        from ..checks import invalid
        from ..methods.distillation.config import EMBEDDING_WEIGHTS

        if head_kind(student) != "embedding":
            for name, default in (
                ("embedding_pooling", None), ("embedding_cosine_weight", 0.0), ("similarity_loss_weight", 0.0),
                ("embedding_mse_weight", 1.0),
            ):  # fmt: skip
                if getattr(args, name) != default:
                    raise invalid(
                        name, getattr(args, name), f"{default} for {type(student).__name__} (a task head); the "
                        "embedding fields apply to a base-model student (AutoModel), whose output is its pooled "
                        "last hidden state",
                    )  # fmt: skip
            return None
        if not any(getattr(args, name) > 0 for name in EMBEDDING_WEIGHTS):
            raise invalid("embedding_mse_weight", args.embedding_mse_weight, "> 0 for one of " + ", ".join(
                EMBEDDING_WEIGHTS) + " (an embedding student learns from those terms only)")  # fmt: skip
        h_s, h_t = student.config.hidden_size, teacher.config.hidden_size
        if h_s != h_t:
            raise invalid(
                "model", type(student).__name__, f"an embedding student as wide as its teacher (hidden_size: "
                f"teacher {h_t} vs student {h_s}); create_student keeps the width",
            )  # fmt: skip
        source = teacher_folder(teacher)
        declared = read_pooling(source)
        if args.embedding_pooling is None:
            return declared or Pooling("mean")
        return Pooling(args.embedding_pooling, declared.normalize if declared else False)

    def _head_outputs(self, outputs, inputs: dict) -> dict[str, torch.Tensor]:
        """What the loss compares: the head's logits, or an embedding model's pooled sentence vectors."""
        if self.head_kind == "embedding":
            return {"embedding": self.pooling(outputs.last_hidden_state, inputs.get("attention_mask"))}
        return head_logits(outputs)

    def _write_final_files(self, output_dir: str) -> None:
        """An embedding student also gets sentence-transformers' module files (SentenceTransformer(path) loads it)."""
        super()._write_final_files(output_dir)
        if self.head_kind == "embedding":
            from ..loading import usable_positions

            config = self.model.config
            write_sentence_transformers_files(
                output_dir, self.pooling, config.hidden_size, usable_positions(config) or 512,
                source=teacher_folder(self.teacher),
            )  # fmt: skip

    @property
    def hidden_projection(self) -> nn.ModuleList | None:
        """The learned student→teacher width maps of the hidden-state term (None when unused).

        While training they are a submodule of the student; after finalize() they are kept here only.
        """
        return getattr(self.model, PROJECTION_MODULE, None) or getattr(self, "_detached_projection", None)

    def _distillation_provenance(self) -> dict:
        """The teacher and loss mixture, for config.json and the model card."""
        a = self.args
        return {
            "teacher": portable_reference(self.teacher.config.name_or_path) or None,
            "temperature": a.temperature,
            "alpha": a.alpha,
            "hidden_loss_weight": a.hidden_loss_weight,
            "attention_loss_weight": a.attention_loss_weight,
            "teacher_layer_mapping": self.layer_mapping,
            "cache_teacher_logits": a.cache_teacher_logits,
            "teacher_quantization": a.teacher_quantization,
            **(
                {
                    "embedding_pooling": {"mode": self.pooling.mode, "normalize": self.pooling.normalize},
                    **{name: getattr(a, name) for name in EMBEDDING_WEIGHTS},
                }
                if self.pooling is not None
                else {}
            ),
        }

    @staticmethod
    def _resolve_layer_mapping(args, student, teacher) -> list[int] | None:
        """The validated student→teacher layer map (0-based), or None when no intermediate term is used."""
        from ..checks import invalid

        if not args.intermediate_terms:
            return None
        n_s, n_t = student.config.num_hidden_layers, teacher.config.num_hidden_layers
        mapping = args.teacher_layer_mapping or default_teacher_layer_mapping(n_s, n_t)
        if len(mapping) != n_s or any(not 0 <= i < n_t for i in mapping):
            raise invalid(
                "teacher_layer_mapping",
                mapping,
                f"{n_s} entries (one per student layer), each a 0-based teacher layer id in [0, {n_t - 1}]",
            )
        return list(mapping)

    def _build_projection(self, student, teacher) -> nn.ModuleList | None:
        """Learned linear maps from student to teacher width (TinyBERT's W_h), trained with the student."""
        if self.args.hidden_loss_weight == 0:
            return None
        h_s, h_t = student.config.hidden_size, teacher.config.hidden_size
        if h_s == h_t:
            return None
        return nn.ModuleList(nn.Linear(h_s, h_t) for _ in self.layer_mapping)

    # ---- loss ----

    def _set_signature_columns_if_needed(self) -> None:
        """Trainer keeps the dataset columns the student's forward names; keep the teacher's too."""
        unset = self._signature_columns is None
        super()._set_signature_columns_if_needed()
        if unset and hasattr(self, "_inputs_of"):
            self._signature_columns += sorted(self._inputs_of["teacher"] - set(self._signature_columns))

    def _inputs_for(self, who: str, inputs: dict) -> dict:
        """`inputs` without the keys only the other model's forward names."""
        other = self._inputs_of["teacher" if who == "student" else "student"] - self._inputs_of[who]
        return {k: v for k, v in inputs.items() if k not in other}

    _eager_depth = 0  # how many _attention_maps blocks are open: only the outermost one switches

    @contextmanager
    def _attention_maps(self):
        """Eager attention for student and teacher inside the block when the attention term is on (see
        eager_attention); nothing otherwise, or inside a block that already switched them."""
        switch = self.args.attention_loss_weight > 0 and not self._eager_depth
        self._eager_depth += 1
        try:
            if switch:
                with eager_attention(self.model, self.teacher):
                    yield
            else:
                yield
        finally:
            self._eager_depth -= 1

    def training_step(self, *args, **kwargs):
        """Trainer's step with eager attention through forward *and* backward: gradient checkpointing recomputes the
        forward during backward, which must run the same attention as the first pass."""
        with self._attention_maps():
            return super().training_step(*args, **kwargs)

    def prediction_step(self, *args, **kwargs):
        with self._attention_maps():
            return super().prediction_step(*args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """alpha·T²·KL(teacher‖student) + (1−alpha)·CE + hidden and attention terms, each logged on its own.

        With the attention term, both models run eager attention for the call and get their own implementation back
        after it (see eager_attention)."""
        with self._attention_maps():
            return self._compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _compute_loss(self, model, inputs, return_outputs, num_items_in_batch):
        inputs = dict(inputs)
        labels = pop_labels(inputs)
        args = self.args
        extra = {}
        if args.hidden_loss_weight > 0:
            extra["output_hidden_states"] = True
        if args.attention_loss_weight > 0:
            extra["output_attentions"] = True
        projection = getattr(self.model, PROJECTION_MODULE, None)  # attached while training; see project_hidden_states
        if projection is not None:
            projection.active = True
        try:
            outputs = model(**self._inputs_for("student", inputs), **extra)
        finally:
            if projection is not None:
                projection.active = False
        student_logits = self._head_outputs(outputs, inputs)

        teacher_out = None
        teacher_inputs = self._inputs_for("teacher", inputs)
        if self._logit_cache is not None and model.training:
            variant = "" if self.pooling is None else f"embedding-{self.pooling.mode}-{int(self.pooling.normalize)}"
            teacher_logits, hit_rate = self._logit_cache.logits(
                self.teacher, teacher_inputs, read=self._head_outputs, variant=variant
            )
            self._terms.rates["teacher_cache_hit_rate"].append(hit_rate)
        else:
            with torch.no_grad():
                teacher_out = self.teacher(**teacher_inputs, **extra)
            teacher_logits = self._head_outputs(teacher_out, teacher_inputs)

        mask = inputs.get("attention_mask")
        terms, n_local = logit_terms(
            self.head_kind, student_logits, teacher_logits, labels, mask, args.temperature, args.alpha > 0,
            args.alpha < 1, self._embedding_terms,
        )  # fmt: skip
        if args.hidden_loss_weight > 0:
            terms["hidden_loss"] = self._hidden_term(outputs.hidden_states[1:], teacher_out.hidden_states, mask)
        if args.attention_loss_weight > 0:
            terms["attention_loss"] = self._attention_term(outputs.attentions, teacher_out.attentions, mask)
        if not terms:
            raise ValueError("batch has no labels and alpha < 1: set alpha=1.0 to distil from unlabelled data")

        weights = {
            "kd_loss": args.alpha,
            "ce_loss": 1.0 - args.alpha,
            "hidden_loss": args.hidden_loss_weight,
            "attention_loss": args.attention_loss_weight,
            **{term: getattr(args, name) for name, term in EMBEDDING_WEIGHTS.items()},
        }
        divisor = num_items_in_batch if num_items_in_batch is not None else max(n_local, 1)
        scale = 1
        if args.average_tokens_across_devices and num_items_in_batch is not None:
            # DDP averages gradients over ranks, but we already divided by the global item count.
            scale = self.accelerator.num_processes
        loss = sum(weights[k] * v for k, v in terms.items()) / divisor * scale
        if model.training:
            for name, value in terms.items():
                self._terms.add_train(name, float(value.detach() / divisor * scale))
        else:
            self._terms.add_eval(terms, n_local)
        if return_outputs:
            return loss, {**student_logits}
        return loss

    def _hidden_term(self, student_hidden, teacher_hidden, mask) -> torch.Tensor:
        """Σ over mapped layers of the per-example hidden-state MSE.

        `student_hidden` holds one tensor per student layer (projected to the teacher's width by the forward hook when
        the widths differ); `teacher_hidden[0]` is the teacher's embeddings.
        """
        total = 0.0
        for i, t_layer in enumerate(self.layer_mapping):
            total = total + hidden_state_loss(student_hidden[i], teacher_hidden[t_layer + 1], mask)
        return total

    def _attention_term(self, student_attn, teacher_attn, mask) -> torch.Tensor:
        """Σ over mapped layers of the per-example attention divergence."""
        total = 0.0
        for i, t_layer in enumerate(self.layer_mapping):
            total = total + attention_loss(student_attn[i], teacher_attn[t_layer], mask, self.args.attention_loss_type)
        return total

    def _get_num_items_in_batch(self, batch_samples: list, device: torch.device):
        """Trainer counts labelled items; a batch without `labels` (QA positions, unlabelled data) is counted here."""
        counted = super()._get_num_items_in_batch(batch_samples, device)
        if counted is not None or not batch_samples or "input_ids" not in batch_samples[0]:
            return counted
        total = torch.tensor(sum(count_items(b, self.head_kind) for b in batch_samples), device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            total = self.accelerator.gather(total).sum()
        return total

    # ---- logging, evaluation, finalization, checkpoints ----

    def _maybe_log_save_evaluate(self, *args, **kwargs):
        # Trainer divides its logged `loss` by the steps since its last log; the terms use the same count.
        self._steps_since_log = self.state.global_step - self._globalstep_last_logged
        return super()._maybe_log_save_evaluate(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add each loss term since the last log: per optimizer step, so the terms recombine to `loss`."""
        if "loss" in logs and not any(k.startswith("eval_") for k in logs):
            reduce = lambda t: self.accelerator.reduce(t, "mean")  # noqa: E731  as Trainer averages `loss`
            logs = {**logs, **self._terms.pop_train(self._steps_since_log, reduce)}
        super().log(logs, start_time)

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        """Trainer's loop, plus each loss term per item; `<prefix>_loss` becomes their item-weighted total too."""
        self._terms.pop_eval(lambda t: t)  # drop anything a direct compute_loss call left behind
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        prefix = metric_key_prefix
        terms = self._terms.pop_eval(lambda t: self.accelerator.reduce(t, "sum"))
        if terms:
            weights = {"kd_loss": self.args.alpha, "ce_loss": 1 - self.args.alpha}
            weights.update(hidden_loss=self.args.hidden_loss_weight, attention_loss=self.args.attention_loss_weight)
            output.metrics[f"{prefix}_loss"] = sum(weights[k] * v for k, v in terms.items())
            output.metrics.update({f"{prefix}_{k}": v for k, v in terms.items()})
        return output

    def _finalize_distillation(self) -> None:
        """Distillation's part of finalize(): detach the training-only projection and record the distillation in
        config.compression."""
        if getattr(self.model, PROJECTION_MODULE, None) is not None:
            self._detached_projection = getattr(self.model, PROJECTION_MODULE)
            delattr(self.model, PROJECTION_MODULE)
            self._projection_hook.remove()
        record(self.model.config, "distillation", self._distillation_provenance())

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Trainer's resume (which restores the projection with the model); older checkpoints kept it in a file."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        old = os.path.join(resume_from_checkpoint, OLD_PROJECTION_FILE)
        if self.hidden_projection is not None and os.path.exists(old):
            self.hidden_projection.load_state_dict(load_file(old, device=str(self.args.device)))
