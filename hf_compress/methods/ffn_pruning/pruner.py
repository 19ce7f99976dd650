"""Structured pruning of FFN neurons while training: gate importance, masks on the schedule, slicing at the end."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from ...checks import check_choice
from ...families import set_intermediate_size
from ..pruning.masks import prune_lowest
from ..pruning.pruner import ScheduledPruner
from ..pruning.schedule import SparsitySchedule
from ..pruning.scores import ScoreAccumulator, gate_gradients
from .transform import (
    FFN_METHODS,
    check_ffn_sparsity,
    ffn_layers,
    magnitude_scores,
    neurons_to_remove,
    slice_layer,
    zero_neurons,
)


class FFNPruner(ScheduledPruner):
    """Masks whole FFN neurons on the cubic schedule while training, keeps them at zero, and slices them at the end.

    The same number of neurons goes in every layer (a stock config has one intermediate size). Taylor importance is
    the mean over steps of |∂L/∂g_i| for a gate on neuron i (Molchanov et al. 2019), read from the FFN output weight's
    synchronised gradient; magnitude is the L2 norm of the neuron's weights.
    """

    prefix = "ffn."

    def __init__(self, model: PreTrainedModel, *, sparsity: float, method: str, schedule: SparsitySchedule):
        check_choice("ffn_pruning_method", method, FFN_METHODS)
        super().__init__(target_sparsity=sparsity, schedule=schedule)
        self.config = model.config
        try:
            self.layers = ffn_layers(model)
        except ValueError as error:
            raise ValueError(f"ffn_sparsity={sparsity!r} cannot be applied: {error}") from error
        self.original_size = self.layers[0].size
        check_ffn_sparsity(sparsity, self.original_size)  # before any training
        self.method = method
        device = self.layers[0].up.weight.device
        self.masks = [torch.ones(self.original_size, dtype=torch.bool, device=device) for _ in self.layers]
        like = {layer.name: self.masks[i] for i, layer in enumerate(self.layers)}
        self.importance = ScoreAccumulator(like, prefix=self.prefix)

    @property
    def scores(self) -> list[torch.Tensor]:
        """Summed |∂L/∂g| per layer, in `layers` order."""
        return [self.importance.scores[layer.name] for layer in self.layers]

    @property
    def steps(self) -> int:
        """Optimizer steps whose evidence the scores hold."""
        return self.importance.steps

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Add this step's |∂L/∂g_i| (gradients already DDP-averaged), then zero the gradients of masked neurons."""
        if self.method == "taylor":
            self.importance.add(
                {
                    layer.name: gate_gradients(layer.down.weight, layer.down.weight.grad).abs()
                    for layer in self.layers
                    if layer.down.weight.grad is not None
                }
            )
        for layer, mask in zip(self.layers, self.masks):
            zero_neurons(layer, mask, grads=True)

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero masked neurons (after the optimizer step: AdamW momentum and weight decay would revive them)."""
        for layer, mask in zip(self.layers, self.masks):
            zero_neurons(layer, mask)

    def current_scores(self) -> list[torch.Tensor]:
        """The per-neuron scores to rank by now (higher means keep)."""
        if self.method == "magnitude":
            return magnitude_scores(self.layers)
        mean = self.importance.mean()
        return [mean[layer.name] for layer in self.layers]

    def removed(self) -> int:
        """Neurons masked in each layer (the same in all)."""
        return int((~self.masks[0]).sum())

    def kept(self) -> int:
        """Neurons alive in each layer: the intermediate size the model will be sliced to."""
        return int(self.masks[0].sum())

    def sparsity(self) -> float:
        """Fraction of the original FFN neurons removed so far."""
        return 1.0 - self.kept() / self.original_size

    def _prune_to(self, sparsity: float) -> bool:
        n_prune = neurons_to_remove(sparsity, self.original_size) - self.removed()
        if n_prune <= 0:
            return False
        self.masks = [prune_lowest(s, m, n_prune) for s, m in zip(self.current_scores(), self.masks)]
        self.apply_masks()
        return True

    def slice_(self) -> list[torch.Tensor]:
        """Physically remove masked neurons from the model and config; return the kept indices per layer."""
        keep = [m.nonzero().squeeze(1) for m in self.masks]
        for layer, idx in zip(self.layers, keep):
            slice_layer(layer, idx)
            self.importance.index_select_(layer.name, 0, idx)
        set_intermediate_size(self.config, len(keep[0]))
        self.masks = [m[idx] for m, idx in zip(self.masks, keep)]  # all True: a second slice is a no-op
        return keep

    def report(self) -> dict:
        """What the final save reports: sizes, method and each layer's kept count."""
        return {
            "method": self.method,
            "sparsity": round(1.0 - self.kept() / self.original_size, 6),
            "intermediate_size": {"before": self.original_size, "after": self.kept()},
            "layers": [{"name": layer.name, "kept": int(m.sum())} for layer, m in zip(self.layers, self.masks)],
        }

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Masks, scores and schedule position, under an `ffn.` prefix."""
        state = {f"{self.prefix}mask.{layer.name}": m.to(torch.uint8) for layer, m in zip(self.layers, self.masks)}
        state.update(self.importance.state_dict())
        state.update(self._schedule_state())
        return {k: v.contiguous().cpu() for k, v in state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` saved."""
        for i, layer in enumerate(self.layers):
            self.masks[i] = state[f"{self.prefix}mask.{layer.name}"].to(device=self.masks[i].device, dtype=torch.bool)
        self.importance.load_state_dict(state)
        self._load_schedule_state(state)
