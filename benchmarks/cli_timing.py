"""How long the command line takes to answer help, argument and recipe errors, beside the time of importing
`transformers.TrainingArguments` (the floor: every recipe command's parser is built from TrainingArguments subclasses).

Every command runs in a fresh interpreter; the commands are interleaved round by round (so load on a shared machine
falls on all of them alike) and each is reported as the median and the fastest of its rounds, wall-clock seconds.

    python -m benchmarks.cli_timing --rounds 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

PY = sys.executable


def commands(folder: str) -> dict[str, list[str]]:
    """Name -> argv, each run in a fresh process."""
    recipe = os.path.join(folder, "misspelled.yaml")
    with open(recipe, "w") as f:
        f.write("teacher_model_name_or_path: pkg://hf_compress/nowhere\ntemprature: 2.0\noutput_dir: out\n")
    cli = [PY, "-m", "hf_compress.cli"]
    return {
        "import transformers.TrainingArguments": [PY, "-c", "from transformers import TrainingArguments"],
        "import hf_compress": [PY, "-c", "import hf_compress"],
        "hf-compress --help": [*cli, "--help"],
        "hf-compress distill --help": [*cli, "distill", "--help"],
        "hf-compress distill <recipe with a misspelled key>": [*cli, "distill", recipe],
        "hf-compress distill --alpha 3 (bad value)": [*cli, "distill", "--alpha", "3"],
    }


def run(rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        todo = commands(folder)
        for _ in range(rounds):
            for name, argv in todo.items():
                start = time.perf_counter()
                result = subprocess.run(argv, capture_output=True, text=True, cwd=folder)
                times.setdefault(name, []).append(time.perf_counter() - start)
                if result.returncode not in (0, 2):
                    raise RuntimeError(f"{name}: exit {result.returncode}\n{result.stderr[-2000:]}")
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="fresh processes per command (default: 5)")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    times = run(args.rounds)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {load:.1f} at start"
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {machine}; Python {platform.python_version()}")
    print(f"`python -m benchmarks.cli_timing --rounds {args.rounds}`\n")
    print("| command | median s | fastest s | vs TrainingArguments (median) |")
    print("|---|---|---|---|")
    floor = statistics.median(times["import transformers.TrainingArguments"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.2f} | {min(values):.2f} | {median / floor:.2f}× |")


if __name__ == "__main__":
    main()
