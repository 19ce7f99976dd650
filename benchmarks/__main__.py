"""`python -m benchmarks run SPEC.yaml`: a recipe run through the product's own CLI over seeds and variants, measured.

A spec (benchmarks/specs/*.yaml) names a recipe from recipes/, the `hf-compress` command that runs it, optional
overrides of its fields, the seeds, named variants (extra overrides each, e.g. the levers tried for a student) and
what to measure. Every (variant, seed) is one `hf-compress <command> <recipe>` run, in-process through
`hf_compress.cli.main` (the console script's entry point), on the recipe with the spec's fields written over it; the
measurements are that run's own end-of-run report (teacher and student evaluated on the same examples, timed
interleaved at batch 1 and 32, `compression_report.json`). The runner writes a JSON summary under benchmarks/results/
(rewritten after every run, so a stopped run keeps what finished) and prints a Markdown table. Models and the recipe
file of each run go to $HF_COMPRESS_CACHE/benchmarks/<spec>/.

Spec keys:
    recipe      path of the recipe, from the repository root (required)
    command     distill | prune | compress (default: compress)
    teacher     "recipe" (default: as the recipe says), "cached-tweets" (the tweets teacher benchmarks/common.py
                trains once and caches; the recipe does not fine-tune its own) or "cached-tweets-mpnet" (the same
                for the 12 x 768 all-mpnet-base-v2 teacher: `python -m benchmarks.common --teacher all-mpnet-base-v2`)
    overrides   recipe fields written over the recipe for every run ("$HF_COMPRESS_CACHE" in a value: the cache)
    seeds       values of the recipe's `seed` (default: the recipe's own)
    variants    name -> overrides on top of `overrides` (default: one variant, "recipe", with none)
    measure     columns of the table, from: score, vs_reference, agreement, mb, size_ratio, latency, speedup (default:
                all); the JSON keeps every report field whatever this says
    quick       overrides added by --quick (a smoke run: little data, few timing repeats)
    description one line for the table's title and the JSON

Usage: python -m benchmarks run benchmarks/specs/headline.yaml [--seeds 0 1] [--variants headline] [--quick]
           [--set FIELD=VALUE ...] [--out PATH] [--dry-run]
       python -m benchmarks list          the specs and the bespoke benchmark modules (benchmarks/README.md)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import yaml

from .common import CACHE, run_info

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SPECS = os.path.join(HERE, "specs")
RESULTS = os.path.join(HERE, "results")
SPEC_KEYS = {"recipe", "command", "teacher", "overrides", "seeds", "variants", "measure", "quick", "description"}
COMMANDS = ("distill", "prune", "compress")
TEACHERS = ("recipe", "cached-tweets", "cached-tweets-mpnet")
MEASURES = ("score", "vs_reference", "agreement", "mb", "size_ratio", "latency", "speedup")
BATCHES = ("batch_1", "batch_32")  # the end-of-run report times these two


def fail(message: str) -> SystemExit:
    """One line on stderr and exit code 2, as `hf-compress` ends on bad input."""
    print(f"benchmarks: error: {message}", file=sys.stderr)
    return SystemExit(2)


def load_spec(path: str) -> dict:
    """The spec with its defaults filled in; every mistake found here, before any model is trained."""
    if not os.path.isfile(path):
        raise fail(f"spec {path!r} is not a file (the specs are in {os.path.relpath(SPECS)})")
    with open(path) as f:
        spec = yaml.safe_load(f) or {}
    if not isinstance(spec, dict):
        raise fail(f"{path}: a spec is a YAML mapping, not a {type(spec).__name__}")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise fail(f"{path}: unknown key(s) {unknown}; allowed: {sorted(SPEC_KEYS)}")
    if "recipe" not in spec or not os.path.isfile(os.path.join(ROOT, str(spec["recipe"]))):
        raise fail(
            f"{path}: recipe={spec.get('recipe')!r} is invalid; allowed: a recipe file, from the repository root"
        )
    spec = {
        "name": os.path.splitext(os.path.basename(path))[0],
        "command": "compress",
        "teacher": "recipe",
        "overrides": {},
        "seeds": None,
        "variants": {"recipe": {}},
        "measure": list(MEASURES),
        "quick": {},
        "description": "",
        **spec,
    }
    checks = (
        ("command", spec["command"] in COMMANDS, f"one of {COMMANDS}"),
        ("teacher", spec["teacher"] in TEACHERS, f"one of {TEACHERS}"),
        ("overrides", isinstance(spec["overrides"], dict), "a mapping of recipe field: value"),
        ("quick", isinstance(spec["quick"], dict), "a mapping of recipe field: value"),
        (
            "seeds",
            spec["seeds"] is None or (isinstance(spec["seeds"], list) and all(type(s) is int for s in spec["seeds"])),
            "a list of integers",
        ),
        (
            "variants",
            isinstance(spec["variants"], dict) and all(isinstance(v or {}, dict) for v in spec["variants"].values()),
            "a mapping of variant name: overrides",
        ),
        (
            "measure",
            isinstance(spec["measure"], list) and set(spec["measure"]) <= set(MEASURES),
            f"a list from {MEASURES}",
        ),
    )
    for key, ok, allowed in checks:
        if not ok:
            raise fail(f"{path}: {key}={spec[key]!r} is invalid; allowed: {allowed}")
    spec["variants"] = {str(name): overrides or {} for name, overrides in spec["variants"].items()}
    return spec


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()


def run_recipe_file(spec: dict, variant: str, seed: int | None, extra: dict, folder: str) -> tuple[str, str]:
    """Write the recipe of one run (the spec's recipe with its fields written over it); return (its path, output dir).

    Written as a file rather than passed as flags: a recipe holds every value a field takes (null included), and
    the file beside the model says exactly what ran (`hf-compress <command> <that file>` runs it again).
    """
    with open(os.path.join(ROOT, spec["recipe"])) as f:
        recipe = yaml.safe_load(f) or {}
    name = f"{slug(variant)}{'' if seed is None else f'-seed{seed}'}"
    output_dir = os.path.join(folder, name)
    recipe.update(spec["overrides"])
    recipe.update(spec["variants"][variant])
    recipe.update(extra)
    # "$HF_COMPRESS_CACHE/..." in a spec: a model another spec left in the cache (e.g. a teacher it fine-tuned)
    recipe = {k: v.replace("$HF_COMPRESS_CACHE", CACHE) if isinstance(v, str) else v for k, v in recipe.items()}
    if seed is not None:
        recipe["seed"] = seed
    recipe.update(output_dir=output_dir, overwrite_output=True, report=True)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(f"# {spec['recipe']} with the fields of benchmarks spec {spec['name']!r}, variant {variant!r}\n")
        yaml.safe_dump(recipe, f, sort_keys=False)
    return path, output_dir


def check_recipe(path: str, command: str) -> None:
    """Parse one run's recipe into its arguments classes, as `hf-compress` does before any work (ValueError if not)."""
    from hf_compress.cli import RECIPE_COMMANDS
    from hf_compress.cli.recipe import RecipeArguments, parse_recipe

    parse_recipe(path, [], RecipeArguments, RECIPE_COMMANDS[command][0])


def summarize(runs: list[dict]) -> list[dict]:
    """Per variant and model (the report's rows: reference first), the mean over seeds of every measurement."""

    def mean(values):
        values = [v for v in values if v is not None]
        return statistics.fmean(values) if values else None

    summary = []
    for variant in dict.fromkeys(run["variant"] for run in runs):
        reports = [run["report"] for run in runs if run["variant"] == variant]
        for index, row in enumerate(reports[0]):
            rows = [report[index] for report in reports]
            scores = [r["score"] for r in rows if r["score"] is not None]
            summary.append(
                {
                    "variant": variant,
                    "model": row["name"],
                    "seeds": len(rows),
                    "metric": row["metric"],
                    "score": mean(scores),
                    "score_sd": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                    "scores": scores,
                    "vs_reference": mean(r["score_vs_reference"] for r in rows),
                    "agreement": mean(r["agreement_with_reference"] for r in rows),
                    "mb": mean(r["bytes_on_disk"] / 1e6 for r in rows),
                    "size_ratio": mean(
                        report[0]["bytes_on_disk"] / r["bytes_on_disk"] for report, r in zip(reports, rows)
                    ),
                    "parameters": row["parameters"],
                    **{f"latency_ms_{b}": mean(r["latency_ms"].get(b) for r in rows) for b in BATCHES},
                    **{f"speedup_{b}": mean(r["speedup"].get(b) for r in rows) for b in BATCHES},
                }
            )
    return summary


def _number(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def markdown(summary: list[dict], measure: list[str]) -> str:
    """The summary as a Markdown table with the spec's columns."""
    metric = next((row["metric"] for row in summary if row["metric"]), "score")
    columns = {
        "score": (f"{metric} (mean ± sd)", lambda r: f"{_number(r['score'], '.4f')} ± {r['score_sd']:.4f}"),
        "vs_reference": ("vs reference", lambda r: _number(r["vs_reference"], ".1%")),
        "agreement": ("agreement", lambda r: _number(r["agreement"], ".1%")),
        "mb": ("MB on disk", lambda r: f"{r['mb']:.2f}"),
        "size_ratio": ("smaller", lambda r: f"{r['size_ratio']:.2f}×"),
        "latency": ("ms b1 / b32", lambda r: " / ".join(_number(r[f"latency_ms_{b}"], ".2f") for b in BATCHES)),
        "speedup": ("faster b1 / b32", lambda r: " / ".join(f"{_number(r[f'speedup_{b}'], '.2f')}×" for b in BATCHES)),
    }
    chosen = [columns[m] for m in MEASURES if m in measure]
    header = ["variant", "model", "seeds", *(title for title, _ in chosen)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary:
        cells = [row["variant"], row["model"], str(row["seeds"]), *(cell(row) for _, cell in chosen)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(opts: argparse.Namespace) -> int:
    """Every (variant, seed) of the spec through `hf-compress`, then the summary; returns the exit code."""
    from hf_compress.cli import main as hf_compress_main

    spec = load_spec(opts.spec)
    variants = opts.variants or list(spec["variants"])
    missing = [v for v in variants if v not in spec["variants"]]
    if missing:
        raise fail(f"--variants {missing} are not in the spec; it has {list(spec['variants'])}")
    seeds = opts.seeds if opts.seeds is not None else spec["seeds"] or [None]
    extra = dict(spec["quick"]) if opts.quick else {}
    for assignment in opts.set:
        field, sep, value = assignment.partition("=")
        if not sep or not field:
            raise fail(f"--set {assignment!r} is invalid; allowed: FIELD=VALUE (VALUE read as YAML)")
        extra[field] = yaml.safe_load(value)
    stem = spec["name"] + ("-quick" if opts.quick else "")
    folder = os.path.join(CACHE, "benchmarks", stem)
    out = opts.out or os.path.join(RESULTS, f"{stem}.json")
    if spec["teacher"] in ("cached-tweets", "cached-tweets-mpnet"):
        from .common import MPNET_TEACHER_DIR, TEACHER_DIR, mpnet_teacher_path, teacher_path

        mpnet = spec["teacher"] == "cached-tweets-mpnet"
        cached, train = (MPNET_TEACHER_DIR, mpnet_teacher_path) if mpnet else (TEACHER_DIR, teacher_path)
        path = cached if opts.dry_run else train()  # trained once if missing, never by a dry run
        teacher = {"teacher_model_name_or_path": path, "finetune_teacher": False}
    else:
        teacher = {}
    plan = [(v, s, *run_recipe_file(spec, v, s, {**extra, **teacher}, folder)) for v in variants for s in seeds]
    for variant, seed, path, _ in plan:  # every run's fields checked before the first one trains
        try:
            check_recipe(path, spec["command"])
        except ValueError as err:
            raise fail(f"{opts.spec}, variant {variant!r}, seed {seed}: {str(err).splitlines()[0]}") from None
    if opts.dry_run:
        print("\n".join(f"hf-compress {spec['command']} {path}" for _, _, path, _ in plan))
        return 0
    result = {
        **run_info(),
        "spec": os.path.relpath(os.path.abspath(opts.spec), ROOT),
        "description": spec["description"],
        "recipe": spec["recipe"],
        "hf_compress_command": spec["command"],
        "teacher": spec["teacher"],
        "teacher_fields": teacher,
        "overrides": {**spec["overrides"], **extra},
        "quick": opts.quick,
        "runs": [],
    }
    for variant, seed, path, output_dir in plan:
        print(f"\n=== {spec['name']}: {variant}, seed {seed} ===", flush=True)
        start = time.time()
        code = hf_compress_main([spec["command"], path])
        if code != 0:
            print(f"benchmarks: hf-compress {spec['command']} {path} ended with exit code {code}", file=sys.stderr)
            return code
        with open(os.path.join(output_dir, "compression_report.json")) as f:
            report = json.load(f)
        result["runs"].append(
            {
                "variant": variant,
                "seed": seed,
                "overrides": {**spec["overrides"], **spec["variants"][variant]},
                "recipe_file": path,
                "output_dir": output_dir,
                "seconds": round(time.time() - start, 1),
                "report": report,
            }
        )
        result["summary"] = summarize(result["runs"])
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=2)
    title = f"{spec['name']}: {spec['description']}" if spec["description"] else spec["name"]
    print(f"\n{title} ({spec['recipe']}, hf-compress {spec['command']})\n")
    print(markdown(result["summary"], spec["measure"]))
    print(f"\nSummary: {os.path.relpath(out)}; models: {folder}")
    return 0


def list_benchmarks() -> int:
    """The specs (runner) and the bespoke modules (python -m benchmarks.<name>), each with its first line."""
    print("Specs (python -m benchmarks run benchmarks/specs/<name>.yaml):")
    for name in sorted(os.listdir(SPECS)):
        if name.endswith(".yaml"):
            with open(os.path.join(SPECS, name)) as f:
                description = (yaml.safe_load(f) or {}).get("description", "")
            print(f"  {name[:-5]:<22} {description}")
    print("Bespoke benchmarks (python -m benchmarks.<name> --help):")
    for name in sorted(os.listdir(HERE)):
        if name.endswith(".py") and not name.startswith("_") and name != "common.py":
            with open(os.path.join(HERE, name)) as f:
                first = f.readline().strip().strip('"')
            print(f"  {name[:-3]:<22} {first}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    runner = sub.add_parser("run", help="run a spec: its recipe over seeds and variants, measured")
    runner.add_argument("spec", help="a spec file, e.g. benchmarks/specs/headline.yaml")
    runner.add_argument("--seeds", type=int, nargs="+", default=None, help="instead of the spec's seeds")
    runner.add_argument("--variants", nargs="+", default=None, help="only these of the spec's variants")
    runner.add_argument("--quick", action="store_true", help="add the spec's `quick` overrides (a smoke run)")
    runner.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="one more recipe field")
    runner.add_argument("--dry-run", action="store_true", help="check every run's recipe and print the commands")
    runner.add_argument("--out", default=None, help="the JSON summary (default: benchmarks/results/<spec>.json)")
    sub.add_parser("list", help="the specs and the bespoke benchmark modules")
    opts = parser.parse_args(argv)
    return run(opts) if opts.action == "run" else list_benchmarks()


if __name__ == "__main__":
    sys.exit(main())
