"""A latency model measured on this machine: per weight width, a fixed cost plus a cost per layer of each FFN width.

For every weight width and FFN width of the search space, skeleton students of depth 1 and of depth D (the
teacher's, at most 3) are timed with `evaluation.measure.latency_ms` — interleaved with the teacher, so all see the
same machine state — and a line is fitted through the two: ms(depth) = base + depth · per_layer. The table is cached
as JSON under $HF_COMPRESS_CACHE/search (key: CPU, torch version, threads, teacher shape, inputs), so a second search
on the same machine and teacher times nothing. Latency does not depend on the vocabulary (a row gather).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass

import torch
from transformers import PreTrainedModel

from ..evaluation.measure import latency_ms
from ..families import layer_list
from .space import os_cpu_name, skeleton


@dataclass
class LatencyTable:
    """Milliseconds per forward pass of `batch_size` × `seq_len` tokens with `threads` threads on this machine.

    Attributes:
        base: {weight bits: ms of everything but the layers (embeddings, head)}.
        per_layer: {weight bits: {FFN width: ms of one layer}}.
        teacher_ms: the teacher (fp32), timed in the same run.
    """

    base: dict[int, float]
    per_layer: dict[int, dict[int, float]]
    teacher_ms: float
    batch_size: int
    seq_len: int
    threads: int

    def predict(self, depth: int, width: int, weight_bits: int) -> float:
        """Predicted ms of a student of `depth` layers, FFN `width` and `weight_bits`."""
        return self.base[weight_bits] + depth * self.per_layer[weight_bits][width]

    @classmethod
    def from_json(cls, data: dict) -> LatencyTable:
        data = dict(data)
        data["base"] = {int(k): v for k, v in data["base"].items()}
        data["per_layer"] = {int(b): {int(w): v for w, v in d.items()} for b, d in data["per_layer"].items()}
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
    """Time skeletons of every (weight bits, FFN width) at depth 1 and D beside the teacher; cached (see module)."""
    path = cache_path(teacher, widths, bits, batch_size, seq_len, threads, repeats)
    if use_cache and os.path.exists(path):
        with open(path) as f:
            return LatencyTable.from_json(json.load(f))
    deep = min(3, len(layer_list(teacher)))
    base, per_layer, teacher_ms = {}, {}, []
    for b in bits:  # one group per width of weights: fewer models in memory at once, each group with the teacher
        models = {"teacher": teacher}
        for w in widths:
            for depth in sorted({1, deep}):
                models[f"{w}/{depth}"] = skeleton(teacher, list(range(depth)), w, b)[0]
        times = latency_ms(models, tokenizer, batch_size, seq_len, repeats, num_threads=threads)
        teacher_ms.append(times["teacher"])
        per_layer[b] = {}
        for w in widths:
            one, many = times[f"{w}/1"], times[f"{w}/{deep}"]
            layer = (many - one) / (deep - 1) if deep > 1 else one / 2
            per_layer[b][w] = max(layer, 0.0)
            base[b] = base.get(b, []) + [one - per_layer[b][w]]
        base[b] = sorted(base[b])[len(base[b]) // 2]  # median over widths: the same embeddings and head in each
        del models
    table = LatencyTable(
        base=base,
        per_layer=per_layer,
        teacher_ms=sorted(teacher_ms)[len(teacher_ms) // 2],
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
