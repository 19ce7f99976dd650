"""The headline pipeline on tweets, stage by stage: 3-layer student → distilled → + ALBERT-style E=128 → + FFN pruning
→ + vocabulary pruning → + int8, beside the fp32 teacher, the int8 teacher and a 3-layer student fine-tuned alone;
and a low-rank branch: the 3-layer student factorised (`low_rank_ratio`, `low_rank_method`) instead of ALBERT-style
and FFN-pruned, distilled, then vocabulary-pruned and int8 (--low-rank-ratio 0 leaves it out).

Usage: python -m benchmarks.pipeline [--quick] [--part train|report|all] [--low-rank-ratio R] [--low-rank-method M]
Every distilled stage is `run_recipe` on recipes/tweets-full.yaml with the later stages switched off, on the teacher
cached by benchmarks/common.py; the last two stages are `prune_vocabulary_` and `quantize_pretrained` on the saved
model (what `prune_vocabulary: true` and `quantization: dynamic-int8` run at the end of the recipe).
The train part saves every model under $HF_COMPRESS_CACHE/pipeline/ and the stage timings to
benchmarks/results/pipeline-stages.json; the report part loads them all, evaluates them on the same test split and
times them side by side (ratios to the fp32 teacher), then writes benchmarks/results/pipeline.{json,md} and
benchmarks/pipeline.png. --quick: 256 training tweets, 300 test tweets.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from hf_compress import (
    CompressionTrainingArguments,
    create_student,
    get_task,
    prune_vocabulary_,
    quantize_pretrained,
)
from hf_compress.cli.recipe import RecipeArguments, parse_recipe
from hf_compress.cli.train import run_recipe, subset
from hf_compress.evaluation.table import build_report, markdown_table, plot_report

from .common import CACHE, run_info, teacher_path, training_args

HERE = os.path.dirname(os.path.abspath(__file__))
RECIPE = os.path.join(os.path.dirname(HERE), "recipes", "tweets-full.yaml")
RESULTS = os.path.join(HERE, "results")
# Each distilled stage switches off what comes after it in the recipe.
STAGES = {
    "3-layer distilled": dict(embedding_size=None, ffn_sparsity=0.0, quantization="none"),
    "+ ALBERT-style E=128": dict(ffn_sparsity=0.0, quantization="none"),
    "+ FFN pruned 50%": dict(quantization="none"),
}
# The low-rank branch (issue: low-rank): the distilled 3-layer student factorised instead of ALBERT-style and
# FFN-pruned (the trainer refuses low-rank with pruning), then the same vocabulary pruning and int8.
LOW_RANK = "3-layer distilled, low-rank {ratio}"
LOW_RANK_STAGES = (LOW_RANK, f"{LOW_RANK} + vocabulary pruned", f"{LOW_RANK} + int8")


def recipe_args(output_dir: str, quick: bool) -> tuple[RecipeArguments, CompressionTrainingArguments]:
    """The recipe on the cached teacher, writing to `output_dir`."""
    argv = ["--teacher_model_name_or_path", teacher_path(), "--finetune_teacher", "false", "--report", "false"]
    argv += ["--output_dir", output_dir, "--overwrite_output", "true"]
    if quick:
        argv += ["--max_train_samples", "256", "--max_eval_samples", "300"]
    return parse_recipe(RECIPE, argv, RecipeArguments, CompressionTrainingArguments)


def prepare_data(recipe: RecipeArguments, tokenizer, seed: int):
    """The recipe's splits tokenised with `tokenizer`, as the recipe job prepares them (`seed`: unused)."""
    task = get_task(recipe.task)
    raw, _ = task.load(recipe)
    return task.prepare_splits(raw, tokenizer, recipe), None


def train_alone(models: str, quick: bool) -> str:
    """The 3-layer student fine-tuned on the labels alone, same data, schedule and optimiser as the recipe."""
    recipe, args = recipe_args(os.path.join(models, "3-layer alone"), quick)
    tokenizer = AutoTokenizer.from_pretrained(teacher_path())
    data, _ = prepare_data(recipe, tokenizer, args.seed)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path())
    student = create_student(teacher, num_hidden_layers=recipe.student_num_hidden_layers)
    plain = TrainingArguments(**training_args(args.output_dir, args.seed, args.num_train_epochs))
    trainer = Trainer(
        model=student,
        args=plain,
        train_dataset=subset(data["train"], recipe.max_train_samples, args.seed),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(args.output_dir)
    return args.output_dir


def low_rank_names(ratio: float) -> list[str]:
    """The low-rank branch's stage names for a rank ratio."""
    return [name.format(ratio=ratio) for name in LOW_RANK_STAGES]


def train_low_rank(models: str, quick: bool, ratio: float, method: str) -> dict:
    """The low-rank branch: distil a factorised 3-layer student, then prune its vocabulary and quantize it."""
    seconds = {}
    trained, pruned, quantized = low_rank_names(ratio)
    recipe, args = recipe_args(os.path.join(models, trained), quick)
    for key, value in dict(embedding_size=None, ffn_sparsity=0.0, quantization="none").items():
        setattr(args, key, value)
    args.low_rank_ratio, args.low_rank_method = ratio, method
    recipe.prune_vocabulary = False
    start = time.time()
    run_recipe(recipe, args)
    seconds[f"{trained} (train)"] = time.time() - start
    start = time.time()
    prune_vocabulary_stage(args.output_dir, os.path.join(models, pruned), quick)
    seconds[f"{pruned} (prune)"] = time.time() - start
    start = time.time()
    quantize_pretrained(os.path.join(models, pruned), os.path.join(models, quantized))
    seconds[f"{quantized} (quantize)"] = time.time() - start
    return seconds


def train_part(models: str, quick: bool) -> dict:
    """Train and save every stage; return wall seconds per stage."""
    seconds = {}
    start = time.time()
    quantize_pretrained(teacher_path(), os.path.join(models, "teacher int8"))
    seconds["teacher int8 (quantize)"] = time.time() - start
    start = time.time()
    train_alone(models, quick)
    seconds["3-layer alone (train)"] = time.time() - start
    previous = None
    for name, switch_off in STAGES.items():
        recipe, args = recipe_args(os.path.join(models, name), quick)
        for key, value in switch_off.items():
            setattr(args, key, value)  # valid values of validated fields: no __post_init__ needed
        recipe.prune_vocabulary = False  # its own stage below
        start = time.time()
        run_recipe(recipe, args)
        seconds[f"{name} (train)"] = time.time() - start
        previous = args.output_dir
        print(json.dumps(seconds), flush=True)
    start = time.time()
    previous = prune_vocabulary_stage(previous, os.path.join(models, "+ vocabulary pruned"), quick)
    seconds["+ vocabulary pruned (prune)"] = time.time() - start
    start = time.time()
    quantize_pretrained(previous, os.path.join(models, "+ int8"))
    seconds["+ int8 (quantize)"] = time.time() - start
    return seconds


def prune_vocabulary_stage(model_dir: str, output_dir: str, quick: bool) -> str:
    """The recipe's `prune_vocabulary: true` step on a saved stage: keep the tokens the train split uses."""
    recipe, args = recipe_args(output_dir, quick)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    data, _ = prepare_data(recipe, tokenizer, args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    new_tokenizer = prune_vocabulary_(model, tokenizer, data["train"]["input_ids"])
    model.save_pretrained(output_dir)
    new_tokenizer.save_pretrained(output_dir)
    return output_dir


def report_part(models: str, quick: bool, repeats: int, low_rank_ratio: float | None) -> list:
    """Evaluate and time every saved model side by side; the fp32 teacher is the reference row."""
    recipe, args = recipe_args(os.path.join(models, "unused"), quick)
    tokenizer = AutoTokenizer.from_pretrained(teacher_path())
    data, _ = prepare_data(recipe, tokenizer, args.seed)
    names = ["teacher int8", "3-layer alone", *STAGES, "+ vocabulary pruned", "+ int8"]
    if low_rank_ratio is not None:
        names += low_rank_names(low_rank_ratio)
    loaded = {"teacher (fp32)": (AutoModelForSequenceClassification.from_pretrained(teacher_path()), teacher_path())}
    own_inputs = {}
    for name in names:
        path = os.path.join(models, name)
        loaded[name] = (AutoModelForSequenceClassification.from_pretrained(path).eval(), path)
        if loaded[name][0].config.vocab_size != len(tokenizer):  # its own, pruned vocabulary: its own tokenisation
            own = AutoTokenizer.from_pretrained(path)
            own_inputs[name] = (own, prepare_data(recipe, own, args.seed)[0][recipe.eval_split])
    return build_report(loaded, tokenizer, data[recipe.eval_split], repeats=repeats, own_inputs=own_inputs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="256 training and 300 test tweets: minutes, not an hour")
    parser.add_argument("--part", choices=["train", "report", "all"], default="all")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--low-rank-ratio", type=float, default=0.5, help="the low-rank branch; 0: without it")
    parser.add_argument("--low-rank-method", default="fisher", choices=["svd", "fisher", "activation"])
    opts = parser.parse_args()
    low_rank_ratio = opts.low_rank_ratio or None
    suffix = "-quick" if opts.quick else ""
    models = os.path.join(CACHE, f"pipeline{suffix}")
    os.makedirs(RESULTS, exist_ok=True)
    stages_file = os.path.join(RESULTS, f"pipeline-stages{suffix}.json")
    if opts.part in ("train", "all"):
        shutil.rmtree(models, ignore_errors=True)
        start = time.time()
        seconds = train_part(models, opts.quick)
        if low_rank_ratio is not None:
            seconds.update(train_low_rank(models, opts.quick, low_rank_ratio, opts.low_rank_method))
        stages = {
            **run_info(),
            "stage_seconds": seconds,
            "total_seconds": time.time() - start,
        }
        with open(stages_file, "w") as f:
            json.dump(stages, f, indent=2)
    if opts.part in ("report", "all"):
        start = time.time()
        rows = report_part(models, opts.quick, 3 if opts.quick else opts.repeats, low_rank_ratio)
        result = {
            **run_info(),
            "report_seconds": time.time() - start,
            "rows": [row.__dict__ for row in rows],
        }
        with open(os.path.join(RESULTS, f"pipeline{suffix}.json"), "w") as f:
            json.dump(result, f, indent=2)
        table = markdown_table(rows)
        with open(os.path.join(RESULTS, f"pipeline{suffix}.md"), "w") as f:
            f.write(table + "\n")
        plot_report(rows, os.path.join(HERE, f"pipeline{suffix}.png"), latency_key="batch_32")
        print(table)


if __name__ == "__main__":
    main()
