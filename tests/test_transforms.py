"""Every public transform works under torch.no_grad() and torch.inference_mode(), and on a model built inside
inference mode, giving the same model as a plain call (or a clear error where it cannot)."""

from __future__ import annotations

import contextlib

import pytest
import torch

from hf_compress import (
    create_student,
    factorize_linear_,
    prune_ffn_,
    prune_vocabulary_,
    quantize_,
    slice_ffn_,
    smooth_activations_,
    to_albert,
)
from hf_compress.methods.ffn_pruning.transform import ffn_layers
from tests.testing_utils import tiny_batch, tiny_bert, tiny_tokenizer

CONTEXTS = {
    "plain": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "inference_mode": torch.inference_mode,
}


def _keep_half(model):
    return [torch.arange(layer.size) % 2 == 0 for layer in ffn_layers(model)]


TRANSFORMS = {
    "create_student": lambda model, tok: create_student(model, num_hidden_layers=1),
    "to_albert": lambda model, tok: to_albert(model, embedding_size=16, num_hidden_groups=1),
    "slice_ffn_": lambda model, tok: slice_ffn_(model, _keep_half(model)),
    "prune_ffn_ magnitude": lambda model, tok: prune_ffn_(model, None, 0.5, method="magnitude"),
    "prune_ffn_ taylor": lambda model, tok: prune_ffn_(model, [tiny_batch(seed=i) for i in range(2)], 0.5),
    "prune_vocabulary_": lambda model, tok: (prune_vocabulary_(model, tok, [[5, 6, 7, 8]]), model)[1],
    "quantize_": lambda model, tok: quantize_(model),
    "factorize_linear_ svd": lambda model, tok: factorize_linear_(model, rank_ratio=0.5, method="svd"),
    "factorize_linear_ activation": lambda model, tok: factorize_linear_(
        model, rank_ratio=0.5, method="activation", dataloader=[tiny_batch(seed=i) for i in range(2)]
    ),
    "factorize_linear_ fisher": lambda model, tok: factorize_linear_(
        model, rank_ratio=0.5, method="fisher", dataloader=[tiny_batch(seed=i) for i in range(2)]
    ),
    "smooth_activations_": lambda model, tok: (
        smooth_activations_(model, [tiny_batch(seed=i) for i in range(2)]),
        model,
    )[1],
}
NEED_GRADIENTS = ("prune_ffn_ taylor",)  # refused on inference tensors (Fisher SVD copies them instead)


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("built_in_inference_mode", [False, True], ids=["built-normally", "built-in-inference-mode"])
@pytest.mark.parametrize("context", list(CONTEXTS))
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_transform_under_no_grad_and_inference_mode(tmp_path, name, context, built_in_inference_mode):
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    reference = TRANSFORMS[name](tiny_bert(seed=3), tokenizer)
    with torch.inference_mode() if built_in_inference_mode else contextlib.nullcontext():
        model = tiny_bert(seed=3)
    if name in NEED_GRADIENTS and built_in_inference_mode:
        # Taylor scores need gradients, which inference tensors never get: refused, naming why and what works.
        with pytest.raises(ValueError, match="inference"):
            with CONTEXTS[context]():
                TRANSFORMS[name](model, tokenizer)
        return
    with CONTEXTS[context]():
        result = TRANSFORMS[name](model, tokenizer)
    batch = tiny_batch()
    if name == "prune_vocabulary_":
        batch["input_ids"] = torch.full_like(batch["input_ids"], 1)  # a kept id in both (new id of old id 1 is 1)
    torch.testing.assert_close(logits(result, batch), logits(reference, batch), rtol=0, atol=1e-5)
    if built_in_inference_mode and name not in ("create_student", "to_albert"):
        return  # an in-place transform keeps the user's inference tensors; only the new ones are checked below
    trainable = [p for p in result.parameters() if p.requires_grad]
    assert not any(p.is_inference() for p in result.parameters())  # whatever the context, nothing new is one
    if name != "quantize_":  # the result trains: a backward pass reaches its parameters
        result.train()
        result(**batch).loss.backward()
        assert all(p.grad is not None for p in trainable if p.dim() == 2 and "embeddings" not in str(p.shape))
