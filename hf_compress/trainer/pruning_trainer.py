"""PruningTrainer: Trainer that prunes weights and FFN neurons by gradient-based importance on a cubic schedule."""

from __future__ import annotations

import json
import logging
import os

from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..provenance import record
from ..pruning.pruner import Pruner, format_layer_table, select_targets
from ..pruning.structured import FFNPruner, HeadImportance, RemainingPruner
from .pruning_args import PruningTrainingArguments
from .saving import AtomicSaveMixin, replace_pickled_args

logger = logging.getLogger(__name__)
PRUNING_STATE_FILE = "pruning_state.safetensors"
PRUNING_REPORT_FILE = "pruning_report.json"


class _PruningCallback(TrainerCallback):
    """Drives the pruners from Trainer's loop: score before each optimizer step, mask after it."""

    def __init__(self, pruners: list[Pruner | FFNPruner], heads: HeadImportance):
        self.pruners = pruners  # the FFN pruner first: unstructured pruning then counts what it leaves
        self.heads = heads

    def on_train_begin(self, args, state, control, **kwargs):
        for pruner in self.pruners:
            pruner.set_horizon(state.max_steps)
            pruner.apply_masks()  # a resumed run starts from its checkpoint's masks

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        # Gradients are already all-reduced by DDP here, so every rank computes the same scores and masks.
        self.heads.before_optimizer_step()
        for pruner in self.pruners:
            pruner.before_optimizer_step()

    def on_optimizer_step(self, args, state, control, **kwargs):
        for pruner in self.pruners:
            pruner.apply_masks()

    def on_step_end(self, args, state, control, **kwargs):
        for pruner in self.pruners:
            pruner.on_step_end(state.global_step)


class PruningMixin:
    """Adds pruners to a Trainer subclass: masks in checkpoints, sparsity in logs, a report with the final save."""

    pruner: Pruner | None = None  # single weights (target_sparsity)
    ffn_pruner: FFNPruner | None = None  # whole FFN neurons (ffn_sparsity)
    head_importance: HeadImportance | None = None  # reported, never pruned

    def _setup_pruning(self) -> None:
        """Create the pruners over the model's targets; no-op when target_sparsity and ffn_sparsity are both 0."""
        args = self.args
        if args.target_sparsity == 0 and args.ffn_sparsity == 0:
            return
        schedule = (args.pruning_start, args.pruning_end, args.pruning_frequency)
        if args.ffn_sparsity > 0:
            # Checks that the model has FFN layers and that ffn_sparsity leaves neurons, before any training.
            self.ffn_pruner = FFNPruner(self.model, args.ffn_sparsity, args.ffn_pruning_method, *schedule)
        if args.target_sparsity > 0:
            targets = select_targets(self.model, args.prune_embeddings, args.prune_pooler, args.prune_classifier)
            unstructured = (args.pruning_method, args.target_sparsity, *schedule, args.pruning_scope)
            if self.ffn_pruner is None:
                self.pruner = Pruner(targets, *unstructured)
            else:
                self.pruner = RemainingPruner(targets, self.ffn_pruner, *unstructured)
        self.head_importance = HeadImportance(self.model)
        self.add_callback(_PruningCallback(self._pruners(), self.head_importance))

    def _pruners(self) -> list[Pruner | FFNPruner]:
        return [p for p in (self.ffn_pruner, self.pruner) if p is not None]

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the current sparsities and scheduled targets to every training log."""
        if not any(k.startswith("eval_") for k in logs):
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

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """Trainer's resume plus the pruning state."""
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, PRUNING_STATE_FILE)
        if self.head_importance is not None:
            if not os.path.exists(path):
                raise ValueError(f"resume_from_checkpoint={resume_from_checkpoint!r} has no {PRUNING_STATE_FILE}")
            state = load_file(path)
            if self.ffn_pruner is not None and "ffn.score_steps" not in state:
                raise ValueError(
                    f"resume_from_checkpoint={resume_from_checkpoint!r} holds no FFN pruning state; it was not "
                    "written by a run with ffn_sparsity > 0"
                )
            for part in (*self._pruners(), self.head_importance):
                part.load_state_dict(state)

    def _save(self, output_dir: str | None = None, state_dict=None) -> None:
        """Trainer's save; a final (non-checkpoint) save bakes the masks, slices pruned FFN neurons away, records
        the pruning and writes the report.

        The slicing happens in place: after a final save, `trainer.model` is the smaller model that was saved (the
        optimizer still holds the old FFN tensors, so training does not continue from there).
        """
        output_dir = output_dir or self.args.output_dir
        checkpoint = PREFIX_CHECKPOINT_DIR in os.path.basename(os.path.normpath(output_dir))
        final = self.head_importance is not None and not checkpoint
        if final:
            for pruner in self._pruners():
                pruner.apply_masks()  # bake: the saved weights hold zeros in place, loadable without us
            if self.ffn_pruner is not None:
                keep = self.ffn_pruner.slice_()
                if isinstance(self.pruner, RemainingPruner):
                    self.pruner.sliced_(keep)
            record(self.model.config, "pruning", self._pruning_provenance())
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            replace_pickled_args(output_dir, self.args)
            if final:
                self._write_report(output_dir)

    def _write_report(self, output_dir: str) -> None:
        """pruning_report.json: per-layer sparsity, FFN sizes and per-head importance; the table goes to stdout."""
        report = {}
        if self.pruner is not None:
            rows = self.pruner.layer_report()
            report.update(sparsity=self.pruner.sparsity(), layers=rows)
            print(format_layer_table(rows))
        if self.ffn_pruner is not None:
            report["ffn"] = self.ffn_pruner.report()
            sizes, n_layers = report["ffn"]["intermediate_size"], len(self.ffn_pruner.layers)
            print(f"FFN: intermediate_size {sizes['before']} -> {sizes['after']} in {n_layers} distinct layers")
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
            report = self.ffn_pruner.report()
            details["ffn"] = {
                "method": a.ffn_pruning_method,
                "ffn_sparsity": a.ffn_sparsity,
                "intermediate_size": report["intermediate_size"],
            }
        details["schedule"] = {"start": a.pruning_start, "end": a.pruning_end, "frequency": a.pruning_frequency}
        return details


class PruningTrainer(PruningMixin, AtomicSaveMixin, Trainer):
    """Trainer with movement, Taylor or magnitude pruning of weights and/or FFN neurons (Sanh et al. 2020; Molchanov
    et al. 2019; Zhu & Gupta 2017)."""

    _tag_names = ["hf_compress", "pruning"]

    def __init__(self, model=None, args: PruningTrainingArguments | None = None, **kwargs):
        if not isinstance(args, PruningTrainingArguments):
            raise ValueError(f"args must be a PruningTrainingArguments, got {type(args).__name__}")
        super().__init__(model=model, args=args, **kwargs)
        self._setup_pruning()
        self.model.add_model_tags(self._tag_names)  # transformers 5 does not read _tag_names itself
