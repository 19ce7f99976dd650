"""Importance scores: one accumulator for weights, FFN neurons and attention heads, and the evidence each method adds.

Every score here is built from what Trainer already has after its backward pass: a weight and its (DDP-synchronised,
clipped) gradient, read in `on_pre_optimizer_step`. So every rank computes the same scores and masks.
"""

from __future__ import annotations

import torch

METHODS = ("movement", "taylor", "magnitude")


class ScoreAccumulator:
    """Evidence summed over optimizer steps, one float32 tensor per name; checkpointed under a key prefix.

    The state dict holds `{prefix}score.{name}` for each name and `{prefix}score_steps`, the same layout for weights
    (prefix ''), FFN neurons ('ffn.') and heads ('heads.'), so one resume path restores them all.
    """

    def __init__(self, like: dict[str, torch.Tensor], prefix: str = ""):
        self.prefix = prefix
        self.scores = {n: torch.zeros(t.shape, dtype=torch.float32, device=t.device) for n, t in like.items()}
        self.steps = 0

    @torch.no_grad()
    def add(self, evidence: dict[str, torch.Tensor]) -> None:
        """Add one optimizer step's evidence (a tensor shaped like each score; missing names add nothing)."""
        for name, value in evidence.items():
            self.scores[name] += value.float()
        self.steps += 1

    def mean(self) -> dict[str, torch.Tensor]:
        """Evidence averaged over the steps seen so far."""
        return {n: s / max(self.steps, 1) for n, s in self.scores.items()}

    def index_select_(self, name: str, dim: int, index: torch.Tensor) -> None:
        """Keep only the entries at `index` along `dim` (after the scored tensor was sliced)."""
        self.scores[name] = self.scores[name].index_select(dim, index.to(self.scores[name].device))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors a checkpoint holds so that accumulation resumes exactly."""
        state = {f"{self.prefix}score.{n}": s.contiguous().cpu() for n, s in self.scores.items()}
        state[f"{self.prefix}score_steps"] = torch.tensor(self.steps)
        return state

    def has_state(self, state: dict[str, torch.Tensor]) -> bool:
        """Whether `state` holds this accumulator's tensors."""
        return f"{self.prefix}score_steps" in state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` saved, on the scores' devices."""
        for name, score in self.scores.items():
            self.scores[name] = state[f"{self.prefix}score.{name}"].to(device=score.device, dtype=torch.float32)
        self.steps = int(state[f"{self.prefix}score_steps"])


def gate_gradients(weight: torch.Tensor, grad: torch.Tensor, group: int = 1) -> torch.Tensor:
    """∂L/∂g for a gate on each input feature of a Linear (or on each block of `group` features): Σ_rows W ⊙ ∂L/∂W.

    With out = W (g ⊙ h) + b, ∂L/∂g_i = Σ_tokens h_i (W[:, i] · ∂L/∂out) = Σ_j W[j, i] ∂L/∂W[j, i]. Shape: (in,) or
    (in / group,). Molchanov et al. 2019 (arXiv:1906.10771) for neurons, Michel et al. 2019 (arXiv:1905.10650) for
    heads; a module applied at several positions (ALBERT sharing) gets the sum over them from its shared gradient.
    """
    per_input = (weight.detach().float() * grad.detach().float()).sum(0)
    return per_input.view(-1, group).sum(1)


class Importance(ScoreAccumulator):
    """Per-weight importance for unstructured pruning; higher means keep.

    taylor: mean over steps of |W·∂L/∂W| (Molchanov et al. 2019), the first-order estimate of the loss change when W
    is zeroed. movement: S = −Σ_t W·∂L/∂W (Sanh, Wolf & Rush 2020, arXiv:2005.07683), large when W moves away from 0.
    magnitude: |W| now (no accumulation).
    """

    def __init__(self, method: str, weights: dict[str, torch.Tensor]):
        if method not in METHODS:
            raise ValueError(f"pruning_method={method!r} is invalid; allowed: {', '.join(METHODS)}")
        super().__init__(weights)
        self.method = method
        self.weights = weights

    @torch.no_grad()
    def accumulate(self, values: dict[str, torch.Tensor] | None = None) -> None:
        """Add this step's evidence from the weights and their gradients.

        `values` replaces the weights in the product where given: movement scores a pruned weight by the value it
        had, as Sanh et al.'s straight-through estimator does, so that its score can still rise.
        """
        if self.method == "magnitude":
            return
        values = values or {}
        evidence = {}
        for name, weight in self.weights.items():
            if weight.grad is None:
                continue
            product = values.get(name, weight).detach().float() * weight.grad.detach().float()
            evidence[name] = -product if self.method == "movement" else product.abs()
        self.add(evidence)

    def current(self) -> dict[str, torch.Tensor]:
        """The scores to rank weights by now."""
        if self.method == "magnitude":
            return {n: w.detach().abs().float() for n, w in self.weights.items()}
        if self.method == "taylor":
            return self.mean()
        return self.scores
