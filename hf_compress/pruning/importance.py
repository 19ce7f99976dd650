"""Importance scores for unstructured pruning: movement, first-order Taylor, magnitude."""

from __future__ import annotations

import torch

METHODS = ("movement", "taylor", "magnitude")


class Importance:
    """Per-weight importance accumulated over optimizer steps; higher means keep."""

    def __init__(self, method: str, weights: dict[str, torch.Tensor]):
        if method not in METHODS:
            raise ValueError(f"pruning_method={method!r} is invalid; allowed: {', '.join(METHODS)}")
        self.method = method
        self.weights = weights
        self.scores = {n: torch.zeros_like(w, dtype=torch.float32) for n, w in weights.items()}
        self.steps = 0

    @torch.no_grad()
    def accumulate(self, values: dict[str, torch.Tensor] | None = None) -> None:
        """Add this step's evidence from weights and their (synchronised) gradients.

        `values` replaces the weights in the product where given: movement scores a pruned weight by the value it
        had, as Sanh et al.'s straight-through estimator does, so that its score can still rise.
        """
        if self.method == "magnitude":
            return
        values = values or {}
        for name, weight in self.weights.items():
            if weight.grad is None:
                continue
            product = values.get(name, weight).detach().float() * weight.grad.detach().float()
            if self.method == "movement":
                # Sanh, Wolf & Rush 2020 (arXiv:2005.07683): S = −Σ_t W·∂L/∂W, large when W moves away from 0.
                self.scores[name] -= product
            else:
                # Molchanov et al. 2019 (arXiv:1906.10771): |W·∂L/∂W| estimates the loss change of removing W.
                self.scores[name] += product.abs()
        self.steps += 1

    def current(self) -> dict[str, torch.Tensor]:
        """The scores to rank weights by now."""
        if self.method == "magnitude":
            return {n: w.detach().abs().float() for n, w in self.weights.items()}
        if self.method == "taylor":
            return {n: s / max(self.steps, 1) for n, s in self.scores.items()}
        return self.scores

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors that a checkpoint must hold to resume the accumulation exactly."""
        state = {f"score.{n}": s for n, s in self.scores.items()}
        state["score_steps"] = torch.tensor(self.steps)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` saved."""
        for name in self.scores:
            self.scores[name].copy_(state[f"score.{name}"])
        self.steps = int(state["score_steps"])
