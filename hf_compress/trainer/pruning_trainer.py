"""PruningTrainer: Trainer that prunes weights and FFN neurons by gradient-based importance on a cubic schedule."""

from __future__ import annotations

import json
import logging
import os

from safetensors.torch import load_file, save_file
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..methods.ffn_pruning.pruner import FFNPruner
from ..methods.pruning.callback import PruningCallback
from ..methods.pruning.config import PruningTrainingArguments
from ..methods.pruning.heads import HeadImportance
from ..methods.pruning.pruner import Pruner, RemainingPruner, format_layer_table, select_targets
from ..provenance import record
from .data_checks import check_trainer_datasets
from .saving import FinalizeMixin
from .trainer_options import refuse_model_init

logger = logging.getLogger(__name__)
PRUNING_STATE_FILE = "pruning_state.safetensors"
PRUNING_REPORT_FILE = "pruning_report.json"


class PruningMixin:
    """Adds pruners to a Trainer subclass: masks in checkpoints and in best-model loading, sparsity in logs, and at
    finalization the masks baked, pruned FFN neurons sliced away, provenance and the pruning report."""

    pruner: Pruner | None = None  # single weights (target_sparsity)
    ffn_pruner: FFNPruner | None = None  # whole FFN neurons (ffn_sparsity)
    head_importance: HeadImportance | None = None  # reported, never pruned

    def _setup_pruning(self) -> None:
        """Create the pruners over the model's targets; no-op when target_sparsity and ffn_sparsity are both 0."""
        args = self.args
        if not args.prunes or self.head_importance is not None:
            return  # off, or already set up (the pruning and FFN pruning methods share this setup)
        schedule = args.pruning_schedule()
        if args.ffn_sparsity > 0:
            # Checks that the model has FFN layers and that ffn_sparsity leaves neurons, before any training.
            self.ffn_pruner = FFNPruner(
                self.model, sparsity=args.ffn_sparsity, method=args.ffn_pruning_method, schedule=schedule
            )
        if args.target_sparsity > 0:
            targets = select_targets(self.model, args.prune_embeddings, args.prune_pooler, args.prune_classifier)
            unstructured = dict(
                method=args.pruning_method,
                target_sparsity=args.target_sparsity,
                schedule=schedule,
                scope=args.pruning_scope,
            )
            if self.ffn_pruner is None:
                self.pruner = Pruner(targets, **unstructured)
            else:
                self.pruner = RemainingPruner(targets, ffn=self.ffn_pruner, **unstructured)
        self.head_importance = HeadImportance(self.model)
        self.add_callback(PruningCallback(self._pruners(), self.head_importance, schedule))

    def _pruners(self) -> list[Pruner | FFNPruner]:
        return [p for p in (self.ffn_pruner, self.pruner) if p is not None]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the current sparsities and scheduled targets to every training log."""
        if not any(k.startswith("eval_") for k in logs) and not self._finalized:
            if self.pruner is not None:
                logs = {**logs, "sparsity": self.pruner.sparsity(), "sparsity_target": self.pruner.current_target}
            if self.ffn_pruner is not None:
                ffn = self.ffn_pruner
                logs = {
                    **logs,
                    "ffn_sparsity": ffn.sparsity(),
                    "ffn_sparsity_target": ffn.current_target,
                    "ffn_neurons": ffn.kept(),
                }
        super().log(logs, start_time)

    def _pruning_state(self) -> dict:
        state = {}
        for part in (*self._pruners(), self.head_importance):
            state.update(part.state_dict())
        return state

    def _save_checkpoint(self, model, trial):
        """Trainer's checkpoint plus masks and importance scores, so resume continues the schedule exactly."""
        super()._save_checkpoint(model, trial)
        if self.head_importance is not None and self.args.should_save:
            folder = os.path.join(
                self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            )
            save_file(self._pruning_state(), os.path.join(folder, PRUNING_STATE_FILE))

    def _load_pruning_state(self, checkpoint: str) -> None:
        """Masks, scores, held values and schedule position of a checkpoint this run's pruners wrote."""
        if self.head_importance is None:
            return
        path = os.path.join(checkpoint, PRUNING_STATE_FILE)
        if not os.path.exists(path):
            raise ValueError(f"resume_from_checkpoint={checkpoint!r} has no {PRUNING_STATE_FILE}")
        state = load_file(path)
        if self.ffn_pruner is not None and "ffn.score_steps" not in state:
            raise ValueError(
                f"resume_from_checkpoint={checkpoint!r} holds no FFN pruning state; it was not written by a run "
                "with ffn_sparsity > 0"
            )
        for part in (*self._pruners(), self.head_importance):
            part.load_state_dict(state)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Trainer's resume plus the pruning state."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self._load_pruning_state(resume_from_checkpoint)

    def _load_best_model(self) -> None:
        """Trainer's best-model loading plus that checkpoint's masks, so the final model is the best one as it was."""
        super()._load_best_model()
        self._load_pruning_state(self.state.best_model_checkpoint)

    _pruning_finalized = False

    def _finalize_pruning(self) -> None:
        """Pruning's part of finalize(), once for both pruning methods: bake the masks (zeros in place, loadable
        without us), slice pruned FFN neurons away, record the pruning."""
        if self.head_importance is None or self._pruning_finalized:
            return
        self._pruning_finalized = True
        for pruner in self._pruners():
            pruner.apply_masks()
        if self.ffn_pruner is not None:
            keep = self.ffn_pruner.slice_()
            if isinstance(self.pruner, RemainingPruner):
                self.pruner.sliced_(keep)
        record(self.model.config, "pruning", self._pruning_provenance())

    def _write_final_files(self, output_dir: str) -> None:
        """pruning_report.json: per-layer sparsity, FFN sizes and per-head importance; the table goes to the log."""
        super()._write_final_files(output_dir)
        if self.head_importance is None:
            return
        report = {}
        if self.pruner is not None:
            rows = self.pruner.layer_report()
            report.update(sparsity=self.pruner.sparsity(), layers=rows)
            print(format_layer_table(rows))
        if self.ffn_pruner is not None:
            report["ffn"] = self.ffn_pruner.report()
            sizes, n_layers = report["ffn"]["intermediate_size"], len(self.ffn_pruner.layers)
            logger.info(
                "FFN: intermediate size %s -> %s in %s distinct layers", sizes["before"], sizes["after"], n_layers
            )
        report["heads"] = self.head_importance.report()
        with open(os.path.join(output_dir, PRUNING_REPORT_FILE), "w") as f:
            json.dump(report, f, indent=2)

    def _pruning_provenance(self) -> dict:
        """The pruning arguments and the sparsity reached, for config.json."""
        a = self.args
        details = {}
        if self.pruner is not None:
            details.update(
                method=a.pruning_method,
                target_sparsity=a.target_sparsity,
                scope=a.pruning_scope,
                sparsity=round(self.pruner.sparsity(), 6),
            )
        if self.ffn_pruner is not None:
            details["ffn"] = {
                "method": a.ffn_pruning_method,
                "ffn_sparsity": a.ffn_sparsity,
                "intermediate_size": self.ffn_pruner.report()["intermediate_size"],
            }
        details["schedule"] = {"start": a.pruning_start, "end": a.pruning_end, "frequency": a.pruning_frequency}
        return details


class PruningTrainer(PruningMixin, FinalizeMixin, Trainer):
    """Trainer with movement, Taylor or magnitude pruning of weights and/or FFN neurons (Sanh et al. 2020; Molchanov
    et al. 2019; Zhu & Gupta 2017)."""

    _tag_names = ["hf_compress", "pruning"]

    def __init__(self, model=None, args: PruningTrainingArguments | None = None, **kwargs):
        if not isinstance(args, PruningTrainingArguments):
            raise ValueError(f"args must be a PruningTrainingArguments, got {type(args).__name__}")
        refuse_model_init(type(self).__name__, kwargs)
        if model is not None and getattr(model, "base_model", None) is model:
            from ..checks import invalid

            raise invalid(
                "model", type(model).__name__, f"a model with a task head (this {model.config.model_type} base model "
                "has none, so no loss to prune by): prune a sentence-embedding model with CompressionTrainer, whose "
                "teacher's embeddings give the loss",
            )  # fmt: skip
        if model is not None:
            check_trainer_datasets(model, kwargs.get("train_dataset"), kwargs.get("eval_dataset"))
        super().__init__(model=model, args=args, **kwargs)
        self.model.add_model_tags(self._tag_names)  # transformers 5 does not read _tag_names itself
        self._after_init()
