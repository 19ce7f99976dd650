"""PruningTrainer: Trainer that prunes weights by gradient-based importance on a cubic schedule."""

from __future__ import annotations

import json
import logging
import os

from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..provenance import record
from ..pruning.pruner import Pruner, format_layer_table, select_targets
from .pruning_args import PruningTrainingArguments
from .saving import replace_pickled_args

logger = logging.getLogger(__name__)
PRUNING_STATE_FILE = "pruning_state.safetensors"
PRUNING_REPORT_FILE = "pruning_report.json"


class _PruningCallback(TrainerCallback):
    """Drives the Pruner from Trainer's loop: score before each optimizer step, mask after it."""

    def __init__(self, pruner: Pruner):
        self.pruner = pruner

    def on_train_begin(self, args, state, control, **kwargs):
        self.pruner.set_horizon(state.max_steps)
        self.pruner.apply_masks()  # a resumed run starts from its checkpoint's masks

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        # Gradients are already all-reduced by DDP here, so every rank computes the same scores and masks.
        self.pruner.before_optimizer_step()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.pruner.apply_masks()

    def on_step_end(self, args, state, control, **kwargs):
        self.pruner.on_step_end(state.global_step)


class PruningMixin:
    """Adds a Pruner to a Trainer subclass: masks in checkpoints, sparsity in logs, a report with the final save."""

    pruner: Pruner | None = None

    def _setup_pruning(self) -> None:
        """Create the pruner over the model's targets (no-op for target_sparsity == 0)."""
        args = self.args
        if args.target_sparsity == 0:
            return
        targets = select_targets(self.model, args.prune_embeddings, args.prune_pooler, args.prune_classifier)
        self.pruner = Pruner(
            targets,
            args.pruning_method,
            args.target_sparsity,
            args.pruning_start,
            args.pruning_end,
            args.pruning_frequency,
            args.pruning_scope,
        )
        self.add_callback(_PruningCallback(self.pruner))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the current sparsity and scheduled target to every training log."""
        if self.pruner is not None and not any(k.startswith("eval_") for k in logs):
            logs = {**logs, "sparsity": self.pruner.sparsity(), "sparsity_target": self.pruner.current_target}
        super().log(logs, start_time)

    def _save_checkpoint(self, model, trial):
        """Trainer's checkpoint plus masks and importance scores, so resume continues the schedule exactly."""
        super()._save_checkpoint(model, trial)
        if self.pruner is not None and self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            save_file(self.pruner.state_dict(), os.path.join(folder, PRUNING_STATE_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Trainer's resume plus the pruning state."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, PRUNING_STATE_FILE)
        if self.pruner is not None:
            if not os.path.exists(path):
                raise ValueError(f"resume_from_checkpoint={resume_from_checkpoint!r} has no {PRUNING_STATE_FILE}")
            self.pruner.load_state_dict(load_file(path))

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Trainer's save; a final (non-checkpoint) save records the pruning and writes the per-layer report."""
        output_dir = output_dir or self.args.output_dir
        final = self.pruner is not None and PREFIX_CHECKPOINT_DIR not in os.path.basename(os.path.normpath(output_dir))
        if final:
            self.pruner.apply_masks()  # bake: the saved weights hold zeros in place, loadable without us
            record(self.model.config, "pruning", self._pruning_provenance())
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            replace_pickled_args(output_dir, self.args)
            if final:
                rows = self.pruner.layer_report()
                with open(os.path.join(output_dir, PRUNING_REPORT_FILE), "w") as f:
                    json.dump({"sparsity": self.pruner.sparsity(), "layers": rows}, f, indent=2)
                print(format_layer_table(rows))

    def _pruning_provenance(self) -> dict:
        """The pruning arguments and the sparsity reached, for config.json."""
        a = self.args
        return {
            "method": a.pruning_method,
            "target_sparsity": a.target_sparsity,
            "scope": a.pruning_scope,
            "schedule": {"start": a.pruning_start, "end": a.pruning_end, "frequency": a.pruning_frequency},
            "sparsity": round(self.pruner.sparsity(), 6),
        }


class PruningTrainer(PruningMixin, Trainer):
    """Trainer with movement, Taylor or magnitude pruning (Sanh et al. 2020; Molchanov et al. 2019; Zhu & Gupta)."""

    _tag_names = ["hf_compress", "pruning"]

    def __init__(self, model=None, args: PruningTrainingArguments | None = None, **kwargs):
        if not isinstance(args, PruningTrainingArguments):
            raise ValueError(f"args must be a PruningTrainingArguments, got {type(args).__name__}")
        super().__init__(model=model, args=args, **kwargs)
        self._setup_pruning()
