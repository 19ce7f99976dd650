"""Structured pruning of FFN neurons: gate importance, masks on the cubic schedule, and slicing to a smaller model.

Removing the same number of intermediate neurons from every FFN layer leaves a stock BertConfig / AlbertConfig with
a smaller `intermediate_size`: the result is smaller and faster in plain transformers. Attention heads are scored the
same way but only reported, since a stock checkpoint cannot express a layer with fewer heads.

The importance of a neuron is the first-order Taylor estimate of the loss change when a gate g_i = 1 on its
activation h_i is closed (Molchanov et al. 2019, arXiv:1906.10771; Michel et al. 2019, arXiv:1905.10650 for heads).
With out = W2 (g ⊙ h) + b2, ∂L/∂g_i = Σ_tokens h_i (W2[:, i] · ∂L/∂out) = Σ_j W2[j, i] ∂L/∂W2[j, i]: the column sum
of W2 ⊙ ∂L/∂W2. So no gate has to be inserted: the output dense weight and its (DDP-synchronised) gradient suffice,
and a layer shared ALBERT-style gets the sum over its uses from the shared weight's gradient.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from ..provenance import record
from .masks import _prune_lowest, update_masks  # one tie-breaking rule for both kinds of masks
from .pruner import Pruner
from .schedule import cubic_sparsity, resolve_step, update_due

logger = logging.getLogger(__name__)
FFN_METHODS = ("taylor", "magnitude")


@dataclass
class FFNLayer:
    """One feed-forward block: `up` (hidden -> intermediate) then `down` (intermediate -> hidden)."""

    name: str  # module path of the transformer layer
    up_name: str
    up: nn.Linear
    down_name: str
    down: nn.Linear

    @property
    def size(self) -> int:
        return self.up.out_features


def ffn_layers(model: nn.Module) -> list[FFNLayer]:
    """The distinct FFN blocks: BERT-family intermediate.dense / output.dense, or ALBERT ffn / ffn_output."""
    layers = []
    for name, module in model.named_modules():  # a shared (ALBERT) layer is yielded once
        prefix = f"{name}." if name else ""
        up = getattr(getattr(module, "intermediate", None), "dense", None)
        down = getattr(getattr(module, "output", None), "dense", None)
        if isinstance(up, nn.Linear) and isinstance(down, nn.Linear):
            layers.append(FFNLayer(name, f"{prefix}intermediate.dense", up, f"{prefix}output.dense", down))
        elif isinstance(getattr(module, "ffn", None), nn.Linear) and isinstance(
            getattr(module, "ffn_output", None), nn.Linear
        ):
            layers.append(FFNLayer(name, f"{prefix}ffn", module.ffn, f"{prefix}ffn_output", module.ffn_output))
    if not layers:
        raise ValueError(
            f"{type(model).__name__} has no FFN layers to prune (expected BERT-style intermediate.dense/output.dense "
            "or ALBERT-style ffn/ffn_output nn.Linear modules; prune before quantizing)"
        )
    sizes = {layer.size for layer in layers}
    if len(sizes) > 1:
        raise ValueError(f"FFN layers have different intermediate sizes {sorted(sizes)}; a stock config needs one")
    return layers


def attention_outputs(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The distinct attention output projections (BERT attention.output.dense, ALBERT attention.dense)."""
    found = []
    for name, module in model.named_modules():
        attention = getattr(module, "attention", None)
        dense = getattr(getattr(attention, "output", None), "dense", None)  # BertAttention -> BertSelfOutput
        if not isinstance(dense, nn.Linear):
            dense = getattr(attention, "dense", None)  # AlbertAttention
        if isinstance(dense, nn.Linear):
            found.append((f"{name}.attention", dense))
    return found


def gate_gradients(weight: torch.Tensor, grad: torch.Tensor, group: int = 1) -> torch.Tensor:
    """∂L/∂g for a gate on each input feature of a Linear (or on each block of `group` features): Σ_rows W ⊙ ∂L/∂W."""
    per_input = (weight.detach().float() * grad.detach().float()).sum(0)
    return per_input.view(-1, group).sum(1)


def neurons_to_remove(sparsity: float, size: int) -> int:
    """How many of `size` neurons a sparsity removes: rounded to nearest, the same in every layer."""
    return math.floor(sparsity * size + 0.5)


def check_ffn_sparsity(sparsity: float, size: int, field_name: str = "ffn_sparsity") -> int:
    """The number of neurons to remove, or a ValueError naming the field when none would be left (or out of range)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"{field_name}={sparsity!r} is invalid; allowed: a number in [0, 1)")
    removed = neurons_to_remove(sparsity, size)
    if removed >= size:
        raise ValueError(
            f"{field_name}={sparsity!r} is invalid for intermediate_size={size}: it would remove all {size} neurons; "
            f"allowed: below {(size - 0.5) / size:.6g}"
        )
    return removed


@torch.no_grad()
def _zero_neurons(layer: FFNLayer, mask: torch.Tensor, grads: bool = False) -> None:
    """Zero the up row, up bias and down column of every masked neuron (or their gradients)."""
    tensors = [(layer.up.weight, mask[:, None]), (layer.down.weight, mask[None, :])]
    if layer.up.bias is not None:
        tensors.append((layer.up.bias, mask))
    for tensor, m in tensors:
        target = tensor.grad if grads else tensor
        if target is not None:
            target.mul_(m)


@torch.no_grad()
def _slice_layer(layer: FFNLayer, keep: torch.Tensor) -> None:
    """Keep only the neurons at indices `keep`: up rows (and bias), down columns."""
    up, down = layer.up, layer.down
    up.weight = nn.Parameter(up.weight[keep].clone(), requires_grad=up.weight.requires_grad)
    if up.bias is not None:
        up.bias = nn.Parameter(up.bias[keep].clone(), requires_grad=up.bias.requires_grad)
    down.weight = nn.Parameter(down.weight[:, keep].clone(), requires_grad=down.weight.requires_grad)
    up.out_features = down.in_features = len(keep)


def slice_ffn_(model: PreTrainedModel, masks: list[torch.Tensor]) -> PreTrainedModel:
    """Remove the FFN neurons whose mask is False (one bool mask per `ffn_layers(model)` entry) and shrink the config.

    Every mask must keep the same number of neurons, which becomes `config.intermediate_size`. A removed neuron's
    output column is dropped, so the sliced model computes what the model with those neurons zeroed computes.
    Provenance is recorded by the callers (`prune_ffn_`, the trainers), which know why the neurons went.
    """
    layers = ffn_layers(model)
    if len(masks) != len(layers):
        raise ValueError(f"masks has {len(masks)} entries; the model has {len(layers)} FFN layers")
    kept = {int(m.sum()) for m in masks}
    shapes_ok = all(m.dtype == torch.bool and m.shape == (layer.size,) for m, layer in zip(masks, layers))
    if not shapes_ok or len(kept) != 1 or 0 in kept:
        raise ValueError(
            f"each mask must be a bool vector of length {layers[0].size} keeping the same number (>= 1) of neurons; "
            f"got kept counts {sorted(kept)}"
        )
    for layer, mask in zip(layers, masks):
        _slice_layer(layer, mask.nonzero().squeeze(1).to(layer.up.weight.device))
    model.config.intermediate_size = kept.pop()
    return model


def _magnitude_scores(layers: list[FFNLayer]) -> list[torch.Tensor]:
    """L2 norm of each neuron's weights: its up row and its down column."""
    return [
        (layer.up.weight.detach().float().pow(2).sum(1) + layer.down.weight.detach().float().pow(2).sum(0)).sqrt()
        for layer in layers
    ]


def _calibration_scores(
    model: PreTrainedModel, dataloader: Iterable[Mapping], num_batches: int, layers: list[FFNLayer]
) -> list[torch.Tensor]:
    """Mean over calibration batches of |∂L/∂g_i| (the model's own loss, dropout off); leaves .grad untouched."""
    device = layers[0].down.weight.device
    weights = [layer.down.weight for layer in layers]
    scores = [torch.zeros(layer.size, device=device) for layer in layers]
    was_training = model.training
    requires_grad = [w.requires_grad for w in weights]
    model.eval()
    seen = 0
    try:
        for w in weights:
            w.requires_grad_(True)
        for batch in dataloader:
            if seen == num_batches:
                break
            inputs = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            with torch.enable_grad():
                loss = model(**inputs).loss
                if loss is None:
                    raise ValueError("dataloader batches need labels, so that the model computes its own loss")
                grads = torch.autograd.grad(loss, weights)
            for score, w, g in zip(scores, weights, grads):
                score += gate_gradients(w, g).abs()
            seen += 1
    finally:
        for w, flag in zip(weights, requires_grad):
            w.requires_grad_(flag)
        model.train(was_training)
    if seen == 0:
        raise ValueError("dataloader yielded no batches; taylor scoring needs at least one")
    return [s / seen for s in scores]


def prune_ffn_(
    model: PreTrainedModel,
    dataloader: Iterable[Mapping] | None,
    sparsity: float,
    method: str = "taylor",
    num_batches: int = 8,
) -> PreTrainedModel:
    """Score FFN neurons on calibration batches and slice away the lowest `sparsity` fraction in every layer.

    method "taylor": mean over up to `num_batches` batches (which must hold `labels`) of |∂L/∂g_i| for a gate on
    neuron i (Molchanov et al. 2019, arXiv:1906.10771); "magnitude": the L2 norm of the neuron's weights (no data).
    The model keeps a stock config with a smaller intermediate_size; what was done goes to config.compression.
    """
    if method not in FFN_METHODS:
        raise ValueError(f"method={method!r} is invalid; allowed: {', '.join(FFN_METHODS)}")
    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1:
        raise ValueError(f"num_batches={num_batches!r} is invalid; allowed: an integer >= 1")
    if method == "taylor" and dataloader is None:
        raise ValueError("dataloader=None is invalid for method='taylor'; allowed: an iterable of batches with labels")
    layers = ffn_layers(model)
    size = layers[0].size
    n_remove = check_ffn_sparsity(sparsity, size, "sparsity")
    if method == "taylor":
        scores = _calibration_scores(model, dataloader, num_batches, layers)
    else:
        scores = _magnitude_scores(layers)
    masks = [_prune_lowest(s, torch.ones_like(s, dtype=torch.bool), n_remove) for s in scores]
    slice_ffn_(model, masks)
    details = {"method": method, "sparsity": sparsity, "intermediate_size": {"before": size, "after": size - n_remove}}
    if method == "taylor":
        details["num_batches"] = num_batches
    record(model.config, "ffn_pruning", details)
    return model


class FFNPruner:
    """Masks whole FFN neurons on the cubic schedule while training, keeps them at zero, and slices them at the end."""

    def __init__(self, model: PreTrainedModel, sparsity: float, method: str, start: float, end: float, frequency: int):
        if method not in FFN_METHODS:
            raise ValueError(f"ffn_pruning_method={method!r} is invalid; allowed: {', '.join(FFN_METHODS)}")
        self.config = model.config
        try:
            self.layers = ffn_layers(model)
        except ValueError as error:
            raise ValueError(f"ffn_sparsity={sparsity!r} cannot be applied: {error}") from error
        self.original_size = self.layers[0].size
        check_ffn_sparsity(sparsity, self.original_size)  # before any training
        self.sparsity_target, self.method = sparsity, method
        self.start, self.end, self.frequency = start, end, frequency
        self.start_step, self.end_step = 0, 0
        self.current_target = 0.0
        device = self.layers[0].up.weight.device
        self.masks = [torch.ones(self.original_size, dtype=torch.bool, device=device) for _ in self.layers]
        self.scores = [torch.zeros(self.original_size, device=device) for _ in self.layers]
        self.steps = 0

    def set_horizon(self, max_steps: int) -> None:
        """Turn fractional schedule points into steps once Trainer knows how long training is."""
        self.start_step = resolve_step(self.start, max_steps)
        self.end_step = max(resolve_step(self.end, max_steps), self.start_step)

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Add this step's |∂L/∂g_i| (gradients already DDP-averaged), then zero the gradients of masked neurons."""
        if self.method == "taylor":
            for score, layer in zip(self.scores, self.layers):
                if layer.down.weight.grad is not None:
                    score += gate_gradients(layer.down.weight, layer.down.weight.grad).abs()
            self.steps += 1
        for layer, mask in zip(self.layers, self.masks):
            _zero_neurons(layer, mask, grads=True)

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero masked neurons (after the optimizer step: AdamW momentum and weight decay would revive them)."""
        for layer, mask in zip(self.layers, self.masks):
            _zero_neurons(layer, mask)

    def current_scores(self) -> list[torch.Tensor]:
        """The per-neuron scores to rank by now (higher means keep)."""
        if self.method == "magnitude":
            return _magnitude_scores(self.layers)
        return [s / max(self.steps, 1) for s in self.scores]

    def removed(self) -> int:
        """Neurons masked in each layer (the same in all)."""
        return int((~self.masks[0]).sum())

    def kept(self) -> int:
        """Neurons alive in each layer: the intermediate_size the model will be sliced to."""
        return int(self.masks[0].sum())

    def sparsity(self) -> float:
        """Fraction of the original FFN neurons removed so far."""
        return 1.0 - self.kept() / self.original_size

    def on_step_end(self, step: int) -> bool:
        """Mask more neurons when the schedule says so, the same number in every layer; True when masks changed."""
        if not update_due(step, self.start_step, self.end_step, self.frequency):
            return False
        self.current_target = cubic_sparsity(step, self.start_step, self.end_step, self.sparsity_target)
        n_prune = neurons_to_remove(self.current_target, self.original_size) - self.removed()
        if n_prune <= 0:
            return False
        self.masks = [_prune_lowest(s, m, n_prune) for s, m in zip(self.current_scores(), self.masks)]
        self.apply_masks()
        return True

    def slice_(self) -> list[torch.Tensor]:
        """Physically remove masked neurons from the model and config; return the kept indices per layer."""
        keep = [m.nonzero().squeeze(1) for m in self.masks]
        for layer, idx in zip(self.layers, keep):
            _slice_layer(layer, idx)
        self.config.intermediate_size = len(keep[0])
        self.scores = [s[idx] for s, idx in zip(self.scores, keep)]
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
        state = {}
        for layer, mask, score in zip(self.layers, self.masks, self.scores):
            state[f"ffn.mask.{layer.name}"] = mask.to(torch.uint8)
            state[f"ffn.score.{layer.name}"] = score
        state["ffn.score_steps"] = torch.tensor(self.steps)
        state["ffn.current_target"] = torch.tensor(self.current_target, dtype=torch.float64)
        return {k: v.contiguous().cpu() for k, v in state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` saved."""
        for i, layer in enumerate(self.layers):
            device = layer.up.weight.device
            self.masks[i] = state[f"ffn.mask.{layer.name}"].to(device=device, dtype=torch.bool)
            self.scores[i] = state[f"ffn.score.{layer.name}"].to(device)
        self.steps = int(state["ffn.score_steps"])
        self.current_target = float(state["ffn.current_target"])


class HeadImportance:
    """Per-head mean over steps of |∂L/∂ξ_h| for a gate ξ_h on each head's context (Michel et al. 2019), reported only.

    transformers 5 has no pruned_heads and derives the head size from hidden_size / num_attention_heads, so a layer
    with fewer heads cannot be a stock checkpoint; the scores say which heads a custom export could drop.
    """

    def __init__(self, model: PreTrainedModel):
        self.modules = attention_outputs(model)
        self.num_heads = model.config.num_attention_heads
        self.scores = [torch.zeros(self.num_heads, device=dense.weight.device) for _, dense in self.modules]
        self.steps = 0

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Add this step's |∂L/∂ξ_h|: the column-block sums of W_o ⊙ ∂L/∂W_o."""
        for score, (_, dense) in zip(self.scores, self.modules):
            if dense.weight.grad is not None:
                head_size = dense.in_features // self.num_heads
                score += gate_gradients(dense.weight, dense.weight.grad, head_size).abs()
        self.steps += 1

    def report(self) -> list[dict]:
        """One row per attention module: the mean importance of each head."""
        steps = max(self.steps, 1)
        return [{"name": name, "importance": (s / steps).tolist()} for (name, _), s in zip(self.modules, self.scores)]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Scores and step count under a `heads.` prefix."""
        state = {f"heads.score.{name}": s.contiguous().cpu() for (name, _), s in zip(self.modules, self.scores)}
        state["heads.score_steps"] = torch.tensor(self.steps)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` saved; an older checkpoint without head scores restarts them (report-only)."""
        if "heads.score_steps" not in state:
            logger.warning("the checkpoint holds no head importance; head scores restart from zero")
            return
        for i, (name, dense) in enumerate(self.modules):
            self.scores[i] = state[f"heads.score.{name}"].to(dense.weight.device)
        self.steps = int(state["heads.score_steps"])


class RemainingPruner(Pruner):
    """Unstructured pruning of what the FFN masks leave: target_sparsity counts only the weights slicing keeps."""

    def __init__(self, targets: dict[str, nn.Parameter], ffn: FFNPruner, *args, **kwargs):
        super().__init__(targets, *args, **kwargs)
        self.ffn = ffn
        # target name -> (FFN layer index, the weight dimension that indexes neurons)
        self.neuron_dim = {}
        for i, layer in enumerate(ffn.layers):
            self.neuron_dim[f"{layer.up_name}.weight"] = (i, 0)
            self.neuron_dim[f"{layer.down_name}.weight"] = (i, 1)

    def remaining(self) -> dict[str, torch.Tensor]:
        """Per target, which entries the FFN masks keep (all of them for non-FFN weights)."""
        out = {}
        for name, weight in self.targets.items():
            if name in self.neuron_dim:
                i, dim = self.neuron_dim[name]
                mask = self.ffn.masks[i]
                out[name] = (mask[:, None] if dim == 0 else mask[None, :]).expand_as(weight)
            else:
                out[name] = torch.ones_like(weight, dtype=torch.bool)
        return out

    def on_step_end(self, step: int) -> bool:
        """Pruner.on_step_end with the target reached among the remaining entries only (call after the FFN pruner)."""
        if not update_due(step, self.start_step, self.end_step, self.frequency):
            return False
        self.current_target = self.target_at(step)
        if self.current_target <= self.sparsity() + 1e-12:
            return False
        remaining, scores, base = self.remaining(), self.importance.current(), self._ranked_against()
        new = update_masks(
            {n: scores[n][r] for n, r in remaining.items()},
            {n: base[n][r] for n, r in remaining.items()},
            self.current_target,
            self.scope,
        )
        masks = {}
        for name, r in remaining.items():
            mask = self.masks[name].clone()  # outside the remaining entries (removed neurons) nothing changes
            mask[r] = new[name]
            masks[name] = mask
        self._set_masks(masks)
        return True

    def sparsity(self) -> float:
        """Fraction of the remaining target entries that are pruned."""
        total = pruned = 0
        for name, mask in self.masks.items():
            if name in self.neuron_dim:
                i, dim = self.neuron_dim[name]
                alive = self.ffn.masks[i]
                kept = alive[:, None] if dim == 0 else alive[None, :]
                pruned += int((~mask & kept).sum())
                total += int(alive.sum()) * mask.shape[1 - dim]
            else:
                pruned += int((~mask).sum())
                total += mask.numel()
        return pruned / total if total else 0.0

    def sliced_(self, keep: list[torch.Tensor]) -> None:
        """Follow `FFNPruner.slice_`: point at the new FFN weights and slice their masks and scores alike."""
        for name, (i, dim) in self.neuron_dim.items():
            if name not in self.targets:
                continue
            layer = self.ffn.layers[i]
            self.targets[name] = layer.up.weight if dim == 0 else layer.down.weight
            self.importance.weights[name] = self.targets[name]
            self.masks[name] = self.masks[name].index_select(dim, keep[i])
            if name in self.shadow:
                self.shadow[name] = self.shadow[name].index_select(dim, keep[i])
            self.importance.scores[name] = self.importance.scores[name].index_select(dim, keep[i])
