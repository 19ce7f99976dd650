"""NER (CoNLL-2003) and extractive QA (SQuAD v1.1) on real data, through the product's own recipe path.

Every arm is one `hf-compress <command> <recipe> <flags>` run (in-process, the same parser and job as the CLI), so the
figures are what a user gets. The teacher is the packaged all-MiniLM-L6-v2 fine-tuned on the task by the first arm
(seed 0, `finetune_teacher: true`) and reused by the others from its saved folder. Each run's report evaluates teacher
and student on the same examples and times them interleaved, one thread, at batch 1 and 32.

Arms (per seed):
  distilled   3-layer student, KD (T=2, alpha=0.5) + CE, `distill`
  alone       the same student and data with alpha=0 (CE only: the student trained without the teacher), `distill`
  ffn50-int8  (CoNLL) the distilled student with 50% of FFN neurons pruned during training and int8 at the end,
              `compress`
  <arm>-full (CoNLL) the same arms on the whole train split (14,041 sentences) instead of 6,000
  distilled-hidden-full (CoNLL) distilled-full plus the hidden-state MSE (weight 1.0, the default layer map)
  distilled-a09-full (CoNLL) distilled-full with alpha=0.9 (KD weighted 0.9, CE 0.1) instead of 0.5
  distilled-2ep, distilled-3ep (SQuAD) distilled with two or three epochs over the same windows instead of one
Extra figures: the teacher's int8 (`quantize_`) against its fp32 (SQuAD), and the step-time ratio of
DistillationTrainer to a plain Trainer on QA batches (`--part step-time`).

Usage:
  python -m hf_compress.task_data                                  # once: the data cache
  python -m benchmarks.tasks --task conll2003 --seeds 0 1 2
  python -m benchmarks.tasks --task squad --seeds 0 1 2
  python -m benchmarks.tasks --task squad --part step-time [--steps 20]
Results: benchmarks/results/tasks-<task>.json (one entry per run, appended as runs finish).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import time

import torch

from hf_compress.cli.main import RECIPE_COMMANDS, build_parser
from hf_compress.cli.recipe import RecipeArguments, parse_recipe
from hf_compress.cli.train import run_recipe

from .common import CACHE, machine, run_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
NAN = float("nan")

# What differs from the quickstart recipes: more training data (what fits this machine's time: a MiniLM step on CoNLL
# batches took ~1.4 s here), the whole CoNLL test split, 2,000 SQuAD dev questions. Everything else (learning rates,
# batch size, T, alpha, max_length) is the recipe's.
TASKS = {
    "conll2003": {
        "recipe": "recipes/conll2003-quickstart.yaml",
        "flags": {
            "teacher_max_train_samples": 14041,  # the whole train split
            "teacher_num_train_epochs": 1,
            "max_train_samples": 6000,
            "num_train_epochs": 1,
            "max_eval_samples": 3453,  # the whole test split
        },
        "arms": ("distilled", "alone", "ffn50-int8"),
    },
    "squad": {
        "recipe": "recipes/squad-quickstart.yaml",
        "flags": {
            "teacher_max_train_samples": 4000,  # windows (about 3,700 questions)
            "teacher_num_train_epochs": 1,
            "max_train_samples": 4000,
            "num_train_epochs": 1,
            "max_eval_samples": 2000,  # dev questions
        },
        "arms": ("distilled", "alone"),
    },
}
ARMS = {
    "distilled": ("distill", {}),
    "alone": ("distill", {"alpha": 0.0}),
    "ffn50-int8": ("compress", {"ffn_sparsity": 0.5, "quantization": "dynamic-int8"}),
    # The longer schedule: the students on the whole CoNLL train split (14,041 sentences) instead of 6,000.
    "distilled-full": ("distill", {"max_train_samples": 14041}),
    "alone-full": ("distill", {"alpha": 0.0, "max_train_samples": 14041}),
    "ffn50-int8-full": ("compress", {"ffn_sparsity": 0.5, "quantization": "dynamic-int8", "max_train_samples": 14041}),
    # Whether the teacher's hidden states add what its soft labels do not, on the whole split (MSE to teacher layers
    # 1, 3, 5 after student layers 0, 1, 2: the default mapping).
    "distilled-hidden-full": (
        "distill",
        {"max_train_samples": 14041, "hidden_loss_weight": 1.0, "cache_teacher_logits": False},
    ),
    # More weight on the teacher's soft labels (alpha 0.9 instead of 0.5), on the whole split.
    "distilled-a09-full": ("distill", {"max_train_samples": 14041, "alpha": 0.9}),
    # (SQuAD) the longer schedule: two epochs over the same 4,000 windows; the logit cache (the recipe's) serves the
    # second epoch's soft labels without the teacher.
    "distilled-2ep": ("distill", {"num_train_epochs": 2}),
    # (CoNLL) two epochs over the whole train split, distilled and alone: the same schedule for both.
    "distilled-2ep-full": ("distill", {"max_train_samples": 14041, "num_train_epochs": 2}),
    "alone-2ep-full": ("distill", {"alpha": 0.0, "max_train_samples": 14041, "num_train_epochs": 2}),
    "ffn50-int8-2ep-full": (
        "compress",
        {"ffn_sparsity": 0.5, "quantization": "dynamic-int8", "max_train_samples": 14041, "num_train_epochs": 2},
    ),
    "distilled-3ep": ("distill", {"num_train_epochs": 3}),
}


def run_arm(task: str, arm: str, seed: int, out: str, teacher_dir: str | None, teacher_epochs: int = 1) -> dict:
    """One recipe run; returns its report rows (teacher first) and wall time. `teacher_epochs` only matters for the
    run that fine-tunes the teacher (teacher_dir None)."""
    spec = TASKS[task]
    command, arm_flags = ARMS[arm]
    flags = {**spec["flags"], **arm_flags, "seed": seed, "output_dir": out, "overwrite_output": True}
    flags["teacher_num_train_epochs"] = teacher_epochs
    flags["disable_tqdm"] = True
    if teacher_dir is not None:
        flags.update(teacher_model_name_or_path=teacher_dir, finetune_teacher=False)
    recipe, args = parsed_recipe(task, command, flags)
    start = time.time()
    result = run_recipe(recipe, args, command)
    return {
        "task": task,
        "arm": arm,
        "seed": seed,
        "teacher_epochs": teacher_epochs,
        "machine": machine(),
        "seconds": round(time.time() - start),
        "rows": result["report"],
    }


def parsed_recipe(task: str, command: str, flags: dict) -> tuple:
    """(recipe, training arguments) of the task's recipe with `flags` on top, as `hf-compress` parses them."""
    spec = TASKS[task]
    argv = [x for k, v in flags.items() for x in (f"--{k}", str(v))]
    subparser = build_parser()._subparsers._group_actions[0].choices[command]
    return parse_recipe(
        os.path.join(ROOT, spec["recipe"]), argv, RecipeArguments, RECIPE_COMMANDS[command][0], parser=subparser
    )


def cached_teacher_and_data(task: str, teacher_dir: str) -> tuple:
    """The benchmark's recipe, task, fine-tuned teacher, its tokenizer and the raw splits."""
    from transformers import AutoTokenizer

    from hf_compress import get_task

    recipe, _ = parsed_recipe(task, "distill", TASKS[task]["flags"])
    task_obj = get_task(recipe.task)
    teacher = task_obj.auto_class.from_pretrained(teacher_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    raw, _ = task_obj.load(recipe)
    return recipe, task_obj, teacher, tokenizer, raw


def teacher_int8(task: str, teacher_dir: str) -> dict:
    """The fine-tuned teacher against its int8 copy (`quantize_`, per-batch activation ranges), same examples."""

    from hf_compress import quantize_
    from hf_compress.evaluation.table import build_report

    recipe, task_obj, teacher, tokenizer, raw = cached_teacher_and_data(task, teacher_dir)
    data = task_obj.prepare_eval(raw, tokenizer, recipe)
    q = quantize_(copy.deepcopy(teacher))
    rows = build_report({"teacher": (teacher, teacher_dir), "teacher int8": (q, None)}, tokenizer, data, task=task_obj)
    return {"task": task, "arm": "teacher-int8", "rows": [r.__dict__ for r in rows]}


def step_time(task: str, teacher_dir: str, steps: int = 20) -> dict:
    """Median optimizer-step time of DistillationTrainer (3-layer student), with the float teacher and with
    `teacher_quantization="int8"`, vs Trainer on the student alone.

    All train the same student on the same QA windows; they alternate in blocks of 5 steps so that load on this
    shared machine falls on all alike. No logit cache: every step runs the teacher (as the first epoch does).
    """
    from transformers import Trainer, TrainingArguments

    from benchmarks.common import StepTimer
    from hf_compress import DistillationTrainer, DistillationTrainingArguments, create_student

    recipe, task_obj, teacher, tokenizer, raw = cached_teacher_and_data(task, teacher_dir)
    recipe.max_train_samples = 16 * steps
    train = task_obj.prepare_splits(raw, tokenizer, recipe)["train"].select(range(16 * 5))
    common = dict(
        per_device_train_batch_size=16, max_steps=5, report_to="none", save_strategy="no", disable_tqdm=True, seed=0
    )
    times = {"plain": [], "distillation": [], "distillation-int8-teacher": []}
    students = {k: create_student(teacher, num_hidden_layers=3) for k in times}
    for _block in range(steps // 5):
        for kind in times:
            timer = StepTimer()
            out = os.path.join(CACHE, "step-time", kind)
            if kind == "plain":
                trainer = Trainer(
                    model=students[kind], args=TrainingArguments(output_dir=out, **common), train_dataset=train,
                    data_collator=task_obj.collator(tokenizer), callbacks=[timer],
                )  # fmt: skip
            else:
                quantization = "int8" if kind.endswith("int8-teacher") else None
                args = DistillationTrainingArguments(
                    output_dir=out, temperature=2.0, alpha=0.5, teacher_quantization=quantization, **common
                )
                trainer = DistillationTrainer(
                    model=students[kind], teacher_model=teacher, args=args, train_dataset=train,
                    data_collator=task_obj.collator(tokenizer), callbacks=[timer],
                )  # fmt: skip
            trainer.train()
            times[kind] += timer.times[1:]  # the first step of a block pays for the optimizer's creation
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {
        "task": task,
        "arm": "step-time",
        "batch": 16,
        "max_length": recipe.max_length,
        "median_step_seconds": medians,
        "ratio": medians["distillation"] / medians["plain"],
        "ratio_int8_teacher": medians["distillation-int8-teacher"] / medians["plain"],
        "threads": torch.get_num_threads(),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }


def label(run: dict, reference: float) -> str:
    """A run's row name in the table: its arm, and its teacher when that is not the table's (`reference` is the
    first run's teacher score): runs distilled from different teachers are different rows."""
    teacher = run["rows"][0]["score"]
    if abs(teacher - reference) < 1e-9:
        return run["arm"]
    return f"{run['arm']} (teacher {teacher:.4f}, {run.get('teacher_epochs', 1)} epoch(s))"


def table(path: str) -> str:
    """Markdown of one task's runs: per arm, mean ± sd over seeds of the primary metric, its share of the teacher's
    (each run's own teacher row), size and speed ratios; then the extra parts (teacher int8, step time)."""
    runs = json.load(open(path))["runs"]
    lines = [
        "| model | seeds | score (mean ± sd) | of teacher | other scores | MB | smaller | faster b1 | faster b32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    teacher = next(r["rows"][0] for r in runs if "seed" in r)
    others = [k for k in teacher["metrics"] if k != teacher["metric"] and not k.startswith("per_")]
    mean_sd = lambda xs: f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else f"{xs[0]:.4f}"  # noqa: E731
    fmt = lambda row: ", ".join(f"{k} {row['metrics'][k]:.4f}" for k in others if k in row["metrics"])  # noqa: E731
    lines.append(
        f"| teacher | — | {teacher['score']:.4f} | 100% | {fmt(teacher)} | {teacher['bytes_on_disk'] / 1e6:.1f} "
        "| 1.00× | 1.00× | 1.00× |"
    )
    name = {id(r): label(r, teacher["score"]) for r in runs if "seed" in r}
    for arm in dict.fromkeys(name.values()):
        rows = [r["rows"][-1] for r in runs if name.get(id(r)) == arm]
        teachers = [r["rows"][0] for r in runs if name.get(id(r)) == arm]
        scores = [row["score"] for row in rows]
        share = statistics.mean(row["score_vs_reference"] for row in rows)
        size = statistics.mean(t["bytes_on_disk"] / row["bytes_on_disk"] for t, row in zip(teachers, rows))
        speed = {
            b: statistics.mean(row["speedup"].get(b, float("nan")) for row in rows) for b in ("batch_1", "batch_32")
        }
        lines.append(
            f"| {arm} | {len(rows)} | {mean_sd(scores)} | {share:.1%} | {fmt(rows[-1])} (last seed) | "
            f"{statistics.mean(r['bytes_on_disk'] for r in rows) / 1e6:.1f} | {size:.2f}× | {speed['batch_1']:.2f}× | "
            f"{speed['batch_32']:.2f}× |"
        )
    for extra in (r for r in runs if "seed" not in r):
        if extra["arm"] == "teacher-int8":
            fp32, q = extra["rows"]
            lines.append(
                f"| teacher int8 | — | {q['score']:.4f} | {q['score_vs_reference']:.1%} | {fmt(q)} | "
                f"{q['bytes_on_disk'] / 1e6:.1f} | {fp32['bytes_on_disk'] / q['bytes_on_disk']:.2f}× | "
                f"{q['speedup'].get('batch_1', NAN):.2f}× | {q['speedup'].get('batch_32', NAN):.2f}× |"
            )
        elif extra["arm"] == "step-time":
            m = extra["median_step_seconds"]
            line = (
                f"\nStep time (batch {extra['batch']}, max_length {extra['max_length']}, "
                f"{extra['threads']} thread(s)): DistillationTrainer {m['distillation']:.3f} s, plain Trainer "
                f"{m['plain']:.3f} s, ratio **{extra['ratio']:.2f}**"
            )
            if "ratio_int8_teacher" in extra:
                line += (
                    f"; with teacher_quantization='int8' {m['distillation-int8-teacher']:.3f} s, ratio "
                    f"**{extra['ratio_int8_teacher']:.2f}**"
                )
            if "machine" in extra:
                line += f" ({extra['machine']}, {extra['date']})"
            lines.append(line + ".")
    return "\n".join(lines)


def append(path: str, entry: dict) -> None:
    """Add one result to the task's JSON file (kept across invocations, so a stopped run loses nothing)."""
    results = json.load(open(path)) if os.path.exists(path) else {**run_info(), "runs": []}
    results["runs"].append(entry)
    results["last_command"] = run_info()["command"]
    with open(path, "w") as f:
        json.dump(results, f, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=list(TASKS), required=True)
    parser.add_argument("--part", choices=["runs", "teacher-int8", "step-time", "table"], default="runs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=None, choices=list(ARMS), help="default: the task's arms")
    parser.add_argument("--out", default=os.path.join(CACHE, "tasks-bench"))
    parser.add_argument("--steps", type=int, default=20, help="--part step-time: steps per trainer (blocks of 5)")
    parser.add_argument(
        "--teacher-epochs",
        type=int,
        default=1,
        help="epochs of teacher fine-tuning; each value has its own cached teacher (teacher-run, teacher-run-<N>ep)",
    )
    opts = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    path = os.path.join(RESULTS, f"tasks-{opts.task}.json")
    run_dir = "teacher-run" if opts.teacher_epochs == 1 else f"teacher-run-{opts.teacher_epochs}ep"
    teacher_dir = os.path.join(opts.out, opts.task, run_dir, "teacher")
    if opts.part == "table":
        print(table(path))
        return
    if opts.part == "teacher-int8":
        append(path, teacher_int8(opts.task, teacher_dir))
        return
    if opts.part == "step-time":
        append(path, step_time(opts.task, teacher_dir, opts.steps))
        return
    for seed in opts.seeds:
        for arm in opts.arms or TASKS[opts.task]["arms"]:
            have_teacher = os.path.exists(os.path.join(teacher_dir, "config.json"))
            suffix = "" if opts.teacher_epochs == 1 else f"-teacher{opts.teacher_epochs}ep"
            out = os.path.join(opts.out, opts.task, run_dir if not have_teacher else f"{arm}-seed{seed}{suffix}")
            if not have_teacher and ARMS[arm][1].get("alpha") == 0.0:
                raise SystemExit(f"the first run fine-tunes the teacher; {arm} uses none: run a distilled arm first")
            entry = run_arm(opts.task, arm, seed, out, teacher_dir if have_teacher else None, opts.teacher_epochs)
            append(path, entry)
            student = entry["rows"][-1]
            print(f"{opts.task} {arm} seed {seed}: {student['metric']}={student['score']:.4f} "
                  f"({student['score_vs_reference']:.2%} of teacher), {entry['seconds']} s", flush=True)  # fmt: skip
            if out.endswith(run_dir):
                continue
            shutil.rmtree(out, ignore_errors=True)  # keep the cache small; the figures are in the JSON


if __name__ == "__main__":
    main()
