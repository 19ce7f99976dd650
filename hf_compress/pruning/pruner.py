"""The pruning state of one training run: which weights, their importance, masks and the schedule."""

from __future__ import annotations

import torch
from torch import nn

from .importance import Importance
from .masks import mask_sparsity, update_masks
from .schedule import cubic_sparsity, resolve_step, update_due


def select_targets(
    model: nn.Module, embeddings: bool = False, pooler: bool = False, classifier: bool = False
) -> dict[str, nn.Parameter]:
    """Weights to prune: every encoder Linear, plus the word embeddings, pooler and classifier when opted in."""
    targets = {}
    for name, module in model.named_modules():  # shared (ALBERT) modules are yielded once
        is_linear = isinstance(module, nn.Linear)
        if "embedding" in name:
            keep = embeddings and (is_linear or name.endswith("word_embeddings"))
        elif ".encoder." in f".{name}.":
            keep = is_linear
        elif "pooler" in name:
            keep = pooler and is_linear
        elif "classifier" in name:
            keep = classifier and is_linear
        else:
            keep = False
        if keep:
            targets[f"{name}.weight"] = module.weight
    if not targets:
        raise ValueError(f"{type(model).__name__} has no encoder Linear layers to prune")
    return targets


class Pruner:
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
        method: str,
        target_sparsity: float,
        start: float,
        end: float,
        frequency: int,
        scope: str,
    ):
        self.targets = targets
        self.importance = Importance(method, targets)
        self.masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in targets.items()}
        self.revivable = method == "movement"
        self.shadow = {n: torch.zeros_like(w) for n, w in targets.items()} if self.revivable else {}
        self.target_sparsity = target_sparsity
        self.start, self.end, self.frequency, self.scope = start, end, frequency, scope
        self.start_step, self.end_step = 0, 0
        self.current_target = 0.0

    def set_horizon(self, max_steps: int) -> None:
        """Turn fractional schedule points into steps once Trainer knows how long training is."""
        self.start_step = resolve_step(self.start, max_steps)
        self.end_step = max(resolve_step(self.end, max_steps), self.start_step)

    def target_at(self, step: int) -> float:
        """The scheduled sparsity after `step` optimizer steps."""
        return cubic_sparsity(step, self.start_step, self.end_step, self.target_sparsity)

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

    def on_step_end(self, step: int) -> bool:
        """Update masks when the schedule says so; True when they changed."""
        if not update_due(step, self.start_step, self.end_step, self.frequency):
            return False
        self.current_target = self.target_at(step)
        if self.current_target <= self.sparsity() + 1e-12:
            return False
        self._set_masks(
            update_masks(self.importance.current(), self._ranked_against(), self.current_target, self.scope)
        )
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
        """Masks, importance scores and schedule position: everything resume needs."""
        state = {f"mask.{n}": m.to(torch.uint8) for n, m in self.masks.items()}
        state.update({f"shadow.{n}": s for n, s in self.shadow.items()})
        state.update(self.importance.state_dict())
        state["current_target"] = torch.tensor(self.current_target, dtype=torch.float64)
        return {k: v.contiguous().cpu() for k, v in state.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `state_dict` saved (on the weights' devices)."""
        for name, weight in self.targets.items():
            self.masks[name] = state[f"mask.{name}"].to(device=weight.device, dtype=torch.bool)
            if self.revivable:
                self.shadow[name] = state[f"shadow.{name}"].to(device=weight.device, dtype=weight.dtype)
        self.importance.load_state_dict(state)
        self.current_target = float(state["current_target"])


def format_layer_table(rows: list[dict]) -> str:
    """The per-layer sparsity report as a fixed-width table."""
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'weight':<{width}}  {'shape':>12}  sparsity"]
    for r in rows:
        lines.append(f"{r['name']:<{width}}  {'x'.join(map(str, r['shape'])):>12}  {r['sparsity']:7.2%}")
    total = sum(r["zeros"] for r in rows) / sum(torch.Size(r["shape"]).numel() for r in rows)
    lines.append(f"{'total':<{width}}  {'':>12}  {total:7.2%}")
    return "\n".join(lines)
