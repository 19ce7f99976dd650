"""What the report measures on one model: bytes on disk, sparsity, predictions and CPU latency."""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np
import torch
from torch import nn
from transformers import DataCollatorWithPadding

from ..families import distinct_layers

WEIGHT_SUFFIXES = (".safetensors",)
TIMING_TOKENS = 48  # tokens per latency input, unless a model has fewer positions


def bytes_on_disk(model_dir: str) -> int:
    """Bytes of the weight files in a saved model directory (config and tokenizer excluded)."""
    return sum(
        os.path.getsize(os.path.join(model_dir, f)) for f in os.listdir(model_dir) if f.endswith(WEIGHT_SUFFIXES)
    )


def saved_bytes(model: nn.Module, model_dir: str | None) -> int:
    """Bytes on disk of a saved model; a model with no local directory is saved to a temporary one to measure."""
    if hasattr(model, "bytes_on_disk"):  # an exported file (ExportedModel): its graph and weights
        return model.bytes_on_disk()
    if model_dir is not None and os.path.isdir(model_dir):
        return bytes_on_disk(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return bytes_on_disk(tmp)


def effective_weight(module: nn.Module) -> torch.Tensor | None:
    """The (out, in) float weight a Linear-like module computes with: dequantized codes (int8, low-bit), the product of
    its factors (low-rank), or its weight; None for anything else (embeddings included)."""
    if isinstance(module, (nn.Embedding,)) or type(module).__name__.endswith("Embedding"):
        return None
    if hasattr(module, "dense_weight"):  # a factorised Linear, float or int8: the product of its factors
        return module.dense_weight()
    if hasattr(module, "dequantized_weight"):  # Int8Linear, LowBitLinear
        return module.dequantized_weight()
    weight = getattr(module, "weight", None)
    return weight if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None


@torch.no_grad()
def linear_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero entries of the weights the encoder's Linears compute with, over its distinct layers.

    One meaning for every artifact kind: the float weight each module multiplies by (dequantized int8 or low-bit
    codes, the product of low-rank factors), so a zero code, a pruned weight and a ternary zero all count once.
    Families `hf_compress.families` does not describe fall back to modules whose name contains `encoder`. An exported
    file (ExportedModel) reports the PyTorch model's figure, recorded at export."""
    if isinstance(getattr(model, "sparsity", None), float):
        return model.sparsity
    try:
        modules = [m for layer in distinct_layers(model, check_linear=False) for m in layer.layer.modules()]
    except ValueError:
        modules = [m for n, m in model.named_modules() if ".encoder." in f".{n}."]
    zeros = total = 0
    for module in modules:
        weight = effective_weight(module)
        if weight is not None:
            zeros += int((weight == 0).sum())
            total += weight.numel()
    return zeros / total if total else 0.0


def _is_quantized(module: nn.Module) -> bool:
    """Whether a module stores its own weight as integer codes (int8, packed low-bit)."""
    tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    return any(not t.is_floating_point() and t.dtype in (torch.int8, torch.uint8) for t in tensors)


def float_modules(model: nn.Module) -> list[str] | None:
    """Names of the Linear / Embedding modules a quantized model keeps in float (None: nothing is quantized), so a
    report or card can say what its "int8" or "4-bit" leaves at 32 bits."""
    named = list(model.named_modules())
    if not any(_is_quantized(m) for _, m in named):
        return None
    return [n for n, m in named if isinstance(m, (nn.Linear, nn.Embedding)) and not _is_quantized(m)]


@torch.inference_mode()
def predict(model: nn.Module, dataset, tokenizer, batch_size: int = 128) -> np.ndarray:
    """Logits of `model` on a tokenised dataset, in dataset order."""
    model.eval()
    collator = DataCollatorWithPadding(tokenizer)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in dataset.column_names]
    parameters = getattr(model, "parameters", None)  # benchmarks also pass non-torch runtimes (ONNX Runtime)
    device = next(parameters()).device if parameters else torch.device("cpu")
    out = []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        batch = collator([{k: rows[k][i] for k in keys} for i in range(len(rows[keys[0]]))])
        out.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy())
    return np.concatenate(out)


@torch.inference_mode()
def latency_ms(
    models: dict[str, nn.Module],
    tokenizer,
    batch_size: int,
    seq_len: int = TIMING_TOKENS,
    repeats: int = 10,
    tokenizers: dict | None = None,
    num_threads: int | None = None,
) -> dict[str, float]:
    """Median forward latency per model, measured interleaved so every model sees the same machine state.

    Not `torch.utils.benchmark`: its Timer measures one statement at a time, so on a shared machine any drift would
    land on whichever model ran later; interleaving every round over all models keeps the ratios fair.

    The inputs are `seq_len` tokens, capped at the smallest `max_position_embeddings` among the models (see
    `timing_length`), so a model with fewer positions is timed rather than crashed.
    `tokenizers` maps a model name to its own tokenizer (e.g. after prune_vocabulary_); the others use `tokenizer`.
    `num_threads`: torch's intra-op CPU threads while timing (restored after); None keeps the current setting.
    Speed-ups depend on it (int8 kernels gain less from a second thread than fp32 ones), so comparisons name it.
    Returns milliseconds per forward pass, by model name.
    """
    seq_len = timing_length(models, seq_len)
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        return _interleaved_medians(models, tokenizer, batch_size, seq_len, repeats, tokenizers)
    finally:
        torch.set_num_threads(previous)


def timing_length(models: dict[str, nn.Module], seq_len: int = TIMING_TOKENS) -> int:
    """Tokens per timing input: `seq_len`, capped at the smallest position limit (`max_position_embeddings`) of the
    models (all are timed on the same inputs, so the ratios stay fair)."""
    limits = [getattr(getattr(m, "config", None), "max_position_embeddings", None) for m in models.values()]
    return min([seq_len, *(limit for limit in limits if isinstance(limit, int) and limit > 0)])


def _interleaved_medians(models, tokenizer, batch_size, seq_len, repeats, tokenizers) -> dict[str, float]:
    text = "the self driving car stopped at the light and everyone clapped " * 8
    inputs = {}
    for name in models:
        tok = (tokenizers or {}).get(name, tokenizer)
        inputs[name] = tok(
            [text] * batch_size, truncation=True, max_length=seq_len, padding="max_length", return_tensors="pt"
        )
    times: dict[str, list[float]] = {name: [] for name in models}
    for name, model in models.items():
        model.eval()
        model(**inputs[name])  # warm-up: first call allocates and packs
    for _ in range(repeats):
        for name, model in models.items():
            enc = inputs[name]
            start = time.perf_counter()
            model(**enc)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}
