"""Gradients of the task loss on a few labelled batches: what Fisher traces and gate importance are built from."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from ..checks import invalid, require


def loss_gradients(
    model: nn.Module, tensors: Sequence[torch.Tensor], batches: Iterable, num_batches: int, field: str = "batches"
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Yield (∂loss/∂t for t in `tensors`) for each of up to `num_batches` labelled batches, in order.

    Batches are dicts of model inputs with labels (the model's output must have `.loss`), moved to the model's device.
    The model runs in eval mode (no dropout noise in the scores) with every parameter frozen but `tensors`, so the
    backward pass skips what is not asked for; torch.autograd.grad leaves every `.grad` as it was. The model's mode
    and requires_grad flags are restored when the loop ends or is left.
    Raises ValueError naming `field` for batches without a loss, and for an iterable that gave no batch.
    """
    device = next(model.parameters()).device
    flags = {p: p.requires_grad for p in model.parameters()}
    was_training = model.training
    model.eval()
    seen = 0
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for t in tensors:
            t.requires_grad_(True)
        for batch in itertools.islice(batches, num_batches):
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            with torch.enable_grad():
                loss = getattr(model(**batch), "loss", None)
                if loss is None:
                    raise invalid(field, "batches without labels", "batches whose model output has a loss")
                grads = torch.autograd.grad(loss, tuple(tensors))
            seen += 1
            yield grads
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
        model.train(was_training)
    require(seen > 0, field, "empty", "at least one batch")
