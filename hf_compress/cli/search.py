"""`hf-compress search RECIPE.yaml [--run] [--field value ...]`: a compress recipe's student chosen for one budget.

The recipe is a compress recipe (teacher, data, training fields) plus one budget field (budget_params, budget_mb,
budget_latency_ms or budget_speedup) and, optionally, the search space (search_* fields). The teacher is fine-tuned
first when the recipe asks (and kept in output_dir/teacher, where the compress run finds it). The searched recipe,
with the predicted size and latency in comments, goes to search_output (default: beside the recipe, as
<name>-searched.yaml; not in output_dir, which the compress run's final save replaces).
`--run` then runs it with `hf-compress compress` and prints the predicted against the measured size and latency.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from ..search.config import SearchArguments
from ..trainer.compression_args import CompressionTrainingArguments
from .recipe import RecipeArguments, RecipeParser, load_recipe, parse_recipe, recipe_as_dict

CLASSES = (RecipeArguments, CompressionTrainingArguments, SearchArguments)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `hf-compress search`: the recipe, then any field as a flag, and --run."""
    parser.add_argument("recipe", nargs="?", metavar="RECIPE.yaml", help="a compress recipe with one budget field")
    parser.add_argument("--run", action="store_true", help="run the searched recipe (hf-compress compress) after")


def parse(argv: list[str]):
    """The three dataclasses, the recipe path and the extra namespace (--run)."""
    parser = RecipeParser(CLASSES, prog="hf-compress search", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    path = argv[0] if argv and not argv[0].startswith("-") else None
    if path is None and not {"-h", "--help"} & set(argv):
        from ..checks import invalid

        raise invalid("recipe", None, "a YAML compress recipe with one budget field (e.g. budget_mb: 6)")
    rest = argv[1:] if path is not None else argv
    recipe, args, search, extra = parse_recipe(path, rest, *CLASSES, parser=parser, extra=True)
    return path, recipe, args, search, extra


def searched_recipe(path: str, argv: list[str], recipe, args, search, fields: dict) -> dict:
    """The recipe to run: the keys the user gave (file and flags, search fields left out) with the chosen fields."""
    given = set(load_recipe(path)) | {a[2:].split("=", 1)[0] for a in argv if a.startswith("--")}
    search_keys = {f.name for f in dataclasses.fields(SearchArguments)}
    values = recipe_as_dict(recipe, args)
    out = {k: values[k] for k in values if k in given and k not in search_keys}
    out.update(fields)
    return {k: v for k, v in out.items() if v is not None}


def write_recipe(target: str, values: dict, header: list[str]) -> None:
    """The recipe as YAML with the search's predictions as comments, written atomically."""
    import yaml

    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    text = "".join(f"# {line}\n" for line in header) + yaml.safe_dump(values, sort_keys=False)
    tmp = f"{target}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, target)


def run(argv: list[str]) -> dict:
    """Search (fine-tuning the teacher first if asked), write the recipe, and with --run compress and compare."""
    from ..search.search import search_student
    from .train import announce, load_teacher_model, preflight, subset

    path, recipe, args, search, extra = parse(argv)
    target = search.search_output or f"{os.path.splitext(path)[0]}-searched.yaml"
    plan = preflight(recipe, args, "compress")
    data = plan.task.prepare_splits(plan.raw, plan.tokenizer, recipe)
    teacher = load_teacher_model(recipe, args, plan, data)
    announce(f"Search: {search.budget[0]}={search.budget[1]}")
    result = search_student(
        teacher,
        search,
        subset(data["train"], recipe.max_train_samples, args.seed),
        plan.tokenizer,
        plan.task.collator(plan.tokenizer),
        batch_size=args.per_device_train_batch_size,
        seed=args.seed,
    )
    values = searched_recipe(path, argv[1:], recipe, args, search, result.recipe_fields())
    header = [f"Searched by: hf-compress search {path}", *result.summary(), f"Run: hf-compress compress {target}"]
    write_recipe(target, values, header)
    for line in result.summary():
        announce(line)
    announce(f"Recipe written to {target}")
    outcome = {"recipe": target, "search": result}
    if extra.run:
        outcome["measured"] = run_searched(target, result, teacher, plan.tokenizer, search)
    return outcome


def run_searched(target: str, result, teacher, tokenizer, search: SearchArguments) -> dict:
    """Compress with the searched recipe, then measure its size and latency beside the teacher's, as predicted."""
    from transformers import AutoTokenizer

    from ..evaluation.measure import bytes_on_disk
    from ..loading import load_saved_model
    from ..search.latency import time_beside_teacher
    from .train import announce, run_recipe

    recipe, args = parse_recipe(target, [], RecipeArguments, CompressionTrainingArguments)
    run_recipe(recipe, args, "compress")
    student = load_saved_model(args.output_dir)
    size = bytes_on_disk(args.output_dir)
    times = time_beside_teacher(teacher, student, tokenizer, AutoTokenizer.from_pretrained(args.output_dir), search)
    measured = {"size_bytes": size, "latency_ms": times["student"], "teacher_ms": times["teacher"]}
    announce(f"size: predicted {result.size_bytes} bytes, measured {size} bytes")
    checked = result.checked_teacher_ms / result.checked_latency_ms
    announce(
        f"latency: predicted {result.latency_ms:.2f} ms, measured {times['student']:.2f} ms "
        f"({times['student'] / result.latency_ms - 1:+.1%}); speed-up predicted "
        f"{result.teacher_ms / result.latency_ms:.2f}x (checked {checked:.2f}x), "
        f"measured {times['teacher'] / times['student']:.2f}x"
    )
    return measured
