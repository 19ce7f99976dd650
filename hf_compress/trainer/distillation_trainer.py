"""DistillationTrainer: Trainer whose loss mixes soft teacher targets, hard labels and intermediate-layer terms."""

from __future__ import annotations

import os
from collections import defaultdict

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
)
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..losses import attention_loss, ce_loss, hidden_state_loss, kd_loss
from ..provenance import record
from .distillation_args import DistillationTrainingArguments
from .saving import AtomicSaveMixin, replace_pickled_args

PROJECTION_FILE = "distillation_projection.safetensors"


def auto_class_for(model: PreTrainedModel):
    """The Auto class that loads a teacher for the same task as `model`."""
    name = type(model).__name__
    if name.endswith("ForSequenceClassification"):
        return AutoModelForSequenceClassification
    if name.endswith("ForTokenClassification"):
        return AutoModelForTokenClassification
    return AutoModel


def load_teacher(name_or_path: str, student: PreTrainedModel, init_kwargs: dict | None = None) -> PreTrainedModel:
    """Load a teacher with the real `from_pretrained` (Hub id or local directory) for the student's task."""
    # safetensors only: a pickled .bin can run code on load; opt in with init_kwargs {"use_safetensors": False}.
    return auto_class_for(student).from_pretrained(name_or_path, **{"use_safetensors": True, **(init_kwargs or {})})


def check_compatible(teacher: PreTrainedModel, student: PreTrainedModel) -> None:
    """Raise a ValueError that says what differs when teacher and student cannot be distilled into one another."""
    t, s = teacher.config, student.config
    problems = []
    if getattr(t, "vocab_size", None) != getattr(s, "vocab_size", None):
        problems.append(f"vocab_size: teacher {t.vocab_size} vs student {s.vocab_size} (they need one tokenizer)")
    if auto_class_for(student) is not AutoModel and t.num_labels != s.num_labels:
        problems.append(f"num_labels: teacher {t.num_labels} vs student {s.num_labels}")
    teacher_labels = getattr(t, "id2label", None)
    student_labels = getattr(s, "id2label", None)
    if not problems and teacher_labels and student_labels and _is_named(t) and _is_named(s):
        if {int(k): v for k, v in teacher_labels.items()} != {int(k): v for k, v in student_labels.items()}:
            problems.append(f"id2label: teacher {teacher_labels} vs student {student_labels}")
    if problems:
        raise ValueError("teacher and student are incompatible: " + "; ".join(problems))


def _is_named(config) -> bool:
    """Whether id2label holds real names rather than transformers' LABEL_i placeholders."""
    return any(not str(v).startswith("LABEL_") for v in config.id2label.values())


def default_layer_mapping(num_student_layers: int, num_teacher_layers: int) -> list[int]:
    """Uniform map (TinyBERT): student layer i (1-based) ↔ teacher layer round(i·L_t/L_s); last ↔ last."""
    return [round((i + 1) * num_teacher_layers / num_student_layers) for i in range(num_student_layers)]


class _SyncProjectionGrads(TrainerCallback):
    """Average the projection's gradients over DDP ranks: it lives outside the DDP-wrapped student."""

    def __init__(self, projection: nn.Module):
        self.projection = projection

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for p in self.projection.parameters():
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad, op=torch.distributed.ReduceOp.AVG)


class DistillationTrainer(AtomicSaveMixin, Trainer):
    """Trainer for knowledge distillation into a smaller student (Hinton et al. 2015, arXiv:1503.02531)."""

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
        teacher_model = teacher_model if teacher_model is not None else args.teacher_model_name_or_path
        if teacher_model is None:
            raise ValueError("teacher_model=None and teacher_model_name_or_path=None: give the trainer a teacher")
        if isinstance(teacher_model, str):
            teacher_model = load_teacher(teacher_model, model, args.teacher_model_init_kwargs)
        check_compatible(teacher_model, model)
        self.layer_mapping = self._resolve_layer_mapping(args, model, teacher_model)
        if args.attention_loss_weight > 0:
            # SDPA kernels never materialise attention probabilities; the eager path returns them.
            for m in (model, teacher_model):
                m.set_attn_implementation("eager")

        super().__init__(model=model, args=args, **kwargs)
        # Our loss is normalised by num_items_in_batch, so Trainer must count items and not divide again.
        self.model_accepts_loss_kwargs = True
        self.teacher = teacher_model.to(self.args.device).eval().requires_grad_(False)
        self.hidden_projection = self._build_projection(model, teacher_model)
        if self.hidden_projection is not None:
            self.add_callback(_SyncProjectionGrads(self.hidden_projection))
        self._logit_cache: dict[bytes, torch.Tensor] | None = {} if args.cache_teacher_logits else None
        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.model.add_model_tags(self._tag_names)  # transformers 5 does not read _tag_names itself (TRL does this)
        record(self.model.config, "distillation", self._distillation_provenance())

    def _distillation_provenance(self) -> dict:
        """The teacher and loss mixture, for config.json and the model card."""
        a = self.args
        return {
            "teacher": self.teacher.config.name_or_path or None,
            "temperature": a.temperature,
            "alpha": a.alpha,
            "hidden_loss_weight": a.hidden_loss_weight,
            "attention_loss_weight": a.attention_loss_weight,
            "layer_mapping": self.layer_mapping,
            "cache_teacher_logits": a.cache_teacher_logits,
        }

    @staticmethod
    def _resolve_layer_mapping(args, student, teacher) -> list[int] | None:
        """The validated student→teacher layer map, or None when no intermediate term is used."""
        if args.hidden_loss_weight == 0 and args.attention_loss_weight == 0:
            return None
        n_s, n_t = student.config.num_hidden_layers, teacher.config.num_hidden_layers
        mapping = args.layer_mapping or default_layer_mapping(n_s, n_t)
        lowest = 1 if args.attention_loss_weight > 0 else 0
        if len(mapping) != n_s or any(not lowest <= i <= n_t for i in mapping):
            raise ValueError(
                f"layer_mapping={mapping} is invalid; allowed: {n_s} entries (one per student layer), each a teacher "
                f"layer in [{lowest}, {n_t}]" + (" (attention maps exist from layer 1)" if lowest else "")
            )
        return list(mapping)

    def _build_projection(self, student, teacher) -> nn.ModuleList | None:
        """Learned linear maps from student to teacher width (TinyBERT's W_h), trained with the student."""
        if self.args.hidden_loss_weight == 0:
            return None
        h_s, h_t = student.config.hidden_size, teacher.config.hidden_size
        if h_s == h_t:
            return None
        projection = nn.ModuleList(nn.Linear(h_s, h_t) for _ in self.layer_mapping)
        return projection.to(self.args.device)

    def create_optimizer(self, model=None):
        """Trainer's optimizer, plus the hidden-state projection as its own parameter group."""
        optimizer = super().create_optimizer(model)
        if self.hidden_projection is not None and not getattr(self, "_projection_in_optimizer", False):
            optimizer.add_param_group({"params": list(self.hidden_projection.parameters()), "weight_decay": 0.0})
            self._projection_in_optimizer = True
        return optimizer

    # ---- loss ----

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """alpha·T²·KL(teacher‖student) + (1−alpha)·CE + hidden and attention terms, each logged on its own."""
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        args = self.args
        want_hidden = args.hidden_loss_weight > 0
        want_attn = args.attention_loss_weight > 0
        extra = {}
        if want_hidden:
            extra["output_hidden_states"] = True
        if want_attn:
            extra["output_attentions"] = True
        outputs = model(**inputs, **extra)
        student_logits = outputs.logits

        if self._logit_cache is not None and model.training:
            teacher_logits, teacher_out = self._cached_teacher_logits(inputs), None
        else:
            with torch.no_grad():
                teacher_out = self.teacher(**inputs, **extra)
            teacher_logits = teacher_out.logits

        rows = self._loss_rows(student_logits, labels, inputs.get("attention_mask"))
        s_rows, t_rows = student_logits[rows], teacher_logits[rows]
        n_local = s_rows.shape[0]
        divisor = num_items_in_batch if num_items_in_batch is not None else max(n_local, 1)

        terms: dict[str, torch.Tensor] = {}
        if args.alpha > 0:
            terms["kd_loss"] = kd_loss(s_rows, t_rows, args.temperature)
        if args.alpha < 1 and labels is not None:
            terms["ce_loss"] = ce_loss(s_rows, labels[rows] if labels.dim() > 1 else labels)
        if want_hidden:
            terms["hidden_loss"] = self._hidden_term(outputs.hidden_states, teacher_out.hidden_states, inputs)
        if want_attn:
            terms["attention_loss"] = self._attention_term(outputs.attentions, teacher_out.attentions, inputs)

        weights = {
            "kd_loss": args.alpha,
            "ce_loss": 1.0 - args.alpha,
            "hidden_loss": args.hidden_loss_weight,
            "attention_loss": args.attention_loss_weight,
        }
        loss = sum(weights[k] * v for k, v in terms.items()) / divisor
        if not terms:  # alpha < 1 but no labels: nothing to learn from, say so rather than train on zero
            raise ValueError("batch has no labels and alpha < 1: set alpha=1.0 to distil from unlabelled data")

        mode = "train" if model.training else "eval"
        for name, value in terms.items():
            self._metrics[mode][name].append(value.detach().item() / max(n_local, 1))

        if args.average_tokens_across_devices and num_items_in_batch is not None:
            # DDP averages gradients over ranks, but we already divided by the global item count.
            loss = loss * self.accelerator.num_processes
        if return_outputs:
            return loss, {"logits": student_logits}
        return loss

    @staticmethod
    def _loss_rows(logits: torch.Tensor, labels: torch.Tensor | None, attention_mask: torch.Tensor | None):
        """Which logit rows carry a loss: every example for sequence tasks, labelled/real tokens for token tasks."""
        if logits.dim() == 2:
            return slice(None)
        if labels is not None:
            return labels != -100
        return attention_mask.bool() if attention_mask is not None else torch.ones(logits.shape[:2], dtype=torch.bool)

    def _hidden_term(self, student_hidden, teacher_hidden, inputs) -> torch.Tensor:
        """Σ over mapped layers of the per-example hidden-state MSE (hidden_states[0] is the embeddings)."""
        mask = inputs.get("attention_mask")
        total = 0.0
        for i, t_layer in enumerate(self.layer_mapping):
            h_s = student_hidden[i + 1]
            if self.hidden_projection is not None:
                h_s = self.hidden_projection[i](h_s)
            total = total + hidden_state_loss(h_s, teacher_hidden[t_layer], mask)
        return total

    def _attention_term(self, student_attn, teacher_attn, inputs) -> torch.Tensor:
        """Σ over mapped layers of the per-example attention divergence."""
        mask = inputs.get("attention_mask")
        total = 0.0
        for i, t_layer in enumerate(self.layer_mapping):
            total = total + attention_loss(
                student_attn[i], teacher_attn[t_layer - 1], mask, self.args.attention_loss_type
            )
        return total

    # ---- teacher-logit cache ----

    @staticmethod
    def _example_keys(inputs) -> list[bytes]:
        """A content key per example: its real tokens (and segment ids), independent of padding and batch order."""
        ids = inputs["input_ids"].cpu()
        mask = inputs.get("attention_mask")
        mask = mask.cpu().bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
        segments = inputs.get("token_type_ids")
        keys = []
        for i in range(ids.shape[0]):
            key = ids[i][mask[i]].numpy().tobytes()
            if segments is not None:
                key += b"|" + segments[i].cpu()[mask[i]].numpy().tobytes()
            keys.append(key)
        return keys

    def _cached_teacher_logits(self, inputs) -> torch.Tensor:
        """Teacher logits from the cache, running the teacher only on examples it has not seen yet."""
        keys = self._example_keys(inputs)
        missing = [i for i, k in enumerate(keys) if k not in self._logit_cache]
        self._metrics["train"]["teacher_cache_hit_rate"].append(1.0 - len(missing) / len(keys))
        if missing:
            index = torch.tensor(missing, device=inputs["input_ids"].device)
            sub = {k: v.index_select(0, index) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
            with torch.no_grad():
                logits = self.teacher(**sub).logits.detach().cpu()
            for row, i in enumerate(missing):
                self._logit_cache[keys[i]] = logits[row]
        return torch.stack([self._logit_cache[k] for k in keys]).to(inputs["input_ids"].device)

    # ---- logging and checkpoints ----

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of each loss term since the last log (prefixed eval_ during evaluation)."""
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        averaged = {k: sum(v) / len(v) for k, v in self._metrics[mode].items() if v}
        if mode == "eval":
            averaged = {f"eval_{k}": v for k, v in averaged.items()}
        super().log({**logs, **averaged}, start_time)
        self._metrics[mode].clear()

    def _checkpoint_dir(self, trial=None) -> str:
        """The folder Trainer just wrote the current checkpoint into."""
        return os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")

    def _prepare_final_model(self) -> None:
        """Hook run just before a final (non-checkpoint) save writes the model; subclasses transform it here."""

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Trainer's save, with the training arguments as JSON instead of a pickle."""
        if PREFIX_CHECKPOINT_DIR not in os.path.basename(os.path.normpath(output_dir or self.args.output_dir)):
            self._prepare_final_model()
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            replace_pickled_args(output_dir or self.args.output_dir, self.args)

    def _save_checkpoint(self, model, trial):
        """Trainer's checkpoint, plus the hidden-state projection (trainer state, never part of the student)."""
        super()._save_checkpoint(model, trial)
        if self.hidden_projection is not None and self.args.should_save:
            save_file(self.hidden_projection.state_dict(), os.path.join(self._checkpoint_dir(trial), PROJECTION_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Trainer's resume, plus the hidden-state projection when the checkpoint has one."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, PROJECTION_FILE)
        if self.hidden_projection is not None and os.path.exists(path):
            self.hidden_projection.load_state_dict(load_file(path, device=str(self.args.device)))
