"""`SearchArguments`: the one budget a student search must meet, and the search space it may choose from."""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import check_positive_int, invalid, require
from ..config_fields import config_field

BUDGETS = ("budget_params", "budget_mb", "budget_latency_ms", "budget_speedup")
FLOAT_WEIGHTS = 32  # in search_weight_bits: the weights stay float (no quantization)
SEARCH_BITS = (FLOAT_WEIGHTS, 8, 4, 2, 1)


@dataclass
class SearchArguments:
    """What `search_student` / `hf-compress search` must meet (exactly one budget) and the knobs it may turn.

    Size and parameters are computed exactly (the candidate is built and saved); latency comes from a table of layers
    timed on this machine at `budget_batch_size` × `budget_seq_len` tokens with `search_threads` threads.
    """

    budget_params: int | None = config_field(
        None, "Most parameters the student may have (every weight counted once, whatever its bits)."
    )
    budget_mb: float | None = config_field(
        None, "Most megabytes (1e6 bytes) of weight files on disk, as `hf-compress report` counts them."
    )
    budget_latency_ms: float | None = config_field(
        None, "Most milliseconds per forward pass of budget_batch_size × budget_seq_len tokens on this machine."
    )
    budget_speedup: float | None = config_field(
        None, "Least speed-up against the teacher (fp32, same inputs, timed in the same run on this machine)."
    )
    budget_batch_size: int = config_field(32, "Examples per timed forward pass (latency and speed-up budgets).")
    # 48: the report's timing length (evaluation.measure.TIMING_TOKENS), not imported so that --help stays light.
    budget_seq_len: int = config_field(48, "Tokens per example of the timed forward pass (as the report times).")
    search_layers: list[int] | None = config_field(
        None, "Student depths the search may choose (null: 1 to the teacher's depth)."
    )
    search_ffn_sparsities: list[float] = config_field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.625, 0.75, 0.875],
        help="FFN sparsities (fraction of neurons removed, the same in every layer) the search may choose.",
    )
    search_weight_bits: list[int] = config_field(
        default_factory=lambda: [FLOAT_WEIGHTS, 8, 4],
        help="Weight widths the search may choose for every Linear and the word embeddings (32: float weights).",
    )
    search_embedding_weight_bits: list[int] = config_field(
        default_factory=lambda: [4, 2],
        help="Narrower widths the search may also give the word embeddings of a quantized student (each below the "
        "Linears' width; []: the embeddings take the Linears' width). After a vocabulary cut the embedding is still "
        "nearly half of a small student's bytes: narrower embeddings may pay for more layers.",
    )
    search_vocabulary: bool = config_field(
        True, "Also consider cutting the vocabulary to the tokens of the train split (prune_vocabulary)."
    )
    search_num_batches: int = config_field(
        8, "Train batches whose gradients score layers, heads, FFN neurons and weights (importance)."
    )
    search_threads: int = config_field(1, "CPU threads while layers are timed (and the final check times).")
    # 5: the table's fit pools several shapes per weight width, so 5 medians predict what 10 do within 1-2% here, at
    # half the cost of the table and of each final check (the first search's largest part).
    search_latency_repeats: int = config_field(
        5, "Timed forward passes per shape in the latency table and in the final check beside the teacher."
    )
    search_output: str | None = config_field(
        None, "Where the searched recipe is written (default: beside the recipe, as <name>-searched.yaml)."
    )

    def __post_init__(self):
        given = [name for name in BUDGETS if getattr(self, name) is not None]
        if len(given) != 1:
            raise invalid("budget", given or None, f"exactly one of {', '.join(BUDGETS)}")
        name = given[0]
        value = getattr(self, name)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
        require(ok, name, value, "a number > 0")
        if name == "budget_params":
            check_positive_int(name, value)
        for field in ("budget_batch_size", "budget_seq_len", "search_num_batches", "search_threads"):
            check_positive_int(field, getattr(self, field))
        check_positive_int("search_latency_repeats", self.search_latency_repeats)
        if self.search_layers is not None:
            ok = bool(self.search_layers) and all(isinstance(d, int) and d >= 1 for d in self.search_layers)
            require(ok, "search_layers", self.search_layers, "a non-empty list of depths >= 1")
        ok = bool(self.search_ffn_sparsities) and all(0.0 <= s < 1.0 for s in self.search_ffn_sparsities)
        require(ok, "search_ffn_sparsities", self.search_ffn_sparsities, "a non-empty list of numbers in [0, 1)")
        ok = bool(self.search_weight_bits) and all(b in SEARCH_BITS for b in self.search_weight_bits)
        require(ok, "search_weight_bits", self.search_weight_bits, f"a non-empty list of {SEARCH_BITS}")
        embedding_bits = self.search_embedding_weight_bits
        ok = isinstance(embedding_bits, list) and all(b in SEARCH_BITS[1:] for b in embedding_bits)
        require(ok, "search_embedding_weight_bits", embedding_bits, f"a list of {SEARCH_BITS[1:]} (may be empty)")

    @property
    def budget(self) -> tuple[str, float]:
        """(field name, value) of the one budget given."""
        name = next(n for n in BUDGETS if getattr(self, n) is not None)
        return name, getattr(self, name)
