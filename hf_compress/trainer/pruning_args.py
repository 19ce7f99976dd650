"""Arguments of PruningTrainer: the TrainingArguments you know plus the importance, target and schedule."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

from ..pruning.importance import METHODS
from ..pruning.masks import SCOPES
from ..pruning.structured import FFN_METHODS
from .distillation_args import _require


@dataclass
class PruningTrainingArguments(TrainingArguments):
    """TrainingArguments for gradient-based pruning on a cubic schedule: of weights, of whole FFN neurons, or both.

    `target_sparsity` prunes single weights (zeros in place); `ffn_sparsity` removes whole FFN neurons, which the final
    save slices away (a stock config with a smaller intermediate_size). Together, `target_sparsity` is the fraction of
    zeros among the weights the FFN pruning leaves.
    """

    pruning_method: str = field(
        default="taylor",
        metadata={
            "help": "Importance: 'taylor' (mean |W·∂L/∂W|, the best in our benchmark), 'movement' (−Σ W·∂L/∂W; "
            "re-ranked over all weights at each update, so pruned weights can return; needs a long schedule) or "
            "'magnitude' (|W|)."
        },
    )
    target_sparsity: float = field(
        default=0.5, metadata={"help": "Final fraction of pruned weights among the targets, in [0, 1)."}
    )
    pruning_start: float = field(
        default=0.1,
        metadata={"help": "When the ramp starts: a fraction of training (< 1) or an optimizer step (>= 1)."},
    )
    pruning_end: float = field(
        default=0.7,
        metadata={"help": "When the target is reached (fraction < 1 or step >= 1); masks stay fixed after it."},
    )
    pruning_frequency: int = field(default=10, metadata={"help": "Update the masks every N optimizer steps (>= 1)."})
    pruning_scope: str = field(
        default="global",
        metadata={"help": "'global': one threshold over all targets; 'per_layer': each tensor alike."},
    )
    ffn_sparsity: float = field(
        default=0.0,
        metadata={
            "help": "Fraction of FFN intermediate neurons to remove, in [0, 1); 0 turns it off. The same number goes "
            "in every layer and the final save slices them away, so the saved model is a stock BERT/ALBERT config "
            "with a smaller intermediate_size (smaller and faster without hf_compress). Combines with "
            "target_sparsity, which then counts only the weights that remain."
        },
    )
    ffn_pruning_method: str = field(
        default="taylor",
        metadata={
            "help": "FFN neuron importance: 'taylor' (mean over steps of |∂L/∂g| for a gate g on the neuron, "
            "Molchanov et al. 2019) or 'magnitude' (L2 norm of the neuron's weights)."
        },
    )
    prune_embeddings: bool = field(default=False, metadata={"help": "Also prune the word-embedding matrix."})
    prune_pooler: bool = field(default=False, metadata={"help": "Also prune the pooler's Linear."})
    prune_classifier: bool = field(default=False, metadata={"help": "Also prune the classifier's Linear."})

    def __post_init__(self):
        super().__post_init__()
        _require(self.pruning_method in METHODS, "pruning_method", self.pruning_method, ", ".join(METHODS))
        _require(0.0 <= self.target_sparsity < 1.0, "target_sparsity", self.target_sparsity, "a number in [0, 1)")
        _require(0.0 <= self.ffn_sparsity < 1.0, "ffn_sparsity", self.ffn_sparsity, "a number in [0, 1)")
        methods = ", ".join(FFN_METHODS)
        _require(self.ffn_pruning_method in FFN_METHODS, "ffn_pruning_method", self.ffn_pruning_method, methods)
        _require(self.pruning_start >= 0, "pruning_start", self.pruning_start, "a fraction in [0, 1) or a step >= 1")
        _require(self.pruning_end >= 0, "pruning_end", self.pruning_end, "a fraction in [0, 1) or a step >= 1")
        same_unit = (self.pruning_start < 1) == (self.pruning_end < 1)
        _require(
            not same_unit or self.pruning_end >= self.pruning_start,
            "pruning_end",
            self.pruning_end,
            f"a point at or after pruning_start={self.pruning_start}",
        )
        _require(self.pruning_frequency >= 1, "pruning_frequency", self.pruning_frequency, "an integer >= 1")
        _require(self.pruning_scope in SCOPES, "pruning_scope", self.pruning_scope, ", ".join(SCOPES))
