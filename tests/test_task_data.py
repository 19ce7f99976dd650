"""The package and the tests stand without benchmarks/: it is a harness over the product, never a dependency of it."""

from __future__ import annotations

import ast
from pathlib import Path

from hf_compress import task_data
from hf_compress.loading import task_data_dir

ROOT = Path(__file__).resolve().parent.parent
IMPORTERS = ("import_module", "__import__")  # importlib.import_module("benchmarks.x"), __import__("benchmarks")


def benchmark_imports(path: Path) -> list[str]:
    """`line: statement` of every import of a `benchmarks` module in a file (absolute imports: relative ones stay in
    their own package)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in IMPORTERS:
            first = node.args[0] if node.args else None
            names = [first.value] if isinstance(first, ast.Constant) and isinstance(first.value, str) else []
        else:
            continue
        found += [f"{node.lineno}: {name}" for name in names if name == "benchmarks" or name.startswith("benchmarks.")]
    return found


def test_nothing_under_hf_compress_or_tests_imports_benchmarks():
    files = sorted(p for folder in ("hf_compress", "tests") for p in (ROOT / folder).rglob("*.py"))
    assert len(files) > 50 and ROOT / "hf_compress" / "task_data.py" in files
    offenders = {str(p.relative_to(ROOT)): hits for p in files if (hits := benchmark_imports(p))}
    assert offenders == {}, f"these import benchmarks/ (move what they need into hf_compress/ or tests/): {offenders}"


def test_the_import_check_sees_every_form_of_import(tmp_path):
    source = tmp_path / "uses.py"
    source.write_text(
        "import benchmarks\n"
        "import os, benchmarks.common as common\n"
        "from benchmarks import task_data\n"
        "def f():\n"
        "    from benchmarks.tasks import TASKS\n"
        "    importlib.import_module('benchmarks.headline')\n"
        "from .benchmarks import x\n"  # relative: a package's own module, not this repository's benchmarks/
        "import benchmarks_extra\n"
        "from hf_compress import task_data\n"
    )
    assert benchmark_imports(source) == [
        "1: benchmarks",
        "2: benchmarks.common",
        "3: benchmarks",
        "5: benchmarks.tasks",
        "6: benchmarks.headline",
    ]


def test_the_task_data_cache_is_the_folder_task_data_urls_resolve_in(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_COMPRESS_TASK_DATA", raising=False)
    monkeypatch.setenv("HF_COMPRESS_CACHE", str(tmp_path / "cache"))
    assert task_data.cache_dir() == task_data_dir() == str(tmp_path / "cache" / "task-data")
    monkeypatch.setenv("HF_COMPRESS_TASK_DATA", str(tmp_path / "data"))
    assert task_data.cache_dir() == task_data_dir() == str(tmp_path / "data")
    monkeypatch.delenv("HF_COMPRESS_CACHE")
    monkeypatch.delenv("HF_COMPRESS_TASK_DATA")
    assert task_data.cache_dir() == task_data_dir() == str(Path.home() / ".cache" / "hf_compress" / "task-data")
