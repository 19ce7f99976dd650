"""Arguments of CompressionTrainer: distillation, pruning and ALBERT-style conversion in one run."""

from __future__ import annotations

from dataclasses import dataclass

from ..checks import (
    check_choice,
    check_embedding_size,
    check_num_hidden_groups,
    check_positive_int,
    check_sharing_init,
    invalid,
    require,
)
from ..config_fields import config_field
from ..quantization.bit_widths import SENSITIVITIES
from ..quantization.low_bit import BITS, MODULE_SELECTIONS
from ..transforms.low_rank import METHODS as LOW_RANK_METHODS
from .distillation_args import DistillationTrainingArguments
from .pruning_args import PruningTrainingArguments

QUANTIZATIONS = ("none", "dynamic-int8")
EMBEDDING_WEIGHTINGS = ("uniform", "used", "frequency")
LOW_RANK_ALLOCATIONS = ("per_module", "budget")
LOW_RANK_MODULES = ("all", "attention")


@dataclass
class CompressionTrainingArguments(PruningTrainingArguments, DistillationTrainingArguments):
    """Every DistillationTrainingArguments and PruningTrainingArguments field, plus the ALBERT-style transform.

    Pruning is off unless target_sparsity > 0 or ffn_sparsity > 0; the ALBERT conversion is off unless
    embedding_size or num_hidden_groups is set. The student is converted before training and distilled from the
    unconverted teacher. Low-rank factorisation is off unless low_rank_ratio is set: the student's encoder Linears
    are then factorised (after the ALBERT conversion, before the optimizer exists) and distilled back.
    """

    target_sparsity: float = config_field(
        0.0, "Final fraction of pruned weights among the targets, in [0, 1); 0 turns pruning off."
    )
    embedding_size: int | None = config_field(
        None, "ALBERT-style factorised embedding size E in [1, hidden_size] (V×H becomes V×E·E×H)."
    )
    num_hidden_groups: int | None = config_field(
        None, "ALBERT-style sharing: G groups of consecutive layers share weights; G divides the depth."
    )
    embedding_weighting: str = config_field(
        "uniform",
        "How the ALBERT-style factorisation weighs vocabulary rows: 'uniform' (every row alike), 'used' "
        "(only the tokens of the training data count: as if the vocabulary were pruned first) or 'frequency' "
        "(each token by how often the training data uses it).",
    )
    sharing_init: str = config_field(
        "first",
        "Initialise a shared layer from its members: 'first' (measured better than 'mean' on tweets), "
        "'mean', or a layer index in the group.",
    )

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

    weight_bits: int | None = config_field(
        None,
        "Quantization-aware training below int8: 8, 4 (codes in [-7, 7]) or 2 (ternary, TernaryBERT) "
        "bits for the modules of weight_quantization_modules, trained with a straight-through estimator while "
        "distilling; at finalization they are packed into uint8 (LowBitLinear / LowBitEmbedding). null: off. "
        "Not with bit_budget_mb, low_rank_ratio or quantization='dynamic-int8'.",
    )
    weight_group_size: int | None = config_field(
        None, "Input columns per fp32 scale of the low-bit weights; null: one scale per output row."
    )
    weight_quantization_modules: str = config_field(
        "encoder",
        "Which modules train and store at low bits: 'encoder' (the Linears of the transformer layers), "
        "'encoder_embeddings' (and the input word embeddings) or 'all' (every Linear, pooler and task head "
        "included, and the word embeddings). Modules outside stay float.",
    )
    embedding_weight_bits: int | None = config_field(
        None,
        "Bits of the word embeddings when weight_quantization_modules selects them (8, 4 or 2); null: "
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

    quantization: str = config_field(
        "none",
        "Post-training quantization applied after training, before the final save and push: 'none' or "
        "'dynamic-int8' (int8 Linear weights per channel, activations quantized at run time; int8 embeddings).",
    )
    quantization_modules_to_not_convert: list[str] | None = config_field(
        None, "Modules kept in full precision when quantizing, e.g. ['classifier']."
    )

    def __post_init__(self):
        super().__post_init__()
        check_choice("quantization", self.quantization, QUANTIZATIONS)
        check_embedding_size(self.embedding_size)
        check_choice("embedding_weighting", self.embedding_weighting, EMBEDDING_WEIGHTINGS)
        check_num_hidden_groups(self.num_hidden_groups)
        if isinstance(self.sharing_init, str) and self.sharing_init.isdigit():
            self.sharing_init = int(self.sharing_init)  # a layer index within a group, from YAML or the CLI
        check_sharing_init(self.sharing_init)
        self._check_low_rank()
        self._check_low_bit()
        checkpointing = self.activation_checkpointing or self.gradient_checkpointing
        if self.albert_conversion and checkpointing:
            raise invalid(
                "gradient_checkpointing" if self.gradient_checkpointing else "activation_checkpointing",
                True,
                f"False with the ALBERT-style conversion (embedding_size={self.embedding_size}, num_hidden_groups="
                f"{self.num_hidden_groups}): transformers' ALBERT does not support activation checkpointing",
            )

    def _check_low_rank(self) -> None:
        ratio = self.low_rank_ratio
        ok = ratio is None or (isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and 0 < ratio <= 1)
        require(ok, "low_rank_ratio", ratio, "null or a number in (0, 1]")
        check_choice("low_rank_method", self.low_rank_method, LOW_RANK_METHODS)
        check_choice("low_rank_allocation", self.low_rank_allocation, LOW_RANK_ALLOCATIONS)
        check_choice("low_rank_modules", self.low_rank_modules, LOW_RANK_MODULES)
        check_positive_int("low_rank_calibration_batches", self.low_rank_calibration_batches)
        if ratio is None:
            return
        # Both pruners mask or slice nn.Linear weights (out, in); a LowRankLinear holds one flat vector of factors.
        # Pruning then factorising at finalization is not what a recipe asks for (the factors would not be trained).
        # FFN neurons can still be pruned when only the attention projections are factorised.
        dense_ffn = self.low_rank_modules == "attention"
        for name in ("target_sparsity",) if dense_ffn else ("target_sparsity", "ffn_sparsity"):
            value = getattr(self, name)
            hint = "" if dense_ffn or name == "target_sparsity" else "; or low_rank_modules='attention'"
            require(
                value == 0,
                name,
                value,
                f"0 with low_rank_ratio={ratio}: pruning needs dense nn.Linear weights, factorised Linears have none "
                f"(prune in one run, factorise the saved model in another{hint})",
            )

    def _check_low_bit(self) -> None:
        optional_bits = "null, " + ", ".join(map(str, BITS))
        for name in ("weight_bits", "embedding_weight_bits"):
            require(
                getattr(self, name) is None or getattr(self, name) in BITS, name, getattr(self, name), optional_bits
            )
        check_positive_int("weight_group_size", self.weight_group_size, optional=True)
        check_choice("weight_quantization_modules", self.weight_quantization_modules, MODULE_SELECTIONS)
        budget = self.bit_budget_mb
        ok = budget is None or (isinstance(budget, (int, float)) and not isinstance(budget, bool) and budget > 0)
        require(ok, "bit_budget_mb", budget, "null or a number of megabytes > 0")
        check_positive_int("bit_calibration_batches", self.bit_calibration_batches)
        check_choice("bit_sensitivity", self.bit_sensitivity, SENSITIVITIES)
        if budget is not None and self.weight_bits is not None:
            raise invalid("bit_budget_mb", budget, f"null when weight_bits={self.weight_bits} is set (give one)")
        if self.embedding_weight_bits is not None and self.weight_bits is None:
            raise invalid("embedding_weight_bits", self.embedding_weight_bits, "null unless weight_bits is set")
        if not self.low_bit:
            require(
                self.weight_group_size is None,
                "weight_group_size",
                self.weight_group_size,
                "null unless weight_bits or bit_budget_mb is set",
            )
            return
        setting = f"weight_bits={self.weight_bits}" if budget is None else f"bit_budget_mb={budget}"
        if self.low_rank_ratio is not None:
            raise invalid(
                "low_rank_ratio",
                self.low_rank_ratio,
                f"null with {setting}: low-bit training needs the dense nn.Linear weights that factorisation replaces",
            )
        if self.quantization != "none":
            raise invalid(
                "quantization",
                self.quantization,
                f"'none' with {setting}: the low-bit modules are packed at finalization and the others stay float; "
                "int8 post-training quantization of the rest is not combined with them",
            )

    @property
    def low_bit(self) -> bool:
        """Whether the student trains with fake-quantized low-bit weights (weight_bits or bit_budget_mb)."""
        return self.weight_bits is not None or self.bit_budget_mb is not None

    @property
    def albert_conversion(self) -> bool:
        """Whether the student is converted to ALBERT before training."""
        return self.embedding_size is not None or self.num_hidden_groups is not None
