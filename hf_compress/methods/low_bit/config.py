"""Fields of low-bit quantization-aware training (8/4/2/1-bit weights) and the combinations it refuses."""

from __future__ import annotations

from dataclasses import dataclass

from ...checks import check_choice, check_positive_int, invalid, require
from ...config_fields import config_field

# One source for the choices: the quantizers and the allocator define them.
BITS = (8, 4, 2, 1)
# What bit_budget_mb allocates among unless told otherwise: 1-bit weights need long distillation to recover
# (BinaryBERT), so the allocator offers them only when asked (choose_bit_widths(bit_choices=BITS)).
DEFAULT_BIT_CHOICES = (8, 4, 2)
MODULE_SELECTIONS = ("encoder", "encoder_embeddings", "all")
SENSITIVITIES = ("fisher", "kl")


@dataclass
class LowBitArguments:
    """Off unless weight_bits or bit_budget_mb is set: the selected modules then train with fake-quantized weights
    (straight-through estimator) while distilling and are packed at finalization."""

    weight_bits: int | None = config_field(
        None,
        "Quantization-aware training below int8: 8, 4 (codes in [-7, 7]), 2 (ternary, TernaryBERT) or 1 "
        "(binary: sign × a per-row or per-group scale, BinaryBERT / BiT) bits for the modules of "
        "weight_quantization_modules, trained with a straight-through estimator while "
        "distilling; at finalization they are packed into uint8 (LowBitLinear / LowBitEmbedding). null: off. "
        "Not with bit_budget_mb, low_rank_ratio or quantization='dynamic-int8'.",
    )
    weight_group_size: int | None = config_field(
        None, "Input columns per fp32 scale of the low-bit weights; null: one scale per output row."
    )
    # Default with the word embeddings (TernaryBERT's choice): left in fp32 they are most of a small BERT's bytes, and
    # a "4-bit" model would be larger than the int8 one, which quantizes them too.
    weight_quantization_modules: str = config_field(
        "encoder_embeddings",
        "Which modules train and store at low bits: 'encoder' (the Linears of the transformer layers), "
        "'encoder_embeddings' (and the input word embeddings; the default) or 'all' (every Linear, pooler and "
        "task head included, and the word embeddings). Modules outside stay float (the report and the model card "
        "name them).",
    )
    embedding_weight_bits: int | None = config_field(
        None,
        "Bits of the word embeddings when weight_quantization_modules selects them (8, 4, 2 or 1); null: "
        "weight_bits. Only with weight_bits.",
    )
    bit_budget_mb: float | None = config_field(
        None,
        "Instead of one weight_bits: megabytes (1e6 bytes) of packed codes + scales for the selected "
        "modules; choose_bit_widths gives each 8, 4 or 2 bits by bit_sensitivity on the first "
        "bit_calibration_batches train batches. null: off.",
    )
    bit_calibration_batches: int = config_field(
        8, "Train batches (in order) on which bit_sensitivity ranks the modules for bit_budget_mb."
    )
    bit_sensitivity: str = config_field(
        "fisher",
        "How bit_budget_mb ranks modules: 'fisher' (HAWQ: Fisher trace × rounding error, one backward pass per "
        "batch) or 'kl' (ZeroQ: the measured output KL of rounding each module alone, one forward pass per "
        "module, width and batch).",
    )

    @property
    def low_bit(self) -> bool:
        """Whether the student trains with fake-quantized low-bit weights (weight_bits or bit_budget_mb)."""
        return self.weight_bits is not None or self.bit_budget_mb is not None


def check_low_bit_arguments(args: LowBitArguments) -> None:
    """Field checks; low-bit training refuses factorised Linears and int8 of the rest (why: below)."""
    optional_bits = "null, " + ", ".join(map(str, BITS))
    for name in ("weight_bits", "embedding_weight_bits"):
        require(getattr(args, name) is None or getattr(args, name) in BITS, name, getattr(args, name), optional_bits)
    check_positive_int("weight_group_size", args.weight_group_size, optional=True)
    check_choice("weight_quantization_modules", args.weight_quantization_modules, MODULE_SELECTIONS)
    budget = args.bit_budget_mb
    ok = budget is None or (isinstance(budget, (int, float)) and not isinstance(budget, bool) and budget > 0)
    require(ok, "bit_budget_mb", budget, "null or a number of megabytes > 0")
    check_positive_int("bit_calibration_batches", args.bit_calibration_batches)
    check_choice("bit_sensitivity", args.bit_sensitivity, SENSITIVITIES)
    if budget is not None and args.weight_bits is not None:
        raise invalid("bit_budget_mb", budget, f"null when weight_bits={args.weight_bits} is set (give one)")
    if args.embedding_weight_bits is not None and args.weight_bits is None:
        raise invalid("embedding_weight_bits", args.embedding_weight_bits, "null unless weight_bits is set")
    if not args.low_bit:
        require(
            args.weight_group_size is None,
            "weight_group_size",
            args.weight_group_size,
            "null unless weight_bits or bit_budget_mb is set",
        )
        return
    setting = f"weight_bits={args.weight_bits}" if budget is None else f"bit_budget_mb={budget}"
    if getattr(args, "low_rank_ratio", None) is not None:
        raise invalid(
            "low_rank_ratio",
            args.low_rank_ratio,
            f"null with {setting}: low-bit training needs the dense nn.Linear weights that factorisation replaces",
        )
    if getattr(args, "quantization", "none") != "none":
        raise invalid(
            "quantization",
            args.quantization,
            f"'none' with {setting}: the low-bit modules are packed at finalization and the others stay float; "
            "int8 post-training quantization of the rest is not combined with them",
        )
