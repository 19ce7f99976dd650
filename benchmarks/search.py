"""Student search against the hand-made headline levers: searched students at the hand-made student's budgets.

Not a spec: the budgets of the searched runs are measured on the hand-made runs first (its MB on disk and its
batch-32 speed-up, from its own end-of-run report), and each search is timed against the compress run it plans.

Every run is `recipes/tweets-search.yaml` (the quickstart's training: 4,000 tweets, 2 epochs, 250 steps) on the
cached tweets teacher (`benchmarks/common.py`; with HF_COMPRESS_CACHE pointing at a quickstart run's cache, the
quickstart's teacher), through the product's own commands, in-process:

1. hand-made: the headline's levers (3 evenly spaced layers, 75% of FFN neurons, 4-bit weights everywhere, vocabulary
   cut): `hf-compress compress`, per seed;
2. for each budget — `mb` (the hand-made student's MB), `speedup` (its measured batch-32 speed-up), `speedup2x` (twice
   that): `hf-compress search` (timed) writes a recipe, then `hf-compress compress` runs it per seed.

Predicted (the search's exact size, its latency table's speed-up) and measured (the run's report: teacher and
student interleaved, one thread, 48 tokens) are stored side by side. The searched recipes are copied to
recipes/tweets-search-<budget>-searched.yaml with the teacher and output folder of recipes/tweets-search.yaml.

Usage: python -m benchmarks.search [--seeds 42 0 1] [--budgets mb speedup speedup2x] [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import yaml

from .common import CACHE, run_info, teacher_path

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BASE = os.path.join(ROOT, "recipes", "tweets-search.yaml")
HAND_MADE = {
    "student_num_hidden_layers": 3,
    "ffn_sparsity": 0.75,
    "weight_bits": 4,
    "weight_quantization_modules": "all",
    "prune_vocabulary": True,
}
BUDGETS = ("mb", "speedup", "speedup2x")
SEARCH_KEYS = ("budget_params", "budget_mb", "budget_latency_ms", "budget_speedup", "budget_batch_size", "search_")
QUICK = {"max_train_samples": 256, "max_eval_samples": 300, "report_latency_repeats": 2, "search_latency_repeats": 2}


def base_recipe(quick: bool) -> dict:
    with open(BASE) as f:
        recipe = yaml.safe_load(f)
    for budget in ("budget_params", "budget_mb", "budget_latency_ms", "budget_speedup"):
        recipe.pop(budget, None)  # each search sets its own
    recipe.update(teacher_model_name_or_path=teacher_path(), finetune_teacher=False, overwrite_output=True)
    recipe.update(report_latency_repeats=20)
    if quick:
        recipe.update(QUICK)
    return recipe


def write(path: str, recipe: dict, note: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(f"# {note}\n")
        yaml.safe_dump(recipe, f, sort_keys=False)
    return path


def compress_fields(recipe: dict) -> dict:
    """The recipe without the search's fields (a compress recipe)."""
    return {k: v for k, v in recipe.items() if not k.startswith(SEARCH_KEYS)}


def compress(recipe_path: str, folder: str, name: str, seed: int) -> dict:
    """One `hf-compress compress` run of the recipe with this seed; its report, timed."""
    from hf_compress.cli import main

    with open(recipe_path) as f:
        recipe = compress_fields(yaml.safe_load(f))
    out = os.path.join(folder, f"{name}-seed{seed}")
    recipe.update(seed=seed, output_dir=out)
    path = write(os.path.join(folder, f"{name}-seed{seed}.yaml"), recipe, f"{name}, seed {seed}")
    print(f"\n=== {name}, seed {seed} ===", flush=True)
    start = time.time()
    if main(["compress", path]) != 0:
        raise SystemExit(f"benchmarks.search: hf-compress compress {path} failed")
    seconds = time.time() - start
    with open(os.path.join(out, "compression_report.json")) as f:
        report = json.load(f)
    return {"seed": seed, "seconds": round(seconds, 1), "recipe_file": path, "report": report}


def search(base: dict, folder: str, budget: str, value: float) -> dict:
    """`hf-compress search` at this budget; the written recipe and what the search predicted, timed."""
    from hf_compress.cli import search as search_command

    recipe = {**base, f"budget_{'mb' if budget == 'mb' else 'speedup'}": value}
    stem = f"search-{budget}-seed{base['seed']}"
    recipe["output_dir"] = os.path.join(folder, stem)
    path = write(os.path.join(folder, f"{stem}.yaml"), recipe, f"search input, budget {budget}={value}")
    print(f"\n=== search: {budget}={value} ===", flush=True)
    start = time.time()
    outcome = search_command.run([path])
    seconds = time.time() - start
    result = outcome["search"]
    return {
        "budget": budget,
        "value": value,
        "seconds": round(seconds, 1),
        "recipe_file": outcome["recipe"],
        "fields": result.recipe_fields(),
        "predicted_bytes": result.size_bytes,
        "predicted_latency_ms": result.latency_ms,
        "predicted_teacher_ms": result.teacher_ms,
        "predicted_speedup": result.teacher_ms / result.latency_ms,
        "checked_latency_ms": result.checked_latency_ms,
        "checked_teacher_ms": result.checked_teacher_ms,
        "checked_speedup": result.checked_teacher_ms / result.checked_latency_ms,
        "latency_fit_error": result.fit_error,
        "latency_table_seconds": round(result.latency_table_seconds, 1),
        "loss_increase": result.loss_increase,
        "summary": result.summary(),
    }


def publish(searched_recipe: str, budget: str) -> str:
    """The searched recipe under recipes/, with the teacher fields and output folder of recipes/tweets-search.yaml."""
    with open(BASE) as f:
        original = yaml.safe_load(f)
    with open(searched_recipe) as f:
        text = f.read()
    header = [line for line in text.splitlines() if line.startswith("#")]
    recipe = yaml.safe_load(text)
    for key in ("teacher_model_name_or_path", "finetune_teacher", "teacher_max_train_samples"):
        recipe[key] = original[key]
    recipe.pop("overwrite_output", None)
    recipe["output_dir"] = f"outputs/tweets-search-{budget}"
    target = os.path.join(ROOT, "recipes", f"tweets-search-{budget}-searched.yaml")
    header = [h.replace(searched_recipe, os.path.relpath(target, ROOT)) for h in header]
    run = [h for h in header if h.startswith("# Run:")]  # first: tests read a recipe's command from its first mention
    note = f"# benchmarks/search.py, budget {budget}: the recipe the search wrote, with the teacher fields of"
    lines = [*run, note, "# recipes/tweets-search.yaml (the search ran on the cached teacher)"]
    with open(target, "w") as f:
        f.write("\n".join(lines + [h for h in header if h not in run]))
        f.write("\n" + yaml.safe_dump(recipe, sort_keys=False))
    return target


def row(name: str, runs: list[dict], predicted: dict | None = None) -> dict:
    students = [r["report"][1] for r in runs]
    scores = [s["score"] for s in students]
    out = {
        "variant": name,
        "seeds": [r["seed"] for r in runs],
        "score": statistics.fmean(scores),
        "score_sd": statistics.stdev(scores) if len(scores) > 1 else 0.0,
        "scores": scores,
        "vs_teacher": statistics.fmean(s["score_vs_reference"] for s in students),
        "agreement": statistics.fmean(s["agreement_with_reference"] for s in students),
        "bytes": [s["bytes_on_disk"] for s in students],
        "speedup_batch_1": statistics.fmean(s["speedup"]["batch_1"] for s in students),
        "speedup_batch_32": statistics.fmean(s["speedup"]["batch_32"] for s in students),
        "latency_ms_batch_32": statistics.fmean(s["latency_ms"]["batch_32"] for s in students),
        "teacher_ms_batch_32": statistics.fmean(r["report"][0]["latency_ms"]["batch_32"] for r in runs),
        "compress_seconds": statistics.fmean(r["seconds"] for r in runs),
    }
    if predicted:
        out.update({k: predicted[k] for k in predicted if k not in ("summary", "recipe_file")})
    return out


def table(rows: list[dict], teacher: float) -> str:
    lines = [
        f"teacher accuracy {teacher:.4f}",
        "",
        "| student | accuracy (mean ± sd, seeds) | vs teacher | agreement | MB (predicted / measured) "
        "| faster b1 / b32 | b32 speed-up table / checked | search s / compress s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        predicted_mb = f"{r['predicted_bytes'] / 1e6:.3f}" if "predicted_bytes" in r else "—"
        measured_mb = " ".join(f"{b / 1e6:.3f}" for b in sorted(set(r["bytes"])))
        speed = f"{r['predicted_speedup']:.2f}× / {r['checked_speedup']:.2f}×" if "predicted_speedup" in r else "—"
        cost = (
            f"{r['seconds']:.0f} / {r['compress_seconds']:.0f}"
            if "seconds" in r
            else f"— / {r['compress_seconds']:.0f}"
        )
        lines.append(
            f"| {r['variant']} | {r['score']:.4f} ± {r['score_sd']:.4f} ({len(r['seeds'])}) | {r['vs_teacher']:.1%} "
            f"| {r['agreement']:.1%} | {predicted_mb} / {measured_mb} | {r['speedup_batch_1']:.2f}× / "
            f"{r['speedup_batch_32']:.2f}× | {speed} | {cost} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--budgets", nargs="+", default=list(BUDGETS), choices=BUDGETS)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 256 tweets, 300 test tweets")
    parser.add_argument("--no-publish", action="store_true", help="do not copy the searched recipes to recipes/")
    parser.add_argument("--out", default=None, help="default: benchmarks/results/search[-quick].json")
    opts = parser.parse_args(argv)
    stem = "search" + ("-quick" if opts.quick else "")
    folder = os.path.join(CACHE, "benchmarks", stem)
    out = opts.out or os.path.join(HERE, "results", f"{stem}.json")
    base = base_recipe(opts.quick)
    result = {**run_info(), "base_recipe": os.path.relpath(BASE, ROOT), "quick": opts.quick, "rows": []}

    def save():
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f, indent=2)

    # Each seed is a whole replicate: its hand-made run sets its budgets (the MB depends on the vocabulary of the
    # seed's train subset), and each search runs with that seed, so that the compress run trains on the tweets whose
    # vocabulary the search counted (searching with another seed's subset made sizes differ by 0.6-0.8%).
    hand = write(os.path.join(folder, "hand-made.yaml"), compress_fields({**base, **HAND_MADE}), "hand-made levers")
    hand_runs, searched, values = [], {b: [] for b in opts.budgets}, {}
    for seed in opts.seeds:
        hand_runs.append(compress(hand, folder, "hand-made", seed))
        report = hand_runs[-1]["report"][1]
        values[seed] = {
            "mb": report["bytes_on_disk"] / 1e6,
            "speedup": report["speedup"]["batch_32"],
            "speedup2x": 2 * report["speedup"]["batch_32"],
        }
        for budget in opts.budgets:
            predicted = search({**base, "seed": seed}, folder, budget, round(values[seed][budget], 4))
            run = compress(predicted["recipe_file"], folder, f"searched-{budget}", seed)
            searched[budget].append((predicted, run))
    result["rows"].append(row("hand-made: 3 layers, 75% FFN, 4-bit, vocabulary cut", hand_runs))
    result["budgets"] = values
    teacher = statistics.fmean(r["report"][0]["score"] for r in hand_runs)
    for budget, pairs in searched.items():
        predicted = pairs[0][0]
        name = f"searched at the hand-made student's {'MB' if budget == 'mb' else budget}"
        result["rows"].append(row(name, [run for _, run in pairs], predicted))
        result["rows"][-1]["searches"] = [p for p, _ in pairs]
        if not opts.no_publish and not opts.quick:
            result["rows"][-1]["published_recipe"] = os.path.relpath(publish(predicted["recipe_file"], budget), ROOT)
        save()
    result["table"] = table(result["rows"], teacher)
    save()
    print("\n" + result["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
