"""Where a student search spends its time: `hf-compress search` in-process, each of its steps timed.

The steps are the search's own functions (the latency table, importance scoring, skeleton builds, the final check
beside the teacher), wrapped with a timer for this run only. With HF_COMPRESS_CACHE pointing at an empty directory
(the teacher the recipe names elsewhere, or linked in), the run is a first search on this machine: it times the
latency table. One run, one process: read the steps as shares of that run, not as lone timings.

Usage: python -m benchmarks.search_profile SEARCH_RECIPE.yaml [hf-compress search options, e.g. --search_output P]
"""

from __future__ import annotations

import collections
import functools
import sys
import time


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    import hf_compress.search.latency as latency
    import hf_compress.search.search as search
    from hf_compress.cli import search as command

    seconds: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter = collections.Counter()

    def timed(module, name: str) -> None:
        function = getattr(module, name)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[name] += time.perf_counter() - start
                calls[name] += 1

        setattr(module, name, wrapper)

    for name in ("search_student", "measure_latency_table", "importance_scores", "time_beside_teacher"):
        timed(search, name)
    timed(latency, "skeleton")  # the table's skeletons
    timed(search, "skeleton")  # the cost counts' and the check's
    start = time.perf_counter()
    outcome = command.run(argv)
    total = time.perf_counter() - start
    print(f"\nhf-compress search, in-process: {total:.2f} s (teacher and data loading included)")
    for name in seconds:
        print(f"  {name:24s} {seconds[name]:7.2f} s  ({calls[name]} calls)")
    print("\n".join(outcome["search"].summary()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
