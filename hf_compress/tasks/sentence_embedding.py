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
from transformers import AutoModel

from ..checks import invalid
from .text_classification import TextClassification

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


def keep_sentence_transformers_files(source: str, directory: str, hidden_size: int) -> bool:
    """When `source` is a sentence-transformers folder, make `directory` (the same model saved again, e.g. after
    quantization) one too, with the same pooling: `SentenceTransformer(directory)` then pools and normalises as the
    source did, where it would otherwise fall back to plain mean pooling. Returns whether it did."""
    pooling = read_pooling(source)
    if pooling is None:
        return False
    write_sentence_transformers_files(directory, pooling, hidden_size, max_seq_length=0, source=source)
    return True


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
        names = _input_names(model)
        encoded = {k: v.to(next(model.parameters()).device) for k, v in encoded.items() if k in names}
        rows.append(_pooled(model(**encoded), encoded.get("attention_mask"), pooling).cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, model.config.hidden_size), np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# The recipe task: `task: sentence-embedding`.

PROBE_TRAIN_EXAMPLES = 4000  # labelled training texts the report's linear probe is fitted on


@dataclass
class EmbeddingEvalData:
    """What the report scores an embedding model on: the evaluation split, and the training texts the probe fits."""

    eval: object  # tokenised evaluation split with `label`
    probe_train: object  # tokenised first PROBE_TRAIN_EXAMPLES training texts with `label`


class SentenceEmbedding(TextClassification):
    """Sentence embeddings (`AutoModel`, pooled as the teacher's sentence-transformers files say).

    Training reads the texts only (the student learns the teacher's embeddings; labels, if any, are dropped with the
    columns the model does not take). The report scores each model by a downstream linear probe on the labelled
    evaluation split (`probe_accuracy`: logistic regression fitted on the embeddings of PROBE_TRAIN_EXAMPLES training
    texts) and each model against the first one by `mean_cosine` and `top10_overlap` (packaged `linear_probe` and
    `embedding_agreement` modules), so the data needs a label column for the report.
    """

    name = "sentence-embedding"
    primary_metric = "probe_accuracy"
    pipeline_tag = "sentence-similarity"
    card_metrics = (("probe_accuracy", "accuracy", "Linear-probe accuracy"),)
    pooling: Pooling | None = None  # set by the recipe from the trainer; else read from each model's folder

    auto_class = AutoModel

    def check_model_labels(self, config, names, num_labels: int, field: str) -> None:
        """An embedding model has no classes: nothing to match."""

    def label_kwargs(self, names, num_labels: int) -> dict:
        return {}

    def label_kwargs_from(self, config) -> dict:
        return {}

    def check_model_for_data(self, model, model_dir: str, data) -> None:
        """The report's check: a base model (no task head), whose pooled output is the embedding, or the export of
        one (its graph returns `sentence_embedding`)."""
        if "sentence_embedding" in getattr(model, "output_names", ()):
            return
        if getattr(model, "base_model", None) is not model:
            raise invalid(
                "MODEL_DIR", model_dir, f"a base model (AutoModel) to score as sentence embeddings (this is a "
                f"{type(model).__name__})",
            )  # fmt: skip

    def trainer_metrics(self, raw_validation, tokenizer, recipe):
        return None  # evaluation during training reports the distillation terms

    def prepare_eval(self, raw, tokenizer, recipe, split: str | None = None) -> EmbeddingEvalData:
        """The evaluation split and the probe's training texts, tokenised with `tokenizer`."""
        train = raw["train"].select(range(min(PROBE_TRAIN_EXAMPLES, len(raw["train"]))))
        return EmbeddingEvalData(
            super().prepare_eval(raw, tokenizer, recipe, split),
            self.prepare(train, tokenizer, recipe.text_column, recipe.max_length),
        )

    def num_examples(self, data) -> int:
        """Evaluation texts of the prepared data, or of a raw split (what `hf-compress report` checks first)."""
        return len(data.eval) if isinstance(data, EmbeddingEvalData) else len(data)

    @torch.inference_mode()
    def predict(self, model, data: EmbeddingEvalData, tokenizer, batch_size: int = 128) -> dict[str, np.ndarray]:
        """{'eval', 'probe_train'}: (n, hidden) float32 embeddings, in dataset order."""
        pooling = self.pooling or read_pooling(getattr(model.config, "name_or_path", None)) or Pooling()
        return {
            "eval": pooled_embeddings(model, data.eval, tokenizer, pooling, batch_size),
            "probe_train": pooled_embeddings(model, data.probe_train, tokenizer, pooling, batch_size),
        }

    def score(self, predictions: dict, data: EmbeddingEvalData) -> dict[str, float]:
        """Linear-probe accuracy on the evaluation split (packaged `linear_probe` module)."""
        from ..metrics import load_metric

        probe = load_metric("linear_probe").compute(
            predictions=predictions["eval"], references=np.asarray(data.eval["label"]),
            train_embeddings=predictions["probe_train"], train_labels=np.asarray(data.probe_train["label"]),
        )  # fmt: skip
        return {"probe_accuracy": probe["accuracy"]}

    def agreement_metrics(self, predictions: dict, reference: dict) -> dict[str, float]:
        """Mean cosine to the reference's embeddings and top-10 neighbour overlap on the evaluation split."""
        from ..metrics import load_metric

        result = load_metric("embedding_agreement").compute(
            predictions=predictions["eval"], references=reference["eval"], k=min(10, len(reference["eval"]) - 1)
        )
        return {"mean_cosine": result["mean_cosine"], "top10_overlap": result["top_k_overlap"]}

    def agreement(self, predictions: dict, reference: dict) -> float:
        """The mean cosine similarity to the reference's embeddings."""
        return self.agreement_metrics(predictions, reference)["mean_cosine"]


def pooled_embeddings(model, dataset, tokenizer, pooling: Pooling, batch_size: int = 128) -> np.ndarray:
    """(len(dataset), hidden) float32 embeddings of a tokenised dataset, in dataset order."""
    from transformers import DataCollatorWithPadding

    from .tokenizer_checks import right_padded

    collator = DataCollatorWithPadding(right_padded(tokenizer))
    names = _input_names(model)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in dataset.column_names and k in names]
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(dataset), batch_size):
        rows = dataset[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collator([{k: rows[k][i] for k in keys} for i in
                                                       range(len(rows[keys[0]]))]).items()}  # fmt: skip
        out.append(_pooled(model(**batch), batch.get("attention_mask"), pooling).cpu().numpy())
    return np.concatenate(out)


def _input_names(model) -> set[str]:
    """The tensors the model reads: its forward's parameters, or an exported file's inputs (`ExportedModel`)."""
    exported = getattr(model, "input_names", None)
    return set(exported) if exported is not None else set(inspect.signature(model.forward).parameters)


def _pooled(output, attention_mask, pooling: Pooling) -> torch.Tensor:
    """The sentence vectors of a model's output: pooled from its token states, or as an exported graph already
    pooled them (`sentence_embedding`: hf-compress export runs the folder's pooling inside the graph)."""
    pooled = output.get("sentence_embedding") if hasattr(output, "get") else None
    if pooled is not None:
        return pooled.float()
    return pooling(output.last_hidden_state, attention_mask)
