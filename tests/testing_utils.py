"""Tiny random models and data for fast unit tests (hidden 32, 2 layers, vocab ~1k)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from datasets import Dataset
from transformers import (
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
)

VOCAB = 1000


def tiny_bert_config(**overrides) -> BertConfig:
    """A BertConfig small enough that a training step takes milliseconds."""
    kwargs = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    kwargs.update(overrides)
    return BertConfig(**kwargs)


def tiny_bert(seed: int = 0, **overrides) -> BertForSequenceClassification:
    """A randomly initialised tiny BertForSequenceClassification, deterministic for a seed."""
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_bert_config(**overrides)).eval()


def training_args(cls, output_dir, **overrides):
    """Arguments of class `cls` (any TrainingArguments subclass) for a fast, quiet, CPU-only tiny run.

    The one factory the trainer tests share; each test passes only what it is about.
    """
    kwargs = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1,
        seed=0,
    )
    kwargs.update(overrides)
    return cls(**kwargs)


def tiny_batch(batch_size: int = 4, seq_len: int = 12, seed: int = 0, num_labels: int = 3) -> dict:
    """A padded batch of random token ids with labels."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, VOCAB, (batch_size, seq_len), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, seq_len // 2 :] = 0  # one padded row, so masking paths are exercised
    input_ids[attention_mask == 0] = 0
    labels = torch.randint(0, num_labels, (batch_size,), generator=g)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def tiny_dataset(n: int = 32, seq_len: int = 10, seed: int = 0, num_labels: int = 3, labels: bool = True) -> Dataset:
    """A tokenised classification dataset of random ids whose label depends on the first token (learnable)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (n, seq_len), generator=g)
    rows = {"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()}
    if labels:
        rows["label"] = (ids[:, 0] % num_labels).tolist()
    return Dataset.from_dict(rows)


def tiny_tokenizer(directory):
    """A BertTokenizerFast over a vocabulary of VOCAB words "w0".."w994", built offline in `directory`."""
    from transformers import BertTokenizerFast

    os.makedirs(directory, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(VOCAB - 5)]
    path = os.path.join(directory, "vocab.txt")
    with open(path, "w") as f:
        f.write("\n".join(vocab) + "\n")
    return BertTokenizerFast(vocab=path)  # transformers 5 ignores vocab_file= here


def tiny_checkpoint(directory, seed: int = 0, **overrides) -> str:
    """Save a tiny BERT classifier with its tokenizer into `directory`, as a Hub checkpoint would be laid out."""
    model = tiny_bert(seed=seed, **overrides)
    model.config.id2label = {0: "negative", 1: "neutral", 2: "positive"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    model.save_pretrained(directory)
    tiny_tokenizer(directory).save_pretrained(directory)
    return str(directory)


def tiny_text_csv(path, n: int = 48, seed: int = 0) -> str:
    """A CSV of text,label rows whose label is decided by the first word (so a model can learn it)."""
    import csv
    import random

    rng = random.Random(seed)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        for _ in range(n):
            words = [rng.randrange(VOCAB - 5) for _ in range(rng.randint(3, 9))]
            writer.writerow([" ".join(f"w{w}" for w in words), words[0] % 3])
    return str(path)


def load_in_stock_transformers(model_dir) -> subprocess.CompletedProcess:
    """Load `model_dir` with AutoModelForSequenceClassification and BertForSequenceClassification in a fresh process
    that never imports hf_compress (run from the model's parent, not the repo). Prints "LOADED <class>" or
    "FAILED <class> <error type>" per loader and "hf_compress imported: <bool>"; exits non-zero if a loader failed."""
    return run_python(
        f"""
        import sys
        import transformers
        errors = []
        for loader in (transformers.AutoModelForSequenceClassification, transformers.BertForSequenceClassification):
            try:
                loader.from_pretrained({str(model_dir)!r})
                print("LOADED", loader.__name__)
            except Exception as error:
                print("FAILED", loader.__name__, type(error).__name__)
                errors.append(error)
        print("hf_compress imported:", "hf_compress" in sys.modules)
        if errors:
            raise errors[0]
        """,
        cwd=str(os.path.dirname(os.path.abspath(model_dir))),  # not the repo: nothing imports hf_compress by accident
    )


def run_python(code: str, cwd: str) -> subprocess.CompletedProcess:
    """Run code in a fresh interpreter (no state shared with this test process, no PYTHONPATH to the repo)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


# The tiny BERT of each task head, and the outputs each head returns (the export and compressed-tensors matrices).
HEADS = {
    "text-classification": BertForSequenceClassification,
    "token-classification": BertForTokenClassification,
    "question-answering": BertForQuestionAnswering,
}
OUTPUTS = {
    "text-classification": ("logits",),
    "token-classification": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
}
