"""The comparison table: one row per model (size, sparsity, task metric, agreement, latency), Markdown/JSON, a plot."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field

from torch import nn
from tqdm.auto import tqdm

from .measure import TIMING_TOKENS, float_modules, latency_ms, linear_sparsity, saved_bytes, timing_length

# Below this many evaluation examples a score is flagged, with its standard error, and never shown as a result: one
# test example of a 5-row CSV gives "accuracy 1.0000". 30 is the usual floor for a normal approximation.
MIN_EXAMPLES = 30


def score_stderr(score: float, n: int) -> float | None:
    """Standard error of a proportion-like score (accuracy, F1) over n examples, Agresti–Coull adjusted (p̃ from
    x + 2 of n + 4), so 1.0 on one example is not a standard error of 0; None outside [0, 1] or without examples."""
    if not n or not 0 <= score <= 1:
        return None
    p = (score * n + 2) / (n + 4)
    return math.sqrt(p * (1 - p) / (n + 4))


def flagged_score(row: ReportRow) -> str:
    """A score from too few examples, as a flag rather than a result."""
    error = "" if row.score_stderr is None else f" ± {row.score_stderr:.2f}"
    return f"too few examples (n={row.examples}, below {MIN_EXAMPLES}): {row.score:.4f}{error}, not a result"


@dataclass
class ReportRow:
    """One model's line in the comparison table.

    `metrics` holds every task metric (text: accuracy, macro_f1; tokens: entity precision/recall/F1; QA: exact match,
    F1); `score` is the task's primary one (accuracy, entity F1, SQuAD F1) and `score_vs_reference` its ratio to the
    first row's. `accuracy` / `accuracy_vs_reference` repeat them for text classification.
    """

    name: str
    parameters: int
    bytes_on_disk: int
    accuracy: float | None = None
    accuracy_vs_reference: float | None = None
    agreement_with_reference: float | None = None
    sparsity: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    speedup: dict[str, float] = field(default_factory=dict)
    metric: str | None = None
    score: float | None = None
    score_vs_reference: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    float_modules: list[str] | None = None  # Linear / Embedding modules a quantized model keeps in float
    examples: int | None = None  # evaluation examples behind the scores
    score_stderr: float | None = None
    too_few_examples: bool = False  # fewer than MIN_EXAMPLES: the scores are flagged, never shown as results
    latency_tokens: int | None = None  # tokens per timing input (capped at the models' position limit)


def build_report(
    models: dict[str, tuple[nn.Module, str | None]],
    tokenizer,
    dataset=None,
    batch_sizes: tuple[int, ...] = (1, 32),
    repeats: int = 10,
    own_inputs: dict[str, tuple] | None = None,
    task=None,
    num_threads: int | None = None,
) -> list[ReportRow]:
    """Compare models (name → (model, saved dir)); the first one is the reference for ratios.

    `dataset` is the evaluation data as `task.prepare` returns it (default task: text classification, a tokenised
    split with `label`). `own_inputs` maps a model name to (its tokenizer, the same examples prepared with it), for a
    model whose vocabulary differs from `tokenizer`'s (prune_vocabulary_); the examples must be in the same order.
    Latency is the median forward time, measured interleaved over all models on `num_threads` CPU threads (None:
    torch's current setting; see `latency_ms`).
    """
    from ..tasks import get_task

    task = task or get_task("text-classification")
    own_inputs = own_inputs or {}
    names = list(models)
    predictions = {}
    rows = []
    for name, (model, model_dir) in tqdm(models.items(), desc="Evaluating", disable=dataset is None):
        row = ReportRow(
            name=name,
            parameters=model.num_parameters(),
            bytes_on_disk=saved_bytes(model, model_dir),
            sparsity=linear_sparsity(model),
            float_modules=float_modules(model),
        )
        if dataset is not None:
            tok, data = own_inputs.get(name, (tokenizer, dataset))
            if task.num_examples(data) != task.num_examples(dataset):
                raise ValueError(
                    f"own_inputs[{name!r}] has {task.num_examples(data)} examples; the dataset has "
                    f"{task.num_examples(dataset)}"
                )
            predictions[name] = task.predict(model, data, tok)
            row.metrics = task.score(predictions[name], data)
            row.metric, row.score = task.primary_metric, row.metrics[task.primary_metric]
            row.accuracy = row.score if task.primary_metric == "accuracy" else None
            row.examples = task.num_examples(dataset)
            row.score_stderr = score_stderr(row.score, row.examples)
            row.too_few_examples = row.examples < MIN_EXAMPLES
        rows.append(row)
    tokenizers = {name: tok for name, (tok, _) in own_inputs.items()}
    tokens = timing_length({n: m for n, (m, _) in models.items()}, TIMING_TOKENS)
    for row in rows:
        row.latency_tokens = tokens if batch_sizes else None
    for batch_size in tqdm(batch_sizes, desc="Timing (batch sizes)"):
        medians = latency_ms(
            {n: m for n, (m, _) in models.items()},
            tokenizer,
            batch_size,
            repeats=repeats,
            tokenizers=tokenizers,
            num_threads=num_threads,
        )
        for row in rows:
            row.latency_ms[f"batch_{batch_size}"] = medians[row.name]
            row.speedup[f"batch_{batch_size}"] = medians[names[0]] / medians[row.name]
    reference = rows[0]
    for row in rows:
        if row.score is not None and reference.score and not row.too_few_examples:
            row.score_vs_reference = row.score / reference.score
            if row.accuracy is not None:
                row.accuracy_vs_reference = row.score_vs_reference
            row.agreement_with_reference = task.agreement(predictions[row.name], predictions[reference.name])
            if hasattr(task, "agreement_metrics"):  # sentence embeddings: mean cosine, top-10 neighbour overlap
                row.metrics.update(task.agreement_metrics(predictions[row.name], predictions[reference.name]))
    return rows


def markdown_table(rows: list[ReportRow]) -> str:
    """The report as a Markdown table; ratios are relative to the first row."""
    batch_keys = list(rows[0].latency_ms) if rows else []
    metric = next((r.metric for r in rows if r.metric), "accuracy")
    # The task's other scores (macro-F1; entity precision/recall; exact match) follow its primary one.
    others = [k for k in next((r.metrics for r in rows if r.metrics), {}) if k != metric]
    header = ["model", metric, "vs ref", *others, "params", "MB on disk", "size ratio", "sparsity"]
    header += [f"speed-up {k.replace('_', ' ')}" for k in batch_keys]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        flagged = row.too_few_examples and row.score is not None
        cells = [
            row.name,
            "—" if row.score is None else flagged_score(row) if flagged else f"{row.score:.4f}",
            "—" if row.score_vs_reference is None else f"{row.score_vs_reference:.1%}",
            *("—" if row.metrics.get(k) is None or flagged else f"{row.metrics[k]:.4f}" for k in others),
            f"{row.parameters / 1e6:.2f}M",
            f"{row.bytes_on_disk / 1e6:.1f}",
            f"{rows[0].bytes_on_disk / max(row.bytes_on_disk, 1):.2f}×",
            f"{row.sparsity:.0%}",
        ]
        cells += [f"{row.speedup[k]:.2f}×" for k in batch_keys]
        lines.append("| " + " | ".join(cells) + " |")
    capped = next((r.latency_tokens for r in rows if r.latency_tokens and r.latency_tokens < TIMING_TOKENS), None)
    notes = [f"Latency inputs: {capped} tokens (the models' position limit; {TIMING_TOKENS} otherwise)."]
    notes = notes if capped else []
    notes += [f"{row.name}: kept in float: {kept_in_float(row.float_modules)}" for row in rows if row.float_modules]
    return "\n".join(lines + ([""] + notes if notes else []))


def kept_in_float(names: list[str]) -> str:
    """The float modules of a quantized model in one line, the repeated per-layer ones collapsed (`layer.*`)."""
    collapsed = list(dict.fromkeys(re.sub(r"\.\d+\.", ".*.", n) for n in names))
    return ", ".join(f"`{n}`" for n in collapsed)


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
    """Save the Pareto view as a PNG: the task metric vs MB on disk and vs CPU latency, frontier joined."""
    try:
        from matplotlib.figure import Figure  # a bare Figure renders with Agg, leaving pyplot's global state alone
    except ImportError as err:
        raise ValueError("plotting needs matplotlib; install it with: pip install matplotlib") from err
    if any(row.score is None for row in rows):
        raise ValueError("plotting needs the task metric of every model; give an evaluation dataset")
    metric = rows[0].metric or "accuracy"
    latency_key = latency_key or next(iter(rows[0].latency_ms), None)
    panels = [("weights on disk (MB)", [row.bytes_on_disk / 1e6 for row in rows])]
    if latency_key is not None:
        label = f"CPU latency, {latency_key.replace('_', ' ')} (ms)"
        panels.append((label, [row.latency_ms[latency_key] for row in rows]))
    figure = Figure(figsize=(5 * len(panels), 4), layout="constrained")
    for k, (xlabel, xs) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), k + 1)
        ys = [row.score for row in rows]
        front = pareto_front(list(zip(xs, ys)))
        ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", color="tab:gray", zorder=1)
        ax.scatter(xs, ys, color=["tab:red" if i in front else "tab:blue" for i in range(len(rows))], zorder=2)
        for row, x, y in zip(rows, xs, ys):
            ax.annotate(row.name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.margins(0.2)  # room for the names
    figure.suptitle(f"{metric} against size and latency (red: Pareto front)")
    figure.savefig(path, dpi=120)
    return path
