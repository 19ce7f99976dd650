"""The export's check: the file run in its runtime on sample inputs and compared with the PyTorch model it came from.

The sample is tokenizer output (single sentences and pairs, padded, lengths up to the model's longest input) of
random vocabulary words, in four batches of different sizes and lengths, so that the dynamic axes are exercised.
Float graphs must match to FLOAT_TOLERANCE (max |logit difference| at the positions serving reads); graphs with int8
matmuls must make the same decisions as the PyTorch int8 model on at least INT8_AGREEMENT of them (argmax per
sequence, per token, or of the answer's start and end).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

FLOAT_TOLERANCE = 1e-4
INT8_AGREEMENT = 0.995
# (batch size, sequence length (None: the model's longest input), sentence pairs) of each sample batch
SAMPLE_SHAPES = ((2, None, True), (1, 3, False), (16, 24, True), (48, 12, False))
# OpenVINO's INFERENCE_PRECISION_HINT for each precision field value
OPENVINO_PRECISIONS = {"f32": "f32", "bf16": "bf16"}


def _words(tokenizer, vocab_size: int) -> list[str]:
    """Whole words of the vocabulary (no special token, no sub-word piece), within the model's embedding rows."""
    special = set(tokenizer.all_special_ids)
    vocab = sorted((i, token) for token, i in tokenizer.get_vocab().items() if i < vocab_size and i not in special)
    vocab = [(token, i) for i, token in vocab]  # in id order: get_vocab()'s order changes from process to process
    words = [token for token, _ in vocab if token.isalnum()]
    return words if len(words) >= 10 else [token for token, _ in vocab]


def sample_batches(tokenizer, names: tuple[str, ...], max_length: int, vocab_size: int, seed: int = 0) -> list[dict]:
    """The sample: SAMPLE_SHAPES batches of tokenizer output (int64 numpy arrays named as the graph's inputs).

    Tokenizes with a copy: a fast tokenizer keeps the truncation and padding of its last call in its backend, which
    tokenizer.json would then carry to serving."""
    tokenizer = copy.deepcopy(tokenizer)
    rng = np.random.default_rng(seed)
    words = _words(tokenizer, vocab_size)
    batches = []
    for size, length, pairs in SAMPLE_SHAPES:
        length = min(length or max_length, max_length)
        # the first row fills the batch's length; the others are shorter, so that padding is exercised
        counts = [length] + [int(n) for n in rng.integers(1, length + 1, size - 1)]
        texts = [[str(w) for w in rng.choice(words, n)] for n in counts]
        if pairs:
            firsts = [t[: max(1, len(t) // 2)] for t in texts]
            seconds = [t[max(1, len(t) // 2) :] or t[:1] for t in texts]
            encoded = tokenizer(
                firsts,
                seconds,
                is_split_into_words=True,
                truncation=True,
                max_length=length,
                padding=True,
                return_tensors="np",
            )
        else:
            encoded = tokenizer(
                texts, is_split_into_words=True, truncation=True, max_length=length, padding=True, return_tensors="np"
            )
        batches.append({name: np.asarray(encoded[name], dtype=np.int64) for name in names})
    return batches


def torch_outputs(model, batches: list[dict], output_names: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
    """The PyTorch model's outputs on each batch."""
    results = []
    with torch.inference_mode():
        for batch in batches:
            outputs = model(**{name: torch.from_numpy(array) for name, array in batch.items()})
            results.append({name: outputs[name].float().numpy() for name in output_names})
    return results


def onnxruntime_runner(path: str):
    """A function running the ONNX file in ONNX Runtime (CPU): feeds -> {output name: array}."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(None, feeds)))


def openvino_runner(path: str, precision: str = "f32"):
    """A function running the OpenVINO IR on CPU with INFERENCE_PRECISION_HINT `precision`; and the precision the
    compiled model reports (a CPU without bf16 support runs f32)."""
    import openvino as ov

    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision]})
    names = [output.get_any_name() for output in compiled.outputs]

    def run(feeds):
        results = compiled(feeds)
        return {name: results[output] for name, output in zip(names, compiled.outputs)}

    return run, compiled.get_property("INFERENCE_PRECISION_HINT").to_string()


def _decisions(name: str, logits: np.ndarray, mask: np.ndarray, task: str) -> np.ndarray:
    """What serving decides from an output: the label per sequence, the tag per real token, or the position of the
    answer's start (end) per sequence among its real tokens."""
    if task == "text-classification":
        return logits.argmax(-1)
    if task == "token-classification":
        return logits.argmax(-1)[mask]
    return np.where(mask, logits, -np.inf).argmax(-1)


def compare(reference: list[dict], got: list[dict], batches: list[dict], task: str) -> dict:
    """Max |difference| at the positions serving reads, and the agreement of the decisions, over the sample."""
    max_diff, same, total = 0.0, 0, 0
    for want, have, batch in zip(reference, got, batches):
        mask = batch["attention_mask"].astype(bool)
        for name, expected in want.items():
            actual = np.asarray(have[name], dtype=np.float32)
            if actual.shape != expected.shape:
                raise ValueError(f"output {name!r} has shape {actual.shape}; PyTorch's has {expected.shape}")
            keep = slice(None) if task == "text-classification" else mask  # token and span outputs: real tokens
            diff = np.abs(actual - expected)[keep]
            max_diff = max(max_diff, float(diff.max()) if diff.size else 0.0)
            a, b = _decisions(name, expected, mask, task), _decisions(name, actual, mask, task)
            same += int((a == b).sum())
            total += a.size
    sequences = sum(len(batch["input_ids"]) for batch in batches)
    return {"sequences": sequences, "max_abs_diff": max_diff, "argmax_agreement": same / total, "decisions": total}


def within_bound(stats: dict, int8: bool) -> tuple[bool, str]:
    """Whether the comparison is within the bound of its kind, and the bound as words."""
    if int8:
        return stats["argmax_agreement"] >= INT8_AGREEMENT, f"argmax agreement >= {INT8_AGREEMENT:.1%}"
    return stats["max_abs_diff"] <= FLOAT_TOLERANCE, f"max |logit difference| <= {FLOAT_TOLERANCE:.0e}"
