"""One end-to-end run of recipes/tweets-full.yaml through `run_recipe`, optionally without its ALBERT step.

Usage: python -m benchmarks.pipeline_variant [--no-albert] [--output-dir DIR]
Runs the whole recipe in one call (distillation, FFN pruning, vocabulary pruning and int8 inside the trainer's final
save) on the teacher cached by benchmarks/common.py, and prints the recipe's own report (teacher vs student on the
test split, latency side by side). --no-albert keeps BERT's embeddings (embedding_size unset), which shows what the
ALBERT step costs and buys in the pipeline.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from hf_compress.cli.train import run_recipe

from .common import CACHE, run_info
from .pipeline import recipe_args

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-albert", action="store_true")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--output-dir", default=None)
    opts = parser.parse_args()
    name = "pipeline-no-albert" if opts.no_albert else "pipeline-recipe"
    output_dir = opts.output_dir or os.path.join(CACHE, name)
    recipe, args = recipe_args(output_dir, opts.quick)
    recipe.report, recipe.report_latency_repeats = True, 20
    if opts.no_albert:
        args.embedding_size = None
    start = time.time()
    result = run_recipe(recipe, args)
    result.update(run_info(), seconds=time.time() - start)
    with open(os.path.join(RESULTS, f"{name}{'-quick' if opts.quick else ''}.json"), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
