"""Calibration statistics for low-rank factorisation: input covariances and the row-summed diagonal Fisher.

Both come from a few batches through the unfactorised model: the covariance C = Σ x xᵀ of each selected Linear's
inputs (padding tokens excluded) for the activation-aware method and the output errors, and the mean squared
gradient of the task loss for each weight, averaged over each output row, for Fisher-Weighted SVD and the budget.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Calibration:
    """Statistics of the calibration batches for each selected module, in float64."""

    batches: int
    covariance: dict[str, torch.Tensor]  # (in, in): Σ over non-padding tokens of x xᵀ, x the module's input
    fisher_rows: dict[str, torch.Tensor] | None  # (out,): per-row mean over j of F_ij = mean over batches of g_ij²


def _replace_inference_tensors(model: nn.Module) -> None:
    """Swap inference-mode tensors (a model built under torch.inference_mode) for normal ones, so autograd works."""
    memo: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for store in (module._parameters, module._buffers):
            for key, tensor in store.items():
                if tensor is not None and tensor.is_inference():
                    if id(tensor) not in memo:
                        clone = tensor.clone()
                        is_param = isinstance(tensor, nn.Parameter)
                        memo[id(tensor)] = nn.Parameter(clone, tensor.requires_grad) if is_param else clone
                    store[key] = memo[id(tensor)]


def _normal(tensor: torch.Tensor) -> torch.Tensor:
    """A tensor autograd may save: batches made under torch.inference_mode() hold inference tensors."""
    return tensor.clone() if tensor.is_inference() else tensor


def calibrate(
    model: nn.Module, targets: Mapping[str, nn.Linear], dataloader: Iterable, num_batches: int, fisher: bool
) -> Calibration:
    """Input covariances of `targets` (and, when `fisher`, their row Fisher) over up to `num_batches` batches.

    The model runs in eval mode (no dropout noise in the statistics) and is restored to its mode afterwards. The
    Fisher needs each batch's task loss, i.e. labels; it uses torch.autograd.grad, so no parameter's .grad changes.
    Raises ValueError for an empty dataloader, or batches without a loss when `fisher`.
    """
    device = next(model.parameters()).device
    cov = {
        n: torch.zeros(m.in_features, m.in_features, dtype=torch.float64, device=device) for n, m in targets.items()
    }
    rows = {n: torch.zeros(m.out_features, dtype=torch.float64, device=device) for n, m in targets.items()}
    current = {"mask": None, "input": None, "xtx": None}

    def hook(name: str):
        def accumulate(module, args, output):
            if args[0] is not current["input"]:  # query, key and value read the same tensor: one product for three
                x = args[0].detach()
                mask = current["mask"]
                if mask is not None and x.shape[:-1] == mask.shape:
                    x = x[mask]  # padding positions carry no signal the model is asked to keep
                x = x.reshape(-1, x.shape[-1]).double()
                current["input"], current["xtx"] = args[0], x.T @ x
            cov[name] += current["xtx"]

        return accumulate

    if fisher:
        _replace_inference_tensors(model)
    weights = [m.weight for m in targets.values()]
    requires_grad = {p: p.requires_grad for p in model.parameters()} if fisher else {}
    handles = [m.register_forward_hook(hook(n)) for n, m in targets.items()]
    was_training = model.training
    model.eval()
    batches = 0
    try:
        if fisher:  # gradients only for the selected weights: the rest of the backward pass is skipped
            for p in model.parameters():
                p.requires_grad_(False)
            for w in weights:
                w.requires_grad_(True)
        for batch in itertools.islice(dataloader, num_batches):
            batch = {k: _normal(v.to(device)) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            mask = batch.get("attention_mask")
            current.update(mask=None if mask is None else mask.bool(), input=None, xtx=None)
            if fisher:
                with torch.enable_grad():
                    loss = getattr(model(**batch), "loss", None)
                    if loss is None:
                        raise ValueError(
                            "dataloader batches give no loss; method='fisher' and budget need batches with labels"
                        )
                    grads = torch.autograd.grad(loss, weights)
                for name, grad in zip(targets, grads):
                    rows[name] += grad.double().square().mean(dim=1)
            else:
                with torch.no_grad():
                    model(**batch)
            batches += 1
    finally:
        current.update(input=None, xtx=None)
        for handle in handles:
            handle.remove()
        for p, flag in requires_grad.items():
            p.requires_grad_(flag)
        model.train(was_training)
    if batches == 0:
        raise ValueError("dataloader gave no batches; calibration needs at least one")
    fisher_rows = {n: r / batches for n, r in rows.items()} if fisher else None
    return Calibration(batches, cov, fisher_rows)
