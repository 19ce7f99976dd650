"""Sentence embeddings: the pooling a sentence-transformers checkpoint declares, and the files that make a saved
student load with `SentenceTransformer(path)` as well as with `AutoModel`.

A sentence-transformers folder is a transformers checkpoint plus module files: `modules.json` lists the pipeline
(Transformer → Pooling → optional Normalize), `1_Pooling/config.json` the pooling mode, `sentence_bert_config.json` the
maximum sequence length. `read_pooling` reads the first two; `write_sentence_transformers_files` writes all three
(copying the teacher's own module files when it has them, so their versions and extra settings survive).
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import invalid

POOLING_MODES = ("mean", "cls", "max")
# sentence-transformers' Pooling config key of each mode we compute
_MODE_KEYS = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens"}
_OTHER_KEYS = (
    "pooling_mode_mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens",
    "pooling_mode_lasttoken",
)
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


@dataclass(frozen=True)
class Pooling:
    """How token states become one sentence vector (sentence-transformers' `Pooling`, then `Normalize` if set).

    mode: 'mean' (over real tokens), 'cls' (the first token) or 'max' (over real tokens, per dimension).
    normalize: divide each vector by its L2 norm, as a `Normalize` module does (all-MiniLM-L6-v2,
    all-mpnet-base-v2).
    """

    mode: str = "mean"
    normalize: bool = False

    def __post_init__(self):
        if self.mode not in POOLING_MODES:
            raise invalid("embedding_pooling", self.mode, ", ".join(POOLING_MODES))

    def __call__(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(batch, tokens, hidden) states and a (batch, tokens) mask -> (batch, hidden) float32 embeddings.

        Padding never changes an embedding: mean and max read real tokens only.
        """
        hidden = hidden.float()
        if attention_mask is None:
            attention_mask = torch.ones(hidden.shape[:2], device=hidden.device)
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        if self.mode == "cls":
            pooled = hidden[:, 0]
        elif self.mode == "max":
            pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
        else:  # sentence-transformers clamps the token count at 1e-9
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, p=2, dim=1) if self.normalize else pooled


def read_pooling(directory: str | None) -> Pooling | None:
    """The pooling a sentence-transformers folder declares, or None when `directory` has no `modules.json`.

    Raises ValueError when the folder asks for a pooling mode other than mean, CLS or max (or several at once).
    """
    if not directory or not os.path.isfile(os.path.join(directory, "modules.json")):
        return None
    with open(os.path.join(directory, "modules.json"), encoding="utf-8") as f:
        modules = json.load(f)
    pooling = next((m for m in modules if m.get("type", "").endswith(".Pooling")), None)
    normalize = any(m.get("type", "").endswith(".Normalize") for m in modules)
    if pooling is None:
        return None
    with open(os.path.join(directory, pooling["path"], "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    modes = [mode for mode, key in _MODE_KEYS.items() if config.get(key)]
    others = [key for key in _OTHER_KEYS if config.get(key)]
    if len(modes) != 1 or others:
        raise invalid(
            f"{pooling['path']}/config.json",
            {k: v for k, v in config.items() if k.startswith("pooling_mode") and v},
            "exactly one of " + ", ".join(_MODE_KEYS.values()),
        )
    return Pooling(modes[0], normalize)


def write_sentence_transformers_files(
    directory: str, pooling: Pooling, hidden_size: int, max_seq_length: int, source: str | None = None
) -> None:
    """Write the module files that make `directory` (a saved transformers model) a sentence-transformers folder.

    With `source` (the teacher's folder) holding sentence-transformers files, its `modules.json`,
    `sentence_bert_config.json` and `config_sentence_transformers.json` are copied (the student computes what they
    describe), then the pooling config is written from `pooling` and the embedding width from the student.
    """
    copied = False
    if source and read_pooling(source) == pooling:
        for name in ST_FILES:
            if os.path.isfile(os.path.join(source, name)):
                shutil.copyfile(os.path.join(source, name), os.path.join(directory, name))
        copied = os.path.isfile(os.path.join(directory, "modules.json"))
    if not copied:
        modules = [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ]
        if pooling.normalize:
            normalize = "sentence_transformers.models.Normalize"
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": normalize})
        _write_json(os.path.join(directory, "modules.json"), modules)
        _write_json(
            os.path.join(directory, "sentence_bert_config.json"),
            {"max_seq_length": max_seq_length, "do_lower_case": False},
        )
    with open(os.path.join(directory, "modules.json"), encoding="utf-8") as f:
        modules = json.load(f)
    pooling_dir = next(m["path"] for m in modules if m["type"].endswith(".Pooling"))
    os.makedirs(os.path.join(directory, pooling_dir), exist_ok=True)
    config = {"word_embedding_dimension": hidden_size}
    config.update({key: mode == pooling.mode for mode, key in _MODE_KEYS.items()})
    config.update(dict.fromkeys(_OTHER_KEYS, False))
    _write_json(os.path.join(directory, pooling_dir, "config.json"), config)
    for module in modules:
        os.makedirs(os.path.join(directory, module["path"]), exist_ok=True)  # Normalize: an empty folder


def _write_json(path: str, value) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


@torch.no_grad()
def sentence_embeddings(
    model, tokenizer, texts: list[str], pooling: Pooling, batch_size: int = 64, max_length: int = 128
) -> np.ndarray:
    """(len(texts), hidden) float32 numpy embeddings of `texts` by `model` (a base model) and `pooling`."""
    model.eval()
    rows = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenizer(
            texts[start : start + batch_size], padding=True, truncation=True, max_length=max_length,
            return_tensors="pt",
        )  # fmt: skip
        names = set(inspect.signature(model.forward).parameters)
        encoded = {k: v.to(model.device) for k, v in encoded.items() if k in names}
        rows.append(pooling(model(**encoded).last_hidden_state, encoded.get("attention_mask")).cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, model.config.hidden_size), np.float32)
