"""Arguments of PruningTrainer: the TrainingArguments you know plus the importance, target and schedule."""

from __future__ import annotations

from dataclasses import dataclass

from transformers import TrainingArguments

from ...checks import check_choice, check_fraction, invalid
from ...config_fields import config_field
from ..ffn_pruning.transform import FFN_METHODS
from ..method import MethodArguments
from ..vocabulary.config import VocabularyArguments
from .masks import SCOPES
from .schedule import SparsitySchedule
from .scores import METHODS


@dataclass
class PruningTrainingArguments(MethodArguments, VocabularyArguments, TrainingArguments):
    """TrainingArguments for gradient-based pruning on a cubic schedule: of weights, of whole FFN neurons, or both.

    `target_sparsity` prunes single weights (zeros in place); `ffn_sparsity` removes whole FFN neurons, which the final
    save slices away (a stock config with a smaller intermediate_size). Together, `target_sparsity` is the fraction of
    zeros among the weights the FFN pruning leaves.
    """

    pruning_method: str = config_field(
        "taylor",
        "Importance: 'taylor' (mean |W·∂L/∂W|, the best in our benchmark), 'movement' (−Σ W·∂L/∂W; "
        "re-ranked over all weights at each update, so pruned weights can return; needs a long schedule) or "
        "'magnitude' (|W|).",
    )
    target_sparsity: float = config_field(0.5, "Final fraction of pruned weights among the targets, in [0, 1).")
    pruning_start: float = config_field(
        0.1, "When the ramp starts: a fraction of training (< 1) or an optimizer step (>= 1)."
    )
    pruning_end: float = config_field(
        0.7, "When the target is reached (fraction < 1 or step >= 1); masks stay fixed after it."
    )
    pruning_frequency: int = config_field(10, "Update the masks every N optimizer steps (>= 1).")
    pruning_scope: str = config_field(
        "global", "'global': one threshold over all targets; 'per_layer': each tensor alike."
    )
    ffn_sparsity: float = config_field(
        0.0,
        "Fraction of FFN intermediate neurons to remove, in [0, 1); 0 turns it off. The same number goes "
        "in every layer and the final save slices them away, so the saved model is a stock BERT/ALBERT config "
        "with a smaller intermediate_size (smaller and faster without hf_compress). Combines with "
        "target_sparsity, which then counts only the weights that remain.",
    )
    ffn_pruning_method: str = config_field(
        "taylor",
        "FFN neuron importance: 'taylor' (mean over steps of |∂L/∂g| for a gate g on the neuron, "
        "Molchanov et al. 2019) or 'magnitude' (L2 norm of the neuron's weights).",
    )
    prune_embeddings: bool = config_field(False, "Also prune the word-embedding matrix.")
    prune_pooler: bool = config_field(False, "Also prune the pooler's Linear.")
    prune_classifier: bool = config_field(False, "Also prune the classifier's Linear.")

    def __post_init__(self):
        # Our own fields first: TrainingArguments.__post_init__ loads transformers' model-loading internals (seconds),
        # and a bad value should come back before that.
        check_choice("pruning_method", self.pruning_method, METHODS)
        check_fraction("target_sparsity", self.target_sparsity)
        check_fraction("ffn_sparsity", self.ffn_sparsity)
        check_choice("ffn_pruning_method", self.ffn_pruning_method, FFN_METHODS)
        check_choice("pruning_scope", self.pruning_scope, SCOPES)
        super().__post_init__()
        self.pruning_schedule()  # validates pruning_start, pruning_end and pruning_frequency
        if self.prunes and (self.fsdp or self.deepspeed):
            field = "fsdp" if self.fsdp else "deepspeed"
            raise invalid(
                field,
                getattr(self, field),
                "empty when pruning (masks are kept on whole tensors, which sharding splits across ranks); "
                "use DDP (torchrun / accelerate launch without FSDP or DeepSpeed)",
            )

    @property
    def prunes(self) -> bool:
        """Whether weights or FFN neurons are pruned in this run."""
        return self.target_sparsity > 0 or self.ffn_sparsity > 0

    def pruning_schedule(self) -> SparsitySchedule:
        """The schedule every pruner of the run shares (its steps are fixed when training starts)."""
        return SparsitySchedule(self.pruning_start, self.pruning_end, self.pruning_frequency)
