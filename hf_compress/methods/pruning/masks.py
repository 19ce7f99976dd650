"""Binary masks from scores: entries already pruned in the masks passed in stay pruned (movement passes all-alive)."""

from __future__ import annotations

import torch

from ...checks import check_choice

SCOPES = ("global", "per_layer")


def prune_lowest(scores: torch.Tensor, alive: torch.Tensor, n_prune: int) -> torch.Tensor:
    """Mask that additionally removes the n_prune lowest-scored alive entries (1-D views); ties break by position."""
    keep = alive.clone()
    if n_prune <= 0:
        return keep
    masked = torch.where(alive, scores, torch.full_like(scores, float("inf")))
    # The first n_prune entries of a stable sort, without sorting millions of scores: everything below the n-th
    # smallest value, then ties at that value by position, so ties (e.g. all-zero movement scores) break the same
    # way on every run and rank.
    threshold = torch.kthvalue(masked, n_prune).values
    below = masked < threshold
    keep[below] = False
    ties = torch.nonzero(masked == threshold).flatten()[: n_prune - int(below.sum())]
    keep[ties] = False
    return keep


@torch.no_grad()
def update_masks(
    scores: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], sparsity: float, scope: str
) -> dict[str, torch.Tensor]:
    """New masks reaching `sparsity` (fraction of zeros) over the targets, globally or within each tensor."""
    check_choice("pruning_scope", scope, SCOPES)
    if scope == "per_layer":
        new = {}
        for name, score in scores.items():
            alive = masks[name].flatten()
            n_prune = int(sparsity * alive.numel()) - int((~alive).sum())
            new[name] = prune_lowest(score.flatten(), alive, n_prune).view_as(masks[name])
        return new
    names = list(scores)
    flat_scores = torch.cat([scores[n].flatten() for n in names])
    alive = torch.cat([masks[n].flatten() for n in names])
    n_prune = int(sparsity * alive.numel()) - int((~alive).sum())
    keep = prune_lowest(flat_scores, alive, n_prune)
    new, offset = {}, 0
    for name in names:
        size = masks[name].numel()
        new[name] = keep[offset : offset + size].view_as(masks[name])
        offset += size
    return new


def mask_sparsity(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of pruned entries over all masks."""
    total = sum(m.numel() for m in masks.values())
    return sum(int((~m).sum()) for m in masks.values()) / total if total else 0.0
