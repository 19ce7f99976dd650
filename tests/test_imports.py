"""Every module of hf_compress imports first in a fresh interpreter, or in any order, then `import hf_compress` works.

An import circle (a imports b, which imports a name from a before a has defined it) only shows when one of its members
is the first of the package a process imports, which the test suite, importing `hf_compress` at the top of every file,
never does. So: for every module of the package, a process that has imported nothing of hf_compress imports that
module, then `import hf_compress`, and checks `hf_compress.__all__` is all there; and three processes import every
module in a random order (fixed seeds), then `import hf_compress`.

Python runs a package's `__init__.py` before any module in it, so while `hf_compress/__init__.py` imports everything
eagerly, its own order comes first whatever a process asks for, and a circle among the modules it imports stays
hidden behind that order (at 6721bd3, the quantization package, transforms.low_rank and transforms.low_rank_loading
were one circle of 8 modules, and every module still imported first). It shows once the `__init__` loads lazily or
in another order. So a third test reads the module-level imports (ast, no import) and refuses any circle at all.

The modules are found at test time, so the test follows the package as it moves: `pkgutil.iter_modules` over the
package's folders, recursing into subpackages without importing them (`pkgutil.walk_packages` imports each subpackage
to recurse, so a subpackage that fails to import would silently hide its modules, and the answer would depend on what
the test process had imported before). Left out, and why:
- `__main__` modules (`hf_compress.cli.__main__`): a script, importing it runs the CLI and exits;
  `hf_compress.cli.main`, all it imports, is tested.
- the `evaluate` metric scripts `hf_compress/metrics/<name>/<name>.py`: their folders have no `__init__.py` (evaluate
  loads each script by path and imports a copy under a module name of its own, never as `hf_compress.metrics.<name>`),
  so pkgutil does not see them as modules of the package; what they import of hf_compress (`hf_compress.metrics.info`)
  is a module of the package and is tested here, and tests/test_metrics.py loads them as evaluate does.

Speed: a fresh interpreter pays some seconds for torch and transformers before it reaches hf_compress, times ~90
modules. So one fresh interpreter (`sys.executable -c`) imports the third-party modules hf_compress uses (found by a
first child that imports every module) and nothing of hf_compress, then forks one child per plan, two at a time: each
child starts with no hf_compress module loaded, exactly what an import circle needs, and pays only for hf_compress's
own modules. HF_COMPRESS_IMPORT_TEST_FRESH=1 runs every plan in an interpreter of its own instead (no preloading, no
fork; minutes).
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pkgutil
import random
import subprocess
import sys
import tempfile
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

PACKAGE = "hf_compress"
SEEDS = (0, 1, 2)  # the random orders of every module
WORKERS = 2
TIMEOUT = 600

# One fresh interpreter. argv: the plans file (a JSON list of lists of module names), the results folder, "preload"
# or "fresh". Each plan imports its modules in order, then the package, in a process where nothing of the package was
# imported; the child writes {"ok": true} or the module that failed and the traceback to <results>/<index>.json.
RUNNER = r"""
import importlib, json, os, sys, traceback

PACKAGE = "hf_compress"
plans_file, results, mode = sys.argv[1], sys.argv[2], sys.argv[3]
plans = json.load(open(plans_file))


def ours(name):
    return name == PACKAGE or name.startswith(PACKAGE + ".")


def run(index, plan):
    current = None
    try:
        assert not [name for name in sys.modules if ours(name)], "started with hf_compress modules loaded"
        for current in [*plan, PACKAGE]:
            importlib.import_module(current)
        current = PACKAGE + ".__all__"
        package = sys.modules[PACKAGE]
        missing = [name for name in package.__all__ if not hasattr(package, name)]
        assert not missing, f"hf_compress.__all__ names what the package lacks: {missing}"
        result = {"ok": True, "file": package.__file__}
    except BaseException:
        result = {"ok": False, "failed": current, "error": traceback.format_exc(limit=-8)}
    with open(os.path.join(results, f"{index}.json"), "w") as f:
        json.dump(result, f)


if mode == "fresh":  # this interpreter runs its one plan itself
    (plan,) = plans
    run(0, plan)
    sys.exit(0)


def fork(index, plan):
    pid = os.fork()
    if pid == 0:
        try:
            run(index, plan)
        finally:
            os._exit(0)
    return pid


# The probe: a child imports every module (each on its own, a failure does not stop it) to find what else it loads.
probe = os.fork()
if probe == 0:
    try:
        for name in plans[-1]:
            try:
                importlib.import_module(name)
            except BaseException:
                pass
        with open(os.path.join(results, "probe.json"), "w") as f:
            json.dump([name for name in sys.modules if not ours(name)], f)
    finally:
        os._exit(0)
os.waitpid(probe, 0)
for name in json.load(open(os.path.join(results, "probe.json"))):
    if name not in sys.modules and name != "__main__":
        try:
            importlib.import_module(name)
        except BaseException:  # aliases and modules that only import as part of something else
            pass
assert not [name for name in sys.modules if ours(name)], "preloading imported hf_compress"

running = set()
for index, plan in enumerate(plans):
    if len(running) >= int(os.environ.get("IMPORT_TEST_WORKERS", "2")):
        running.discard(os.wait()[0])
    running.add(fork(index, plan))
while running:
    running.discard(os.wait()[0])
"""


def package_root() -> Path:
    """The folder of the hf_compress this test process would import (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    assert spec is not None and spec.submodule_search_locations, f"{PACKAGE} is not an importable package"
    return Path(list(spec.submodule_search_locations)[0])


def package_modules() -> list[str]:
    """Every module of the package, subpackages included, by pkgutil over its folders (nothing imported)."""
    found: list[str] = []

    def walk(folder: Path, prefix: str) -> None:
        for info in pkgutil.iter_modules([str(folder)], prefix):
            leaf = info.name.rsplit(".", 1)[-1]
            if leaf == "__main__":  # a script: importing it runs the command line and exits
                continue
            found.append(info.name)
            if info.ispkg:
                walk(folder / leaf, info.name + ".")

    walk(package_root(), PACKAGE + ".")
    return sorted(found)


def plans(modules: list[str]) -> dict[str, list[str]]:
    """plan id -> the modules it imports, in order, before `import hf_compress`."""
    firsts = {f"first:{name}": [name] for name in modules}
    orders = {f"order:seed{seed}": random.Random(seed).sample(modules, len(modules)) for seed in SEEDS}
    return {**firsts, **orders}


def run_plans(planned: dict[str, list[str]], fresh: bool) -> dict[str, dict]:
    """plan id -> the child's result, every plan in a process where nothing of hf_compress was imported before."""
    root = package_root().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *filter(None, [os.environ.get("PYTHONPATH")])])}
    env["IMPORT_TEST_WORKERS"] = str(WORKERS)
    ids = list(planned)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)

        def interpreter(name: str, plan_list: list[list[str]], mode: str) -> subprocess.CompletedProcess:
            folder = tmp_path / name
            folder.mkdir()
            (folder / "plans.json").write_text(json.dumps(plan_list))
            return subprocess.run(
                [sys.executable, "-c", textwrap.dedent(RUNNER), str(folder / "plans.json"), str(folder), mode],
                cwd=tmp, env=env, capture_output=True, text=True, timeout=TIMEOUT,
            )  # fmt: skip

        if fresh:
            with ThreadPoolExecutor(WORKERS) as pool:
                runs = list(pool.map(lambda i: interpreter(f"p{i}", [planned[ids[i]]], "fresh"), range(len(ids))))
            folders = [tmp_path / f"p{i}" / "0.json" for i in range(len(ids))]
        else:
            # The last plan is a random order of every module: the probe imports those.
            runs = [interpreter("all", [planned[i] for i in ids], "preload")]
            folders = [tmp_path / "all" / f"{i}.json" for i in range(len(ids))]
        for run in runs:
            assert run.returncode == 0, run.stderr[-4000:]
        missing = [ids[i] for i, path in enumerate(folders) if not path.exists()]
        assert not missing, f"no result from the processes of {missing} (crashed?)"
        return {ids[i]: json.loads(path.read_text()) for i, path in enumerate(folders)}


@pytest.fixture(scope="module")
def results() -> dict[str, dict]:
    return run_plans(plans(package_modules()), fresh=os.environ.get("HF_COMPRESS_IMPORT_TEST_FRESH") == "1")


def test_modules_are_found_without_importing_the_package():
    modules = package_modules()
    assert len(modules) >= 40 and len(set(modules)) == len(modules)  # the whole package, not one folder of it
    assert f"{PACKAGE}.checks" in modules and f"{PACKAGE}.families" in modules
    assert not [name for name in modules if name.endswith("__main__")]


def failures(results: dict[str, dict], kind: str) -> str:
    """One line per failed plan of `kind`: the plan, the module whose import failed, the error's last line."""
    lines = []
    for plan, result in results.items():
        if plan.startswith(kind) and not result["ok"]:
            last = result["error"].strip().splitlines()[-1]
            lines.append(f"{plan}: importing {result['failed']} failed: {last}")
    return "\n".join(lines)


def test_every_module_imports_first_then_the_package(results):
    firsts = [plan for plan in results if plan.startswith("first:")]
    assert len(firsts) == len(package_modules())
    # the children imported the package this test process finds, not another copy
    init = (package_root() / "__init__.py").resolve()
    assert {Path(r["file"]).resolve() for r in results.values() if r["ok"]} <= {init}
    message = failures(results, "first:")
    assert not message, f"modules that fail when imported first in a fresh interpreter:\n{message}"


def test_every_module_in_random_orders_then_the_package(results):
    orders = [plan for plan in results if plan.startswith("order:")]
    assert len(orders) == len(SEEDS)
    message = failures(results, "order:")
    assert not message, f"random import orders that fail in a fresh interpreter:\n{message}"


def module_file(name: str) -> Path:
    """The source of a module found by package_modules (or of the package itself)."""
    path = package_root().joinpath(*name.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def module_imports(name: str, modules: set[str]) -> set[str]:
    """The package's modules that importing `name` runs: its module-level imports (not those inside functions or under
    `if TYPE_CHECKING`), each with the packages above it, which Python imports first."""
    is_package = module_file(name).name == "__init__.py"
    found: set[str] = set()
    stack: list[ast.AST] = list(ast.parse(module_file(name).read_text(encoding="utf-8")).body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue  # runs when called, not at import
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            here = name.split(".") if is_package else name.split(".")[:-1]
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            found.add(target)
            found.update(f"{target}.{alias.name}" for alias in node.names)  # `from . import module`
        stack.extend(ast.iter_child_nodes(node))
    with_parents = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 2)}
    # Its own packages are already being imported when it runs: an edge to them is the import itself, not a new one
    # (so a name taken from a package above the module is not followed).
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    return (with_parents & modules) - own - {name}


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(circles)


def test_import_circles_are_found():
    graph = {"p": {"p.a"}, "p.a": {"p.b"}, "p.b": {"p.a"}, "p.c": {"p.a"}}
    assert import_circles(graph) == [["p.a", "p.b"]]
    assert import_circles({"p": {"p.a"}, "p.a": set()}) == []


def test_no_import_circles_between_modules():
    modules = {PACKAGE, *package_modules()}
    graph = {name: module_imports(name, modules) for name in modules}
    assert graph[f"{PACKAGE}.checks"] <= modules and any(graph.values())  # the imports were read
    circles = import_circles(graph)
    described = "\n".join(f"{len(c)} modules: {', '.join(c)}" for c in circles)
    assert not circles, (
        f"module-level imports that form circles (move an import or a name to break each):\n{described}"
    )
