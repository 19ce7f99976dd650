"""The compression report: parameters, bytes on disk, sparsity, latency and accuracy, side by side."""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from transformers import DataCollatorWithPadding

WEIGHT_SUFFIXES = (".safetensors",)


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameters; shared modules count once, as `parameters()` yields them once."""
    return sum(p.numel() for p in model.parameters())


def bytes_on_disk(model_dir: str) -> int:
    """Bytes of the weight files in a saved model directory (config and tokenizer excluded)."""
    return sum(
        os.path.getsize(os.path.join(model_dir, f)) for f in os.listdir(model_dir) if f.endswith(WEIGHT_SUFFIXES)
    )


def saved_bytes(model: nn.Module, model_dir: str | None) -> int:
    """Bytes on disk of a saved model; a model with no local directory is saved to a temporary one to measure."""
    if model_dir is not None and os.path.isdir(model_dir):
        return bytes_on_disk(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        return bytes_on_disk(tmp)


def linear_sparsity(model: nn.Module, prefix: str = "") -> float:
    """Fraction of exactly-zero weights over the Linear layers whose name contains `prefix`."""
    zeros = total = 0
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, nn.Linear) and prefix in name and isinstance(weight, torch.Tensor):
            zeros += int((weight == 0).sum())
            total += weight.numel()
    return zeros / total if total else 0.0


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
    seq_len: int = 48,
    repeats: int = 10,
    tokenizers: dict | None = None,
) -> dict[str, float]:
    """Median forward latency per model, measured interleaved so every model sees the same machine state.

    `tokenizers` maps a model name to its own tokenizer (e.g. after prune_vocabulary_); the others use `tokenizer`.
    """
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


@dataclass
class ReportRow:
    """One model's line in the comparison table."""

    name: str
    parameters: int
    bytes_on_disk: int
    accuracy: float | None = None
    accuracy_vs_reference: float | None = None
    agreement_with_reference: float | None = None
    sparsity: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    speedup: dict[str, float] = field(default_factory=dict)


def build_report(
    models: dict[str, tuple[nn.Module, str | None]],
    tokenizer,
    dataset=None,
    batch_sizes: tuple[int, ...] = (1, 32),
    repeats: int = 10,
    own_inputs: dict[str, tuple] | None = None,
) -> list[ReportRow]:
    """Compare models (name → (model, saved dir)); the first one is the reference for ratios.

    `own_inputs` maps a model name to (its tokenizer, the same examples tokenised by it), for a model whose
    vocabulary differs from `tokenizer`'s (prune_vocabulary_); the examples must be in the same order.
    """
    own_inputs = own_inputs or {}
    names = list(models)
    predictions = {}
    rows = []
    for name, (model, model_dir) in models.items():
        row = ReportRow(
            name=name,
            parameters=count_parameters(model),
            bytes_on_disk=saved_bytes(model, model_dir),
            sparsity=linear_sparsity(model, "encoder"),
        )
        if dataset is not None:
            tok, data = own_inputs.get(name, (tokenizer, dataset))
            if len(data) != len(dataset):
                raise ValueError(f"own_inputs[{name!r}] has {len(data)} examples; the dataset has {len(dataset)}")
            predictions[name] = predict(model, data, tok).argmax(-1)
            row.accuracy = float((predictions[name] == np.asarray(dataset["label"])).mean())
        rows.append(row)
    tokenizers = {name: tok for name, (tok, _) in own_inputs.items()}
    for batch_size in batch_sizes:
        medians = latency_ms(
            {n: m for n, (m, _) in models.items()}, tokenizer, batch_size, repeats=repeats, tokenizers=tokenizers
        )
        for row in rows:
            row.latency_ms[f"batch_{batch_size}"] = medians[row.name]
            row.speedup[f"batch_{batch_size}"] = medians[names[0]] / medians[row.name]
    reference = rows[0]
    for row in rows:
        if row.accuracy is not None and reference.accuracy:
            row.accuracy_vs_reference = row.accuracy / reference.accuracy
            row.agreement_with_reference = float((predictions[row.name] == predictions[reference.name]).mean())
    return rows


def markdown_table(rows: list[ReportRow]) -> str:
    """The report as a Markdown table; ratios are relative to the first row."""
    batch_keys = list(rows[0].latency_ms) if rows else []
    header = ["model", "accuracy", "vs ref", "params", "MB on disk", "size ratio", "sparsity"]
    header += [f"speed-up {k.replace('_', ' ')}" for k in batch_keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [
            row.name,
            "—" if row.accuracy is None else f"{row.accuracy:.4f}",
            "—" if row.accuracy_vs_reference is None else f"{row.accuracy_vs_reference:.1%}",
            f"{row.parameters / 1e6:.2f}M",
            f"{row.bytes_on_disk / 1e6:.1f}",
            f"{rows[0].bytes_on_disk / max(row.bytes_on_disk, 1):.2f}×",
            f"{row.sparsity:.0%}",
        ]
        cells += [f"{row.speedup[k]:.2f}×" for k in batch_keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(rows: list[ReportRow], output_dir: str, stem: str = "compression_report") -> str:
    """Write the report as JSON and Markdown into `output_dir` and return the Markdown."""
    os.makedirs(output_dir, exist_ok=True)
    table = markdown_table(rows)
    with open(os.path.join(output_dir, f"{stem}.json"), "w") as f:
        json.dump([asdict(r) for r in rows], f, indent=2)
    with open(os.path.join(output_dir, f"{stem}.md"), "w") as f:
        f.write(table + "\n")
    return table


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (smaller or equal x with higher y), ordered by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_report(rows: list[ReportRow], path: str, latency_key: str | None = None) -> str:
    """Save the Pareto view as a PNG: accuracy vs MB on disk and accuracy vs CPU latency, frontier joined."""
    try:
        from matplotlib.figure import Figure  # a bare Figure renders with Agg, leaving pyplot's global state alone
    except ImportError as err:
        raise ValueError("plotting needs matplotlib; install it with: pip install matplotlib") from err
    if any(row.accuracy is None for row in rows):
        raise ValueError("plotting needs the accuracy of every model; give an evaluation dataset")
    latency_key = latency_key or next(iter(rows[0].latency_ms), None)
    panels = [("weights on disk (MB)", [row.bytes_on_disk / 1e6 for row in rows])]
    if latency_key is not None:
        label = f"CPU latency, {latency_key.replace('_', ' ')} (ms)"
        panels.append((label, [row.latency_ms[latency_key] for row in rows]))
    figure = Figure(figsize=(5 * len(panels), 4), layout="constrained")
    for k, (xlabel, xs) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), k + 1)
        ys = [row.accuracy for row in rows]
        front = pareto_front(list(zip(xs, ys)))
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", color="tab:gray", zorder=1)
        ax.scatter(xs, ys, color=["tab:red" if i in front else "tab:blue" for i in range(len(rows))], zorder=2)
        for row, x, y in zip(rows, xs, ys):
            ax.annotate(row.name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.margins(0.2)  # room for the names
    figure.suptitle("Accuracy against size and latency (red: Pareto front)")
    figure.savefig(path, dpi=120)
    return path
