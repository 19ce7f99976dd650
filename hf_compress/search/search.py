"""`search_student`: one budget in, the student shape (a compress recipe's fields) that should lose least, out.

The method follows GradNAS (Cai et al., score units by squared mask gradients over a few batches, then meet a
parameter or FLOPs limit) with the loss model of HAWQ for weight widths and Minitron's enumerate-then-pick over a
small grid: every candidate of the space (depth × FFN width × weight bits × word-embedding bits × vocabulary) is
scored by its estimated loss increase, ½·(Σ importance of the layers and FFN neurons it drops + Σ HAWQ Ω of its
weights at their bits), and the lowest-scoring one within the budget wins. Which layers: the most important ones for
that depth; which neurons: left to the compress run's FFN pruner, which scores them again while the student trains.

Costs are measured, not modelled from FLOPs: size and parameters on skeletons saved with `save_pretrained` (exact
for the chosen student, which is built whole), latency from a table timed on this machine (`latency.py`).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader
from transformers import PreTrainedModel

from ..checks import invalid, require
from ..families import layer_list
from .config import FLOAT_WEIGHTS, SearchArguments
from .importance import Importance, importance_scores
from .latency import LatencyTable, measure_latency_table, time_beside_teacher
from .space import Candidate, ffn_width, parameter_count, saved_size, skeleton

MAX_CHECKED = 8  # shapes built and checked that missed the budget before it is declared missed
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "label", "labels", "start_positions", "end_positions")


@dataclass
class SearchResult:
    """The chosen student and what the search predicted for it.

    Attributes:
        candidate: the chosen shape (`candidate.recipe_fields()` are its recipe fields).
        loss_increase: its estimated loss increase over the teacher (nats, second-order; for ranking, not a promise).
        size_bytes: bytes of its weight files, exact (its skeleton was built and saved).
        parameters: its parameters, exact.
        latency_ms: predicted ms per forward pass at the budget's batch size and length (the latency table).
        teacher_ms: the teacher's measured ms in the same table.
        budget: (field, value) of the budget met.
        candidates: how many shapes were scored; feasible: how many met the budget.
        seconds: wall time of the search.
        latency_table_seconds: of which timing the latency table (about 0 when it was read from the cache).
        fit_error: the latency table's largest relative difference from a shape it timed.
        checked_latency_ms, checked_teacher_ms: the chosen student's skeleton and the teacher timed side by side at
            the end of the search (what a latency or speed-up budget was checked against); when the table was timed
            in this search, the teacher's time is the table's (see `time_beside_teacher`).
    """

    candidate: Candidate
    loss_increase: float
    size_bytes: int
    parameters: int
    latency_ms: float
    teacher_ms: float
    budget: tuple[str, float]
    candidates: int
    feasible: int
    seconds: float
    latency_table_seconds: float
    fit_error: float
    checked_latency_ms: float
    checked_teacher_ms: float
    importance: Importance = field(repr=False)

    def recipe_fields(self) -> dict:
        return self.candidate.recipe_fields()

    def summary(self) -> list[str]:
        """Lines for the written recipe's header and the console."""
        c = self.candidate
        bits = ("float" if c.weight_bits == FLOAT_WEIGHTS else f"{c.weight_bits}-bit") + " weights"
        if c.word_embedding_bits != c.weight_bits:
            bits += f", {c.word_embedding_bits}-bit word embeddings"
        lines = [
            f"budget: {self.budget[0]}={self.budget[1]}",
            f"student: layers {list(c.layers)}, FFN width {c.width} (ffn_sparsity {c.ffn_sparsity}), {bits}, "
            f"vocabulary {'cut to the train split' if c.prune_vocabulary else 'kept'}",
            f"predicted size: {self.size_bytes / 1e6:.3f} MB ({self.size_bytes} bytes, exact), "
            f"{self.parameters} parameters",
        ]
        lines.append(
            f"predicted latency: {self.latency_ms:.2f} ms (teacher {self.teacher_ms:.2f} ms, "
            f"{self.teacher_ms / self.latency_ms:.2f}x; the table fits its timings within {self.fit_error:.1%})"
        )
        # time_beside_teacher: a table timed in this search lends the check its teacher time
        how = "the teacher from the table timed in this search" if self.latency_table_seconds else "side by side"
        lines.append(
            f"checked latency: {self.checked_latency_ms:.2f} ms against the teacher's {self.checked_teacher_ms:.2f} "
            f"ms ({self.checked_teacher_ms / self.checked_latency_ms:.2f}x; {how}), the student's skeleton timed at "
            "the end of the search"
        )
        seconds = self.latency_table_seconds
        table = f"{seconds:.0f} s timing it" if seconds else "read from the cache"
        lines.append(
            f"estimated loss increase: {self.loss_increase:.4g}; {self.feasible} of {self.candidates} shapes within "
            f"the budget; search took {self.seconds:.0f} s (latency table: {table})"
        )
        return lines


def calibration_batches(train_dataset, data_collator, batch_size: int, num_batches: int, seed: int) -> list[dict]:
    """The first `num_batches` batches of a seeded shuffle of the train split (with labels)."""
    columns = [c for c in train_dataset.column_names if c in MODEL_INPUTS]
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        train_dataset.select_columns(columns),
        batch_size=batch_size,
        shuffle=True,
        generator=generator,
        collate_fn=data_collator,
    )
    return list(itertools.islice(loader, num_batches))


def _quantizable_weights(teacher, bits: list[int]) -> dict:
    """The modules whose weights a quantized candidate rounds (every Linear and the word embeddings), or none when
    every width of the space is float."""
    from ..methods.low_bit.fake_quant import select_low_bit_modules

    return select_low_bit_modules(teacher, "all") if any(b != FLOAT_WEIGHTS for b in bits) else {}


def _owner_layer(name: str, layer_prefix: str) -> int | None:
    if not name.startswith(layer_prefix):
        return None
    return int(name[len(layer_prefix) :].split(".", 1)[0])


def _embedding_widths(bits: list[int], narrower: list[int]) -> dict[int, list[int]]:
    """{Linears' width: the word embeddings' widths with it}: the same, or a narrower one of `narrower` (quantized
    students only: a float student's embeddings stay float, as the compress recipe's embedding_weight_bits needs)."""
    options = sorted(set(narrower), reverse=True)
    return {b: [b] + ([e for e in options if e < b] if b != FLOAT_WEIGHTS else []) for b in bits}


def _loss_increase(
    c: Candidate, scores: Importance, omega, layer_prefix: str, ffn_names: set[str], embedding_names: set[str]
) -> float:
    kept = set(c.layers)
    removed_layers = sum(float(scores.layers[i]) for i in range(len(scores.layers)) if i not in kept)
    removed = scores.neurons.shape[1] - c.width
    neurons = sum(float(scores.neurons[i].sort().values[:removed].sum()) for i in kept) if removed else 0.0
    weights = 0.0
    if c.weight_bits != FLOAT_WEIGHTS:
        for name, by_bits in omega.items():
            layer = _owner_layer(name, layer_prefix)
            if layer is not None and layer not in kept:
                continue
            share = c.width / scores.neurons.shape[1] if name in ffn_names else 1.0
            weights += by_bits[c.word_embedding_bits if name in embedding_names else c.weight_bits] * share
    return 0.5 * (removed_layers + neurons + weights)


def _additive_costs(
    measure, widths: list[int], embedding_widths: dict[int, list[int]], vocabularies: list[bool], depth: int, token_ids
):
    """{(width, bits, embedding bits, vocabulary): (cost at depth 1, cost per further layer)} of an additive measure
    (bytes saved, parameters) from few skeletons: per width of weights, depth 1 at every FFN width, depth 2, a cut
    vocabulary and each narrower embedding width at the smallest FFN width. `embedding_widths`: {bits of the Linears:
    the word embeddings' widths with them, that width first}.

    Additive because each layer's tensors and the word embeddings are tensors of their own: a student of depth d is
    the depth-1 one plus d − 1 layers of its width, and cutting the vocabulary or narrowing the embeddings changes the
    embedding alone. (Saved bytes can differ by the few bytes of digits in the safetensors header: the chosen shape is
    built whole and its exact size checked.) The smallest student is built as it is, so the smallest reachable value a
    refused budget names is exact. `measure(layers, width, bits, token_ids_or_None, embedding_bits)` builds and
    measures one skeleton.
    """
    costs = {}
    smallest = widths[0]
    for b, options in embedding_widths.items():
        first = {w: measure([0], w, b, None, b) for w in widths}
        base = 2 * first[smallest] - measure([0, 1], smallest, b, None, b) if depth > 1 else first[smallest]
        cut = measure([0], smallest, b, token_ids, b) - first[smallest] if True in vocabularies else 0
        for e, v in itertools.product(options, vocabularies):
            ids = token_ids if v else None
            narrow = measure([0], smallest, b, ids, e) - first[smallest] - (cut if v else 0) if e != b else 0
            for w in widths:
                costs[w, b, e, v] = (first[w] + (cut if v else 0) + narrow, first[w] - base)
    return costs


def search_student(
    teacher: PreTrainedModel,
    arguments: SearchArguments,
    train_dataset,
    tokenizer,
    data_collator,
    batch_size: int = 32,
    seed: int = 42,
    use_cache: bool = True,
) -> SearchResult:
    """The student shape within `arguments`' budget with the lowest estimated loss increase (see the module).

    Args:
        teacher: a fine-tuned float task model (BERT-style family, not ALBERT), in eval mode.
        arguments: the budget (exactly one of params, MB, latency ms, speed-up) and the search space.
        train_dataset: the tokenised train split with labels (a `datasets.Dataset`): importance batches, and the
            tokens a cut vocabulary keeps.
        tokenizer: the teacher's fast tokenizer (vocabulary pruning and latency inputs).
        data_collator: pads a list of examples into a batch (the task's collator).
        batch_size, seed: of the importance batches (the same seed gives the same recipe).
        use_cache: read and write the latency table under $HF_COMPRESS_CACHE/search.

    Returns:
        SearchResult; its `recipe_fields()` go into a compress recipe.

    Raises:
        ValueError: a quantized or ALBERT teacher, depths beyond the teacher's, a train split without input_ids, or
            a budget no student of the space meets (naming the smallest reachable value) — each before importance
            scoring (and, for size and parameter budgets, before any timing).
    """
    start = time.perf_counter()
    from ..methods.int8.transform import check_not_quantized

    check_not_quantized(teacher)
    teacher.eval()
    depth = len(layer_list(teacher))
    depths = sorted(set(arguments.search_layers or range(1, depth + 1)))
    require(depths[-1] <= depth, "search_layers", arguments.search_layers, f"depths in [1, {depth}] (the teacher's)")
    widths = {ffn_width(teacher, s): s for s in sorted(arguments.search_ffn_sparsities, reverse=True)}
    bits = sorted(set(arguments.search_weight_bits), reverse=True)
    # Narrower embeddings only change bytes (not parameters, nor latency: a lookup of rows), so only a size budget
    # can prefer them; under the other budgets they would only add equal-cost, higher-loss candidates.
    narrower = arguments.search_embedding_weight_bits if arguments.budget[0] == "budget_mb" else []
    embedding_widths = _embedding_widths(bits, narrower)
    require("input_ids" in train_dataset.column_names, "train_dataset", "without input_ids", "a tokenised split")
    token_ids = train_dataset["input_ids"]
    vocabularies = [False, True] if arguments.search_vocabulary else [False]
    budget_name, budget = arguments.budget

    table_seconds = 0.0

    def latency_table() -> LatencyTable:
        nonlocal table_seconds
        started = time.perf_counter()
        table = measure_latency_table(
            teacher,
            tokenizer,
            sorted(widths),
            bits,
            arguments.budget_batch_size,
            arguments.budget_seq_len,
            arguments.search_threads,
            arguments.search_latency_repeats,
            use_cache,
        )
        table_seconds = 0.0 if table.from_cache else time.perf_counter() - started
        return table

    # Costs first: a budget nothing meets is refused before any gradient is computed.
    table: LatencyTable | None = None
    sizes: dict[tuple, tuple[int, int]] = {}  # (width, bits, embedding bits, vocabulary) -> (at depth 1, per layer)
    params: dict[tuple, tuple[int, int]] = {}  # (width, 32, 32, vocabulary) -> (parameters at depth 1, per layer)
    if budget_name in ("budget_latency_ms", "budget_speedup"):
        table = latency_table()

    def size_of(layers, w, b, ids, e) -> int:
        return saved_size(skeleton(teacher, layers, w, b, tokenizer, ids, e)[0])

    def parameters_of(layers, w, b, ids, e) -> int:
        return parameter_count(skeleton(teacher, layers, w, b, tokenizer, ids, e)[0])

    if budget_name == "budget_mb":
        sizes = _additive_costs(size_of, sorted(widths), embedding_widths, vocabularies, depth, token_ids)
    if budget_name == "budget_params":
        float_only = {FLOAT_WEIGHTS: [FLOAT_WEIGHTS]}
        params = _additive_costs(parameters_of, sorted(widths), float_only, vocabularies, depth, token_ids)

    def cost(d: int, w: int, b: int, e: int, v: bool) -> float:
        if budget_name == "budget_mb":
            first, per = sizes[w, b, e, v]
            return (first + (d - 1) * per) / 1e6
        if budget_name == "budget_params":
            first, per = params[w, FLOAT_WEIGHTS, FLOAT_WEIGHTS, v]
            return first + (d - 1) * per
        ms = table.predict(d, w, b)
        return ms if budget_name == "budget_latency_ms" else table.teacher_ms / ms

    shapes = [
        (d, w, b, e, v)
        for d, w, b in itertools.product(depths, sorted(widths), bits)
        for e in embedding_widths[b]
        for v in vocabularies
    ]
    costs = {s: cost(*s) for s in shapes}
    meets = (lambda x: x >= budget) if budget_name == "budget_speedup" else (lambda x: x <= budget)
    feasible = [s for s in shapes if meets(costs[s])]
    if not feasible:
        best = max(costs.values()) if budget_name == "budget_speedup" else min(costs.values())
        reach = "at most" if budget_name == "budget_speedup" else "at least"
        raise invalid(budget_name, budget, f"{reach} {best:.6g}, the smallest student of the search space")

    if table is None:  # size and parameter budgets: timed only once the budget is known to be reachable
        table = latency_table()

    # Importance on the task's data: layers, heads, neurons (masks) and weights (HAWQ's Ω per width).
    batches = calibration_batches(train_dataset, data_collator, batch_size, arguments.search_num_batches, seed)
    from ..methods.low_bit.bit_widths import fisher_omegas  # scipy: imported when a search runs, not for --help

    # One backward pass per batch scores the gates and sums the weights' Fisher traces (HAWQ's Ω for each width).
    modules = _quantizable_weights(teacher, bits)
    scores = importance_scores(teacher, batches, len(batches), weights=modules)
    quantized = tuple(b for b in bits if b != FLOAT_WEIGHTS)
    omega = fisher_omegas(modules, scores.weight_traces, quantized) if modules else {}
    embedding_modules = {n: m for n, m in modules.items() if isinstance(m, torch.nn.Embedding)}
    extra = tuple(sorted({e for options in embedding_widths.values() for e in options[1:]} - set(quantized)))
    if embedding_modules and extra:  # Ω of the embeddings alone at the widths only they may take
        for name, by_bits in fisher_omegas(embedding_modules, scores.weight_traces, extra).items():
            omega[name].update(by_bits)
    from ..families import base_prefix, family_of
    from ..methods.ffn_pruning.transform import ffn_layers

    layer_prefix = f"{base_prefix(teacher)}{family_of(teacher).layers}."
    ffn_names = {n for p in ffn_layers(teacher) for n in (p.module_name("ffn_up"), p.module_name("ffn_down"))}
    order = [int(i) for i in torch.argsort(-scores.layers, stable=True)]  # most important first, ties by position

    def candidate(d, w, b, e, v) -> Candidate:
        return Candidate(tuple(sorted(order[:d])), widths[w], w, b, v, None if e == b else e)

    embedding_names = set(embedding_modules)

    def loss(c: Candidate) -> float:
        return _loss_increase(c, scores, omega, layer_prefix, ffn_names, embedding_names)

    def tie(value: float) -> float:  # equal estimates: the cheaper student first, then the cut vocabulary
        return -value if budget_name == "budget_speedup" else value

    # Equal estimates: the cheaper student, then embeddings at the Linears' width (a width that changes nothing, as
    # for tied embeddings, which stay float, is not written into the recipe), then the cut vocabulary.
    ranked = sorted(feasible, key=lambda s: (loss(candidate(*s)), tie(costs[s]), s[3] != s[2], not s[4], s))
    # The best shape whose whole skeleton meets the budget when checked directly: a size budget on its saved files,
    # a latency budget timed beside the teacher (the table ranks; one interleaved timing confirms, so a table made
    # at a busier moment cannot pass a student that misses the budget).
    ids = None
    correction = 1.0  # checked / table, from the last shape checked: the table read at this moment's machine state
    checks = 0
    for shape in ranked:
        if not meets(costs[shape] * correction):
            continue  # the table, corrected by what the last check measured, already says it misses
        chosen = candidate(*shape)
        ids = token_ids if chosen.prune_vocabulary else None
        model, student_tokenizer = skeleton(
            teacher, chosen.layers, chosen.width, chosen.weight_bits, tokenizer, ids, chosen.embedding_bits
        )
        size = saved_size(model)
        count = parameter_count(skeleton(teacher, chosen.layers, chosen.width, FLOAT_WEIGHTS, tokenizer, ids)[0])
        fresh = None if table.from_cache else table.teacher_ms  # timed seconds ago: the teacher need not be again
        times = time_beside_teacher(teacher, model, tokenizer, student_tokenizer, arguments, fresh)
        checked = {
            "budget_mb": size / 1e6,
            "budget_params": count,
            "budget_latency_ms": times["student"],
            "budget_speedup": times["teacher"] / times["student"],
        }[budget_name]
        if meets(checked):
            break
        correction = checked / costs[shape]
        checks += 1
        if checks == MAX_CHECKED:
            shape = None
            break
    else:
        shape = None
    if shape is None:
        raise invalid(
            budget_name,
            budget,
            f"a budget one of the best shapes meets when built and checked ({checks} checked missed it)",
        )
    return SearchResult(
        candidate=chosen,
        loss_increase=loss(chosen),
        size_bytes=size,
        parameters=count,
        latency_ms=table.predict(chosen.depth, chosen.width, chosen.weight_bits),
        teacher_ms=table.teacher_ms,
        budget=(budget_name, budget),
        candidates=len(shapes),
        feasible=len(feasible),
        seconds=time.perf_counter() - start,
        latency_table_seconds=table_seconds,
        fit_error=table.fit_error,
        checked_latency_ms=times["student"],
        checked_teacher_ms=times["teacher"],
        importance=scores,
    )
