"""Distillation losses as pure tensor functions, each returning a per-example sum so callers choose the divisor."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Logits of classes a distribution must not put mass on (padded positions of a span head) are set to this: finite,
# so that 0 · (log p_t − log p_s) stays 0 and gradients stay finite, where −inf would give NaN.
MASKED_LOGIT = -1e9


def _masked(logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    logits = logits.float()
    return logits if mask is None else logits.masked_fill(~mask.bool(), MASKED_LOGIT)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Σ over rows of T² · KL(softmax(t/T) ‖ softmax(s/T)) (Hinton et al. 2015, arXiv:1503.02531).

    Shapes: (rows, classes) for both logits. `mask` (rows, classes), bool, marks the classes a row may predict (the
    real positions of a span head's start/end distribution); the others get no probability. The T² factor keeps the
    gradient's scale independent of T, so alpha means the same at any temperature.
    """
    log_p_student = F.log_softmax(_masked(student_logits, mask) / temperature, dim=-1)
    log_p_teacher = F.log_softmax(_masked(teacher_logits, mask) / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="none").sum(-1)
    return kl.sum() * temperature**2


def ce_loss(student_logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Σ over labelled rows of the cross-entropy with the hard labels (-100 = no label); `mask` as in `kd_loss`."""
    return F.cross_entropy(_masked(student_logits, mask), labels, ignore_index=-100, reduction="sum")


def _token_weights(attention_mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """Per-token weights 1/n_tokens of each example, so each example's terms average over its real tokens."""
    if attention_mask is None:
        mask = torch.ones(like.shape[:2], device=like.device, dtype=like.dtype)
    else:
        mask = attention_mask.to(like.dtype)
    return mask / mask.sum(-1, keepdim=True).clamp_min(1)


def hidden_state_loss(
    student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Σ over examples of the MSE between hidden states, averaged over real tokens and features (TinyBERT, 1909.10351).

    The student's states must already be projected to the teacher's width.
    """
    per_token = (student_hidden.float() - teacher_hidden.float()).pow(2).mean(-1)
    return (per_token * _token_weights(attention_mask, per_token)).sum()


def attention_loss(
    student_attn: torch.Tensor,
    teacher_attn: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    loss_type: str = "kl",
) -> torch.Tensor:
    """Σ over examples of the divergence of attention maps (batch, heads, query, key), over real query and keys.

    With different head counts both maps are averaged over heads first (heads do not correspond one to one).
    "kl" is KL(teacher ‖ student) per query row (MiniLM, 2002.10957); "mse" is TinyBERT's MSE on probabilities.
    """
    if student_attn.shape[1] != teacher_attn.shape[1]:
        student_attn, teacher_attn = student_attn.mean(1, keepdim=True), teacher_attn.mean(1, keepdim=True)
    s, t = student_attn.float(), teacher_attn.float()
    if loss_type == "kl":
        eps = torch.finfo(s.dtype).tiny  # masked keys have probability 0: keep log finite, their term is 0 anyway
        per_row = (t * (torch.log(t + eps) - torch.log(s + eps))).sum(-1)
    elif loss_type == "mse":
        # Mean over the real keys only: averaging over padded keys would shrink the term with the padding length.
        keys = torch.ones(s.shape[-1], device=s.device) if attention_mask is None else attention_mask[:, None, None]
        keys = keys.to(s.dtype)
        per_row = ((s - t).pow(2) * keys).sum(-1) / keys.sum(-1).clamp_min(1)
    else:
        raise ValueError(f"attention loss_type={loss_type!r}; allowed: 'kl', 'mse'")
    per_row = per_row.mean(1)  # over heads: (batch, query)
    return (per_row * _token_weights(attention_mask, per_row)).sum()


def embedding_terms(student: torch.Tensor, teacher: torch.Tensor, want: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Per-example sums of the sentence-embedding distillation terms named in `want`, on (batch, hidden) embeddings.

    - "embedding_mse": Σ_i mean_d (s_id − t_id)², the MSE that sentence-transformers' model distillation trains with
      (Reimers & Gurevych 2020, arXiv:2004.09813).
    - "embedding_cosine": Σ_i (1 − cos(s_i, t_i)).
    - "similarity_loss": Σ_i mean_j (cos(s_i, s_j) − cos(t_i, t_j))², the in-batch similarity matrices matched row by
      row (the relations a retrieval index reads; as in MiniLM's relation transfer, on sentence vectors).
    """
    s, t = student.float(), teacher.float()
    terms = {}
    if "embedding_mse" in want:
        terms["embedding_mse"] = (s - t).pow(2).mean(dim=1).sum()
    if "embedding_cosine" in want:
        terms["embedding_cosine"] = (1 - F.cosine_similarity(s, t, dim=1)).sum()
    if "similarity_loss" in want:
        s_n, t_n = F.normalize(s, dim=1), F.normalize(t, dim=1)
        terms["similarity_loss"] = (s_n @ s_n.T - t_n @ t_n.T).pow(2).mean(dim=1).sum()
    return terms
