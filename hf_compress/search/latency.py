"""A latency model timed on this machine: per weight width, ms = base + depth · (per_layer + per_neuron · FFN width).

Weights below 8 bits are stored packed but computed with the int8 kernel (unpacked to int8 rows once, at load), so
every quantized width of the space shares one timed line: skeletons are timed at one quantized width (8 when the
space has it) and float only, and the other quantized widths read the same coefficients.

For every timed weight width, skeleton students of depth 1 and of depth D (the teacher's, at most 3)
at three FFN widths of the space (its smallest, a middle one and its largest) are timed with
`evaluation.measure.latency_ms`, all in one interleaved loop with the teacher, so that every shape and the teacher
see the same machine state. The three coefficients per weight width are a least-squares fit over those shapes (and,
for float weights, the teacher itself: depth L at full width), so one noisy timing does not decide a shape. A layer's
cost is linear in its FFN width (two Linears of that width; the attention part is fixed). The table is cached as JSON
under $HF_COMPRESS_CACHE/search (key: CPU, torch version, threads, teacher shape, inputs), so a second search on the
same machine and teacher times nothing. Latency does not depend on the vocabulary (a row gather).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from transformers import PreTrainedModel

from ..evaluation.measure import latency_ms
from ..families import intermediate_size, layer_list
from .config import FLOAT_WEIGHTS
from .space import os_cpu_name, skeleton


@dataclass
class LatencyTable:
    """Milliseconds per forward pass of `batch_size` × `seq_len` tokens with `threads` threads on this machine.

    Attributes:
        base: {weight bits: ms of everything but the layers (embeddings, head)}.
        per_layer: {weight bits: ms of one layer's fixed part (attention, LayerNorms)}.
        per_neuron: {weight bits: ms per FFN neuron of one layer}.
        teacher_ms: the teacher (fp32), timed in the same run.
        fit_error: the largest relative difference between a timed shape and the fitted table.
        from_cache: read from this machine's cache rather than timed now.
    """

    base: dict[int, float]
    per_layer: dict[int, float]
    per_neuron: dict[int, float]
    teacher_ms: float
    fit_error: float
    batch_size: int
    seq_len: int
    threads: int
    from_cache: bool = field(default=False, compare=False)

    def predict(self, depth: int, width: int, weight_bits: int) -> float:
        """Predicted ms of a student of `depth` layers, FFN `width` and `weight_bits`."""
        b = weight_bits
        return self.base[b] + depth * (self.per_layer[b] + self.per_neuron[b] * width)

    @classmethod
    def from_json(cls, data: dict) -> LatencyTable:
        data = dict(data)
        for name in ("base", "per_layer", "per_neuron"):
            data[name] = {int(k): v for k, v in data[name].items()}
        data["from_cache"] = True
        return cls(**data)


def cache_path(teacher: PreTrainedModel, widths, bits, batch_size, seq_len, threads, repeats) -> str:
    """The JSON file of this machine's table for this teacher shape and these inputs."""
    config = teacher.config
    key = {
        "cpu": os_cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "model_type": config.model_type,
        "shape": [config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.vocab_size],
        "widths": sorted(widths),
        "bits": sorted(bits),
        "inputs": [batch_size, seq_len, threads, repeats],
        "model": 4,  # the fitted form of LatencyTable: one interleaved group, quantized widths share int8's line
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    root = os.path.expanduser(os.environ.get("HF_COMPRESS_CACHE", os.path.join("~", ".cache", "hf_compress")))
    return os.path.join(root, "search", f"latency-{digest}.json")


def measure_latency_table(
    teacher: PreTrainedModel,
    tokenizer,
    widths: list[int],
    bits: list[int],
    batch_size: int,
    seq_len: int,
    threads: int,
    repeats: int,
    use_cache: bool = True,
) -> LatencyTable:
    """Time skeletons of every (weight bits, FFN width) at depth 1 and D beside the teacher, fit the table (see the
    module); read from and written to the cache when `use_cache`."""
    widths = sorted(set(widths))
    if len(widths) > 3:  # the fit is linear in width: the extremes and a middle one pin it, at half the timing cost
        widths = [widths[0], widths[len(widths) // 2], widths[-1]]
    path = cache_path(teacher, widths, bits, batch_size, seq_len, threads, repeats)
    if use_cache and os.path.exists(path):
        with open(path) as f:
            return LatencyTable.from_json(json.load(f))
    depth = len(layer_list(teacher))
    deep = min(3, depth)
    # One interleaved round over every skeleton and the teacher: the teacher is the costliest model to time, and
    # timing it once per round rather than once per width of weights takes about a third of the table's time away.
    # The price is memory: every skeleton (each with its own embeddings) is held at once.
    quantized = [b for b in bits if b != FLOAT_WEIGHTS]
    timed = ([FLOAT_WEIGHTS] if FLOAT_WEIGHTS in bits else []) + ([max(quantized)] if quantized else [])
    models = {"teacher": teacher}
    for b in timed:
        for w in widths:
            for d in sorted({1, deep}):
                models[f"{b}/{w}/{d}"] = skeleton(teacher, list(range(d)), w, b)[0]
    times = latency_ms(models, tokenizer, batch_size, seq_len, repeats, num_threads=threads)
    del models
    teacher_ms = times["teacher"]
    base, per_layer, per_neuron, errors = {}, {}, {}, []
    for b in timed:
        shapes = [(d, w, times[f"{b}/{w}/{d}"]) for w in widths for d in sorted({1, deep})]
        if b == FLOAT_WEIGHTS:
            shapes.append((depth, intermediate_size(teacher.config), teacher_ms))
        design = np.array([[1.0, d, d * w] for d, w, _ in shapes])
        observed = np.array([t for _, _, t in shapes])
        (base[b], per_layer[b], per_neuron[b]), *_ = np.linalg.lstsq(design, observed, rcond=None)
        errors.extend(np.abs(design @ [base[b], per_layer[b], per_neuron[b]] / observed - 1))
    for b in quantized:  # the int8 kernel computes every quantized width
        base[b], per_layer[b], per_neuron[b] = base[timed[-1]], per_layer[timed[-1]], per_neuron[timed[-1]]
    table = LatencyTable(
        base={b: float(v) for b, v in base.items()},
        per_layer={b: float(v) for b, v in per_layer.items()},
        per_neuron={b: float(v) for b, v in per_neuron.items()},
        teacher_ms=teacher_ms,
        fit_error=float(max(errors)),
        batch_size=batch_size,
        seq_len=seq_len,
        threads=threads,
    )
    if use_cache:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(asdict(table), f, indent=1)
        os.replace(tmp, path)
    return table


def time_beside_teacher(
    teacher, student, tokenizer, student_tokenizer, arguments, teacher_ms: float | None = None
) -> dict[str, float]:
    """{"teacher": ms, "student": ms}: the two timed interleaved at the budget's inputs and threads (`arguments`: a
    SearchArguments); the student reads its own tokenizer (a cut vocabulary).

    `teacher_ms`: the teacher's time from a table timed moments ago in the same search (not read from the cache): the
    student alone is timed then. The teacher is the costliest model to time (10-20x a small student), and a table
    timed in this search saw the same machine state; a cached one may not have, so then the teacher is timed again.
    """
    models = {"student": student} if teacher_ms is not None else {"teacher": teacher, "student": student}
    times = latency_ms(
        models,
        tokenizer,
        arguments.budget_batch_size,
        arguments.budget_seq_len,
        arguments.search_latency_repeats,
        tokenizers={"student": student_tokenizer},
        num_threads=arguments.search_threads,
    )
    return {"teacher": teacher_ms, **times} if teacher_ms is not None else times
