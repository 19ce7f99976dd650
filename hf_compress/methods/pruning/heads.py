"""Attention-head importance, reported only: a stock checkpoint cannot express a layer with fewer heads."""

from __future__ import annotations

import logging

import torch
from torch import nn
from transformers import PreTrainedModel

from ...families import distinct_layers
from .scores import ScoreAccumulator, gate_gradients

logger = logging.getLogger(__name__)


def attention_outputs(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The distinct attention output projections (nn.Linear, or a module that names its input-facing weight with
    `input_weight_and_grad()`, as a factorised Linear does), named `<layer>.attention`.

    Raises ValueError for any other kind (e.g. already quantized).
    """
    layers = distinct_layers(model, check_linear=False)
    outputs = [(f"{layer.name}.attention", layer.module("attention_output")) for layer in layers]
    for (_, module), layer in zip(outputs, layers):
        if not isinstance(module, nn.Linear) and not hasattr(module, "input_weight_and_grad"):
            layer.linear("attention_output")  # raises the one message for a projection that is not a Linear
    return outputs


def input_weight_and_grad(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (out, in) weight whose input columns meet the heads' context, and its gradient: a Linear's own weight, or
    what the module names (a factorised Linear: its down factor)."""
    own = getattr(module, "input_weight_and_grad", None)
    if own is not None:
        return own()
    return module.weight, module.weight.grad


class HeadImportance:
    """Per-head mean over steps of |∂L/∂ξ_h| for a gate ξ_h on each head's context (Michel et al. 2019,
    arXiv:1905.10650).

    transformers 5 has no pruned_heads and derives the head size from hidden_size / num_attention_heads, so a layer
    with fewer heads cannot be a stock checkpoint; the scores say which heads a custom export could drop.
    """

    def __init__(self, model: PreTrainedModel):
        self.modules = attention_outputs(model)
        self.num_heads = model.config.num_attention_heads
        like = {name: torch.zeros(self.num_heads, device=dense.weight.device) for name, dense in self.modules}
        self.importance = ScoreAccumulator(like, prefix="heads.")

    @property
    def scores(self) -> list[torch.Tensor]:
        """Summed |∂L/∂ξ_h| per attention module, in `modules` order."""
        return [self.importance.scores[name] for name, _ in self.modules]

    @property
    def steps(self) -> int:
        """Optimizer steps whose evidence the scores hold."""
        return self.importance.steps

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Add this step's |∂L/∂ξ_h|: the column-block sums of W_o ⊙ ∂L/∂W_o."""
        evidence = {}
        for name, dense in self.modules:
            weight, grad = input_weight_and_grad(dense)
            if grad is not None:
                head_size = dense.in_features // self.num_heads
                evidence[name] = gate_gradients(weight, grad, head_size).abs()
        self.importance.add(evidence)

    def report(self) -> list[dict]:
        """One row per attention module: the mean importance of each head."""
        mean = self.importance.mean()
        return [{"name": name, "importance": mean[name].tolist()} for name, _ in self.modules]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Scores and step count under a `heads.` prefix."""
        return self.importance.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` saved; an older checkpoint without head scores restarts them (report-only)."""
        if not self.importance.has_state(state):
            logger.warning("the checkpoint holds no head importance; head scores restart from zero")
            return
        self.importance.load_state_dict(state)
