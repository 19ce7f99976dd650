"""Why does movement pruning collapse in the pruning benchmark? Two measurements on the tweets teacher.

Usage: python -m benchmarks.movement_diagnostic --part oneshot|trajectory [--method movement] [--sparsity 0.5]
  oneshot:    gradients of K training batches on a copy of the teacher (no weight update); prune once with each
              importance (and at random) and evaluate at once. Also the mean |W| of what each importance removes.
  trajectory: the benchmark's arm (CompressionTrainer, 125 steps by default) with test accuracy after every mask
              update; --student pretrained, --epochs and --pruning-start try Sanh et al.'s regime (scores
              accumulated over a warm-up before the first mask).
Writes benchmarks/results/movement-diagnostic-<part>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import torch
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, TrainerCallback

from hf_compress import select_targets
from hf_compress.evaluation.measure import linear_sparsity
from hf_compress.methods.pruning.masks import update_masks
from hf_compress.methods.pruning.scores import Importance

from .common import (
    accuracy,
    compress_teacher_copy,
    pretrained_student,
    run_info,
    teacher_path,
    tweets_tokenized,
)

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def gradient_scores(model, data, tokenizer, batches: int) -> dict[str, dict[str, torch.Tensor]]:
    """Accumulate each importance over `batches` training batches of cross-entropy gradients, weights fixed."""
    targets = select_targets(model)
    importances = {m: Importance(m, targets) for m in ("movement", "taylor", "magnitude")}
    collator = DataCollatorWithPadding(tokenizer)
    train = data["train"].shuffle(seed=1000)
    model.train()
    for b in range(batches):
        rows = train.select(range(32 * b, 32 * (b + 1)))
        batch = collator([rows[i] for i in range(32)])  # renames label to labels
        model.zero_grad()
        model(**batch).loss.backward()
        for importance in importances.values():
            importance.accumulate()
    model.zero_grad()
    model.eval()
    scores = {m: imp.current() for m, imp in importances.items()}
    generator = torch.Generator().manual_seed(0)
    scores["random"] = {n: torch.rand(w.shape, generator=generator) for n, w in targets.items()}
    return scores


def oneshot(opts) -> dict:
    """Prune a copy of the teacher once from K batches of scores; accuracy and |W| of what was removed."""
    data, tokenizer = tweets_tokenized()
    test = data["test"].select(range(opts.n_test))
    rows = []
    for batches in opts.batches:
        model = AutoModelForSequenceClassification.from_pretrained(teacher_path())
        scores = gradient_scores(model, data, tokenizer, batches)
        targets = select_targets(model)
        original = {n: w.detach().clone() for n, w in targets.items()}
        mean_abs = torch.cat([w.abs().flatten() for w in original.values()]).mean().item()
        for sparsity in opts.sparsities:
            for method, score in scores.items():
                masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in targets.items()}
                masks = update_masks(score, masks, sparsity, "global")
                removed = torch.cat([original[n][~m].abs() for n, m in masks.items()])
                with torch.no_grad():
                    for n, w in targets.items():
                        w.copy_(original[n] * masks[n])
                row = {
                    "batches": batches,
                    "sparsity": sparsity,
                    "method": method,
                    "accuracy": accuracy(model, test, tokenizer),
                    "removed_mean_abs_over_mean_abs": removed.mean().item() / mean_abs,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        del model
    return {"n_test": opts.n_test, "rows": rows}


class _EvalOnMaskUpdate(TrainerCallback):
    """Test accuracy whenever the encoder's sparsity has changed since the last look, and at the end."""

    def __init__(self, test, tokenizer):
        self.test, self.tokenizer = test, tokenizer
        self.last, self.rows = -1.0, []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        sparsity = linear_sparsity(model, ".encoder.")
        if sparsity != self.last or state.global_step == state.max_steps:
            self.last = sparsity
            row = {
                "step": state.global_step,
                "sparsity": sparsity,
                "accuracy": accuracy(model, self.test, self.tokenizer),
            }
            model.train()
            self.rows.append(row)
            print(json.dumps(row), flush=True)


def trajectory(opts) -> dict:
    """The pruning benchmark's arm with test accuracy after every mask update."""
    data, tokenizer = tweets_tokenized()
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path())
    probe = _EvalOnMaskUpdate(data["test"].select(range(opts.n_test)), tokenizer)
    with tempfile.TemporaryDirectory() as final:
        compress_teacher_copy(
            teacher,
            data,
            tokenizer,
            final,
            opts.n_train,
            opts.epochs,
            cache={},
            student=pretrained_student(teacher) if opts.student == "pretrained" else None,
            callbacks=[probe],
            pruning_method=opts.method,
            target_sparsity=opts.sparsity,
            pruning_start=opts.pruning_start,
            pruning_end=opts.pruning_end,
            pruning_frequency=opts.frequency,
        )
    return {
        "method": opts.method,
        "student": opts.student,
        "sparsity": opts.sparsity,
        "pruning_start": opts.pruning_start,
        "pruning_end": opts.pruning_end,
        "pruning_frequency": opts.frequency,
        "epochs": opts.epochs,
        "n_train": opts.n_train,
        "n_test": opts.n_test,
        "rows": probe.rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", choices=["oneshot", "trajectory"], required=True)
    parser.add_argument("--batches", type=int, nargs="+", default=[17, 125], help="oneshot: gradient batches")
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.1, 0.5], help="oneshot")
    parser.add_argument("--method", default="movement", help="trajectory: pruning_method")
    parser.add_argument("--sparsity", type=float, default=0.5, help="trajectory: target_sparsity")
    parser.add_argument("--pruning-start", type=float, default=0.1, help="trajectory: pruning_start")
    parser.add_argument("--pruning-end", type=float, default=0.7, help="trajectory: pruning_end")
    parser.add_argument("--frequency", type=int, default=5, help="trajectory: pruning_frequency")
    parser.add_argument("--epochs", type=float, default=1.0, help="trajectory: epochs over --n-train tweets")
    parser.add_argument("--student", choices=["teacher-copy", "pretrained"], default="teacher-copy")
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--out")
    opts = parser.parse_args()
    result = {**run_info(), **(oneshot(opts) if opts.part == "oneshot" else trajectory(opts))}
    out = opts.out or os.path.join(RESULTS, f"movement-diagnostic-{opts.part}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
