"""Teacher outputs computed once per example, kept on disk and shared by every rank, resume and later run.

Logit-only distillation runs the teacher on the same examples every epoch. `TeacherOutputCache` runs it once per
distinct example and keeps what the loss reads (the head's logits on the example's real tokens) in an append-only,
memory-mapped table on disk:

    <root>/<teacher fingerprint>/meta.json         output names and widths, written once
    <root>/<teacher fingerprint>/part-<id>.data    float32 rows, appended
    <root>/<teacher fingerprint>/part-<id>.index   32-byte records: example key, offset, rows

- **Keyed so nothing else can hit.** The folder is a hash of the teacher's class, config and every tensor of its
  state dict (`teacher_fingerprint`): another teacher, or the same one quantized, gets another folder. Inside, an
  example's key is a 128-bit BLAKE2b digest of its real token ids (and segment ids), so another tokenization of the
  same text is another example, and padding or batch order are not.
- **Shared by processes.** Each process appends to parts of its own and never to another's; a record is written after
  its rows, so a reader that takes the whole records of an index file sees only complete entries, however a writer
  was interrupted. `refresh()` folds every part into one sorted index; the trainer calls it at each epoch start,
  after a barrier under DDP, so from the second epoch on no rank runs the teacher on an example another rank did.
- **Memory.** The index is four numpy arrays, 30 bytes per entry (key 16, part 2, offset 8, rows 4); rows stay on
  disk, mapped. Entries written since the last refresh wait in a buffer of at most `refresh_every` entries.

Where: `teacher_cache_dir`, else $HF_COMPRESS_TEACHER_CACHE, else $HF_COMPRESS_CACHE/teacher-outputs, else
~/.cache/hf_compress/teacher-outputs. Deleting a fingerprint's folder (not while a run uses it) empties its cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid

import numpy as np
import torch

FORMAT_VERSION = 1
RECORD = np.dtype([("key", "S16"), ("offset", "<i8"), ("rows", "<i4"), ("unused", "<i4")])  # 32 bytes
INDEX_BYTES_PER_ENTRY = 16 + 2 + 8 + 4  # the in-memory index: key, part, offset, rows


def default_root() -> str:
    """$HF_COMPRESS_TEACHER_CACHE, else $HF_COMPRESS_CACHE/teacher-outputs, else ~/.cache/hf_compress/...(same)."""
    if os.environ.get("HF_COMPRESS_TEACHER_CACHE"):
        return os.path.abspath(os.path.expanduser(os.environ["HF_COMPRESS_TEACHER_CACHE"]))
    root = os.environ.get("HF_COMPRESS_CACHE", os.path.join("~", ".cache", "hf_compress"))
    return os.path.abspath(os.path.join(os.path.expanduser(root), "teacher-outputs"))


def teacher_fingerprint(teacher: torch.nn.Module) -> str:
    """A 128-bit hex digest of what decides the teacher's outputs: class, config and every state-dict tensor.

    Paths and versions are left out of the config (`_name_or_path`, `transformers_version`, the attention kernel): the
    same weights loaded from another folder share a cache. Hashing reads every weight once (~0.5 s for 110M
    parameters on one core).
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"v{FORMAT_VERSION}|{type(teacher).__module__}.{type(teacher).__qualname__}".encode())
    config = getattr(teacher, "config", None)
    if config is not None:
        fields = {k: v for k, v in config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
        fields = {k: v for k, v in fields.items() if not k.startswith("_attn_implementation")}
        digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    for name, tensor in teacher.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def example_keys(inputs: dict) -> list[bytes]:
    """A 16-byte content key per example: its real tokens (and segment ids), independent of padding and batch order."""
    ids = inputs["input_ids"].cpu()
    mask = inputs.get("attention_mask")
    mask = mask.cpu().bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)
    segments = inputs.get("token_type_ids")
    keys = []
    for i in range(ids.shape[0]):
        digest = hashlib.blake2b(ids[i][mask[i]].to(torch.int64).numpy().tobytes(), digest_size=16)
        if segments is not None:
            digest.update(b"|" + segments[i].cpu()[mask[i]].to(torch.int64).numpy().tobytes())
        keys.append(digest.digest())
    return keys


class TeacherOutputCache:
    """The teacher's head outputs per example, on disk (see the module docstring for layout and guarantees).

    Args:
        root: folder holding one sub-folder per teacher fingerprint (default: `default_root()`).
        refresh_every: new entries buffered in memory before they are folded into the sorted index.

    `logits(teacher, inputs)` returns what `head_logits(teacher(**inputs))` returns, in float32: (B, C) logits for a
    sequence head, (B, T, C) for a token head, (B, T) start/end logits for a span head, zeros on padding.
    """

    def __init__(self, root: str | None = None, refresh_every: int = 1024):
        self.root = root or default_root()
        self.refresh_every = refresh_every
        self.directory: str | None = None  # set from the teacher's fingerprint on first use
        self.hits = self.lookups = 0
        self.teacher_examples = 0  # examples this process ran through the teacher
        self._reset()
        self._writer = None  # (index file, data file, floats written) of this process's own part
        self._teacher = None  # the teacher object the folder was fingerprinted from
        self._variant = ""  # what is read from its outputs, when not its head's logits (an embedding's pooling)

    def _reset(self) -> None:
        self.meta: dict | None = None
        self._keys = np.empty(0, "S16")
        self._parts = np.empty(0, np.uint16)
        self._offsets = np.empty(0, np.int64)
        self._rows = np.empty(0, np.int32)
        self._data: list[np.ndarray] = []  # one read-only float32 map per part, by part number
        self._pending: dict[bytes, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._keys) + len(self._pending)

    @property
    def index_bytes(self) -> int:
        """Bytes of the in-memory index (keys, parts, offsets, rows), without the fixed per-array overhead."""
        return sum(a.nbytes for a in (self._keys, self._parts, self._offsets, self._rows))

    def open(self, teacher: torch.nn.Module, variant: str = "") -> None:
        """Point the cache at `teacher`'s folder and read what earlier runs and other processes wrote there.

        The fingerprint is computed once per teacher object (a frozen teacher's weights do not change).
        """
        if teacher is self._teacher and variant == self._variant:
            return
        directory = os.path.join(self.root, teacher_fingerprint(teacher) + (f"-{variant}" if variant else ""))
        self._teacher, self._variant = teacher, variant
        if directory == self.directory:
            return
        self.close()
        self._reset()
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        self.refresh()

    def refresh(self) -> None:
        """Fold every part in the folder (this process's and others') into the sorted index."""
        if self.directory is None:
            return
        meta_path = os.path.join(self.directory, "meta.json")
        if self.meta is None and os.path.exists(meta_path):
            with open(meta_path, encoding="utf-8") as f:
                self.meta = json.load(f)
        names = sorted(n[: -len(".index")] for n in os.listdir(self.directory) if n.endswith(".index"))
        keys, parts, offsets, rows, data = [], [], [], [], []
        for number, name in enumerate(names):
            base = os.path.join(self.directory, name)
            count = os.path.getsize(base + ".index") // RECORD.itemsize  # whole records only
            if not count:
                data.append(np.empty(0, np.float32))
                continue
            records = np.fromfile(base + ".index", dtype=RECORD, count=count)
            data.append(np.memmap(base + ".data", dtype=np.float32, mode="r"))
            keys.append(records["key"])
            parts.append(np.full(count, number, np.uint16))
            offsets.append(records["offset"])
            rows.append(records["rows"])
        if not keys:
            return
        all_keys = np.concatenate(keys)
        order = np.argsort(all_keys, kind="stable")
        first = np.ones(len(order), bool)  # an example two processes wrote: the first part's copy
        first[1:] = all_keys[order][1:] != all_keys[order][:-1]
        order = order[first]
        self._keys = all_keys[order]
        self._parts = np.concatenate(parts)[order]
        self._offsets = np.concatenate(offsets)[order]
        self._rows = np.concatenate(rows)[order].astype(np.int32)
        self._data = data
        self._pending = {k: v for k, v in self._pending.items() if self._find(k) is None}

    def close(self) -> None:
        """Close this process's part files (the entries stay on disk)."""
        if self._writer is not None:
            self._writer[0].close()
            self._writer[1].close()
            self._writer = None

    def _find(self, key: bytes) -> np.ndarray | None:
        i = int(np.searchsorted(self._keys, key))
        # numpy's S16 drops trailing NUL bytes when it hands an element back: compare in that form (one-to-one on
        # 16-byte keys).
        if i >= len(self._keys) or self._keys[i] != key.rstrip(b"\0"):
            return None
        start = int(self._offsets[i])
        width = sum(self.meta["widths"])
        return self._data[int(self._parts[i])][start : start + int(self._rows[i]) * width].reshape(-1, width)

    def _write(self, key: bytes, rows: np.ndarray) -> None:
        if self._writer is None:
            base = os.path.join(self.directory, f"part-{uuid.uuid4().hex}")
            # Unbuffered: every write reaches the file at once, so other processes read complete records.
            self._writer = [open(base + ".index", "ab", buffering=0), open(base + ".data", "ab", buffering=0), 0]
        index, data, written = self._writer
        data.write(rows.astype(np.float32).tobytes())  # rows first: a record never points past the data
        index.write(np.array([(key, written, len(rows), 0)], dtype=RECORD).tobytes())
        self._writer[2] = written + rows.size
        self._pending[key] = rows
        if len(self._pending) >= self.refresh_every:
            self.refresh()

    def _write_meta(self, fresh: dict[str, torch.Tensor]) -> None:
        from .loss import SPAN_KEYS

        per_token = any(v.dim() >= 3 or n in SPAN_KEYS for n, v in fresh.items())
        meta = {
            "version": FORMAT_VERSION,
            "names": list(fresh),
            "per_token": per_token,
            "widths": [v.shape[-1] if v.dim() == (3 if per_token else 2) else 1 for v in fresh.values()],
            "squeezed": [per_token and v.dim() == 2 for v in fresh.values()],
        }
        path = os.path.join(self.directory, "meta.json")
        partial = f"{path}.partial-{os.getpid()}"
        with open(partial, "w", encoding="utf-8") as f:
            json.dump(meta, f)
        os.replace(partial, path)
        self.meta = meta

    @torch.no_grad()
    def logits(
        self, teacher: torch.nn.Module, inputs: dict, read=None, variant: str = ""
    ) -> tuple[dict[str, torch.Tensor], float]:
        """Teacher logits for `inputs` (as `head_logits` returns them) and this batch's hit rate.

        `read(outputs, inputs) -> dict` reads something else from the teacher's outputs (an embedding model's pooled
        vectors, (batch, hidden)); `variant` names it, and is part of the folder name, so each reading has its own
        entries. The teacher runs only on examples no process has cached for it.
        """
        from .loss import head_logits

        read = read or (lambda outputs, _: head_logits(outputs))
        self.open(teacher, variant)
        keys = example_keys(inputs)
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        mask = (mask.bool() if mask is not None else torch.ones_like(ids, dtype=torch.bool)).cpu()
        found: list[np.ndarray | None] = [None] * len(keys)
        if self.meta is not None:
            for i, key in enumerate(keys):
                found[i] = self._pending.get(key)
                if found[i] is None:
                    found[i] = self._find(key)
        missing = [i for i, rows in enumerate(found) if rows is None]
        if missing:
            index = torch.tensor(missing, device=ids.device)
            sub = {k: v.index_select(0, index) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
            fresh = {name: value.float().cpu() for name, value in read(teacher(**sub), sub).items()}
            self.teacher_examples += len(missing)
            if self.meta is None:
                self._write_meta(fresh)
            for row, i in enumerate(missing):
                if self.meta["per_token"]:
                    parts = [v[row][mask[i]].reshape(int(mask[i].sum()), -1) for v in fresh.values()]
                else:
                    parts = [v[row].reshape(1, -1) for v in fresh.values()]
                found[i] = torch.cat(parts, dim=-1).numpy()
                if keys[i] not in self._pending:  # an example twice in one batch is written once
                    self._write(keys[i], found[i])
        self.lookups += len(keys)
        self.hits += len(keys) - len(missing)
        return self._batch(found, mask, ids), 1.0 - len(missing) / len(keys)

    def _batch(self, found: list[np.ndarray], mask: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """The cached rows of a batch laid out as the head returns them (padding positions zero)."""
        out, start = {}, 0
        for name, width, squeezed in zip(self.meta["names"], self.meta["widths"], self.meta["squeezed"]):
            columns = [torch.from_numpy(np.array(rows[:, start : start + width])) for rows in found]
            start += width
            if not self.meta["per_token"]:
                out[name] = torch.cat(columns).to(ids.device)
                continue
            padded = torch.zeros((len(found), ids.shape[1], width), dtype=torch.float32)
            for i, values in enumerate(columns):
                padded[i][mask[i]] = values
            out[name] = (padded.squeeze(-1) if squeezed else padded).to(ids.device)
        return out
