"""Unstructured pruning state of one run: which weights, their importance, the masks, and the schedule."""

from __future__ import annotations

import torch
from torch import nn

from ...families import base_model, encoder_linears, head_names
from .masks import mask_sparsity, update_masks
from .schedule import SparsitySchedule
from .scores import Importance


def select_targets(
    model: nn.Module, embeddings: bool = False, pooler: bool = False, classifier: bool = False
) -> dict[str, nn.Parameter]:
    """Weights to prune, by parameter name: every encoder Linear, plus embeddings, pooler and head when opted in.

    Embeddings are the input word-embedding table and the Linears of the base model outside its layers (ALBERT's
    and ELECTRA's E→H projection); the pooler is any Linear named `pooler`; the classifier is every other Linear of
    the task head. Raises ValueError for a family `hf_compress.families` does not describe.
    """
    targets = {f"{name}.weight": module.weight for name, module in encoder_linears(model).items()}
    if not targets:
        raise ValueError(f"{type(model).__name__} has no encoder Linear layers to prune")
    base = base_model(model)
    prefix = f"{model.base_model_prefix}." if base is not model else ""
    word_embeddings = model.get_input_embeddings()
    heads = set(head_names(model))
    for name, module in model.named_modules():  # shared (ALBERT) modules are yielded once
        key = f"{name}.weight"
        if key in targets or not isinstance(getattr(module, "weight", None), nn.Parameter):
            continue
        if name.startswith("hf_compress_"):  # training-only modules our trainers attach (hidden projection)
            continue
        if module is word_embeddings:
            keep = embeddings
        elif not isinstance(module, nn.Linear):
            keep = False
        elif "pooler" in name.split("."):
            keep = pooler
        elif name.split(".")[0] in heads:
            keep = classifier
        else:  # a Linear of the base model outside its layers: an embedding projection
            keep = embeddings and name.startswith(prefix)
        if keep:
            targets[key] = module.weight
    return targets


class ScheduledPruner:
    """What every pruner shares: a final sparsity reached on the run's schedule, masks kept after each step.

    Subclasses implement `_prune_to(sparsity)`; the target in effect is checkpointed under the pruner's prefix.
    """

    prefix = ""

    def __init__(self, *, target_sparsity: float, schedule: SparsitySchedule):
        self.target_sparsity = target_sparsity
        self.schedule = schedule
        self.current_target = 0.0

    def on_step_end(self, step: int) -> bool:
        """Prune further when the schedule says so; True when the masks changed."""
        if not self.schedule.due(step):
            return False
        self.current_target = self.schedule.sparsity_at(step, self.target_sparsity)
        return self._prune_to(self.current_target)

    def _prune_to(self, sparsity: float) -> bool:
        raise NotImplementedError

    def _schedule_state(self) -> dict[str, torch.Tensor]:
        return {f"{self.prefix}current_target": torch.tensor(self.current_target, dtype=torch.float64)}

    def _load_schedule_state(self, state: dict[str, torch.Tensor]) -> None:
        self.current_target = float(state[f"{self.prefix}current_target"])


class Pruner(ScheduledPruner):
    """Accumulates importance, updates masks on the cubic schedule, and keeps pruned weights at zero.

    Magnitude and Taylor masks are monotone (Zhu & Gupta 2017): a pruned weight stays pruned. Movement masks are
    recomputed over all weights at every update, as Sanh et al.'s top-k masks are: a pruned weight keeps the value
    it had (`shadow`, not in the model), its score keeps accumulating from that value, and it returns with that
    value when its score climbs back into the top. That is the published method; on short schedules it still
    removes important weights (benchmarks/RESULTS.md, movement diagnosis).
    """

    def __init__(
        self,
        targets: dict[str, nn.Parameter],
        *,
        method: str,
        target_sparsity: float,
        schedule: SparsitySchedule,
        scope: str = "global",
    ):
        super().__init__(target_sparsity=target_sparsity, schedule=schedule)
        self.targets = targets
        self.importance = Importance(method, targets)
        self.masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in targets.items()}
        self.revivable = method == "movement"
        self.shadow = {n: torch.zeros_like(w) for n, w in targets.items()} if self.revivable else {}
        self.scope = scope

    @torch.no_grad()
    def before_optimizer_step(self) -> None:
        """Score from this step's gradients, then zero the gradients of pruned weights."""
        self.importance.accumulate(self._scored_values())
        for name, weight in self.targets.items():
            if weight.grad is not None:
                weight.grad.mul_(self.masks[name])

    def _scored_values(self) -> dict[str, torch.Tensor] | None:
        """For movement, each weight's value with pruned entries read from the shadow; None otherwise."""
        if not self.revivable:
            return None
        return {n: torch.where(self.masks[n], w, self.shadow[n]) for n, w in self.targets.items()}

    def _ranked_against(self) -> dict[str, torch.Tensor]:
        """The masks a new ranking builds on: the current ones (monotone), or all-alive for movement."""
        if not self.revivable:
            return self.masks
        return {n: torch.ones_like(m) for n, m in self.masks.items()}

    @torch.no_grad()
    def _set_masks(self, new: dict[str, torch.Tensor]) -> None:
        """Adopt new masks: remember the values of newly pruned weights, restore those of revived ones, zero."""
        if self.revivable:
            for name, weight in self.targets.items():
                old, now = self.masks[name], new[name]
                revived, pruned = now & ~old, old & ~now
                self.shadow[name][pruned] = weight[pruned]
                weight[revived] = self.shadow[name][revived]
                self.shadow[name][revived] = 0
        self.masks = new
        self.apply_masks()

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero pruned weights (after the optimizer step: AdamW momentum and weight decay would revive them)."""
        for name, weight in self.targets.items():
            weight.mul_(self.masks[name])

    def _prune_to(self, sparsity: float) -> bool:
        if sparsity <= self.sparsity() + 1e-12:
            return False
        self._set_masks(update_masks(self.importance.current(), self._ranked_against(), sparsity, self.scope))
        return True

    def sparsity(self) -> float:
        """Fraction of target weights currently pruned."""
        return mask_sparsity(self.masks)

    def layer_report(self) -> list[dict]:
        """Per-tensor sparsity of the weights themselves (what a reloaded model will show)."""
        rows = []
        for name, weight in self.targets.items():
            zeros = int((weight == 0).sum())
            rows.append(
                {"name": name, "shape": list(weight.shape), "zeros": zeros, "sparsity": zeros / weight.numel()}
            )
        return rows

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Masks, held values, importance scores and schedule position: everything resume needs."""
        state = {f"mask.{n}": m.to(torch.uint8) for n, m in self.masks.items()}
        state.update({f"shadow.{n}": s for n, s in self.shadow.items()})
        state.update(self.importance.state_dict())
        state.update(self._schedule_state())
        return {k: v.contiguous().cpu() for k, v in state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` saved (on the weights' devices)."""
        for name, weight in self.targets.items():
            self.masks[name] = state[f"mask.{name}"].to(device=weight.device, dtype=torch.bool)
            if self.revivable:
                self.shadow[name] = state[f"shadow.{name}"].to(device=weight.device, dtype=weight.dtype)
        self.importance.load_state_dict(state)
        self._load_schedule_state(state)


class RemainingPruner(Pruner):
    """Unstructured pruning of what the FFN masks leave: target_sparsity counts only the weights slicing keeps."""

    def __init__(self, targets: dict[str, nn.Parameter], *, ffn, **kwargs):
        super().__init__(targets, **kwargs)
        self.ffn = ffn
        # target name -> (FFN layer index, the weight dimension that indexes neurons)
        self.neuron_dim = {}
        for i, layer in enumerate(ffn.layers):
            self.neuron_dim[f"{layer.module_name('ffn_up')}.weight"] = (i, 0)
            self.neuron_dim[f"{layer.module_name('ffn_down')}.weight"] = (i, 1)

    def _alive_entries(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """Which entries of target `name` the FFN masks keep (all of them for non-FFN weights)."""
        if name not in self.neuron_dim:
            return torch.ones_like(like, dtype=torch.bool)
        i, dim = self.neuron_dim[name]
        mask = self.ffn.masks[i]
        return (mask[:, None] if dim == 0 else mask[None, :]).expand_as(like)

    def _prune_to(self, sparsity: float) -> bool:
        """Pruner's update with the sparsity reached among the remaining entries only (run after the FFN pruner)."""
        if sparsity <= self.sparsity() + 1e-12:
            return False
        remaining = {n: self._alive_entries(n, w) for n, w in self.targets.items()}
        scores, base = self.importance.current(), self._ranked_against()
        new = update_masks(
            {n: scores[n][r] for n, r in remaining.items()},
            {n: base[n][r] for n, r in remaining.items()},
            sparsity,
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
        pruned = total = 0
        for name, mask in self.masks.items():
            alive = self._alive_entries(name, mask)
            pruned += int((~mask & alive).sum())
            total += int(alive.sum())
        return pruned / total if total else 0.0

    def sliced_(self, keep: list[torch.Tensor]) -> None:
        """Follow `FFNPruner.slice_`: point at the new FFN weights and slice their masks, values and scores alike."""
        for name, (i, dim) in self.neuron_dim.items():
            if name not in self.targets:
                continue
            layer = self.ffn.layers[i]
            self.targets[name] = layer.linear("ffn_up" if dim == 0 else "ffn_down").weight
            self.importance.weights[name] = self.targets[name]
            self.masks[name] = self.masks[name].index_select(dim, keep[i])
            if name in self.shadow:
                self.shadow[name] = self.shadow[name].index_select(dim, keep[i])
            self.importance.index_select_(name, dim, keep[i])


def format_layer_table(rows: list[dict]) -> str:
    """The per-layer sparsity report as a fixed-width table."""
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'weight':<{width}}  {'shape':>12}  sparsity"]
    for r in rows:
        lines.append(f"{r['name']:<{width}}  {'x'.join(map(str, r['shape'])):>12}  {r['sparsity']:7.2%}")
    total = sum(r["zeros"] for r in rows) / sum(torch.Size(r["shape"]).numel() for r in rows)
    lines.append(f"{'total':<{width}}  {'':>12}  {total:7.2%}")
    return "\n".join(lines)
