"""Fields of low-rank factorisation while distilling, and the combinations it refuses (it imposes them)."""

from __future__ import annotations

from dataclasses import dataclass

from ...checks import check_choice, check_positive_int, require
from ...config_fields import config_field

LOW_RANK_METHODS = ("svd", "fisher", "activation")
LOW_RANK_ALLOCATIONS = ("per_module", "budget")
LOW_RANK_MODULES = ("all", "attention")


@dataclass
class LowRankArguments:
    """Off unless low_rank_ratio is set: the student's encoder Linears are then factorised (after the ALBERT
    conversion, before the optimizer exists) and distilled back."""

    low_rank_ratio: float | None = config_field(
        None,
        "Factorise the student's encoder Linears (attention q/k/v/output, FFN up/down) before distilling, "
        "keeping at most this fraction in (0, 1] of their weight parameters (factorize_linear_); null: off. "
        "Not with target_sparsity > 0; with ffn_sparsity > 0 only when low_rank_modules='attention'.",
    )
    low_rank_modules: str = config_field(
        "all",
        "Which encoder Linears are factorised: 'all' (attention and FFN) or 'attention' (q/k/v/output; "
        "the FFN stays dense, so ffn_sparsity can prune its neurons).",
    )
    low_rank_method: str = config_field(
        "svd",
        "How the factors are chosen: 'svd' (plain truncated SVD), 'fisher' (Fisher-Weighted SVD, Hsu et "
        "al. 2022) or 'activation' (data-aware, DRONE); the last two use the first batches of the train dataset.",
    )
    low_rank_allocation: str = config_field(
        "per_module",
        "'per_module': every Linear keeps low_rank_ratio of its parameters; 'budget': all of them "
        "together do, ranks allocated by Fisher sensitivity (uses labelled train batches).",
    )
    low_rank_calibration_batches: int = config_field(
        8, "Train batches (per_device_train_batch_size, in order) for 'fisher', 'activation' or a budget."
    )


def check_low_rank_arguments(args: LowRankArguments) -> None:
    """Field checks; pruning of the factorised Linears is refused (why: below)."""
    ratio = args.low_rank_ratio
    ok = ratio is None or (isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 < ratio <= 1)
    require(ok, "low_rank_ratio", ratio, "null or a number in (0, 1]")
    check_choice("low_rank_method", args.low_rank_method, LOW_RANK_METHODS)
    check_choice("low_rank_allocation", args.low_rank_allocation, LOW_RANK_ALLOCATIONS)
    check_choice("low_rank_modules", args.low_rank_modules, LOW_RANK_MODULES)
    check_positive_int("low_rank_calibration_batches", args.low_rank_calibration_batches)
    if ratio is None:
        return
    # Both pruners mask or slice nn.Linear weights (out, in); a LowRankLinear holds one flat vector of factors.
    # Pruning then factorising at finalization is not what a recipe asks for (the factors would not be trained).
    # FFN neurons can still be pruned when only the attention projections are factorised.
    dense_ffn = args.low_rank_modules == "attention"
    for name in ("target_sparsity",) if dense_ffn else ("target_sparsity", "ffn_sparsity"):
        value = getattr(args, name, 0)
        hint = "" if dense_ffn or name == "target_sparsity" else "; or low_rank_modules='attention'"
        require(
            value == 0,
            name,
            value,
            f"0 with low_rank_ratio={ratio}: pruning needs dense nn.Linear weights, factorised Linears have none "
            f"(prune in one run, factorise the saved model in another{hint})",
        )
