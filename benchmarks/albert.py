"""ALBERT-style compression of the fine-tuned MiniLM teacher on tweets, each arm distilled from the teacher.

Usage: python -m benchmarks.albert [--quick] [--arms 384x6 128x1 ...] [--n-train 8000] [--epochs 1]
Arms are EMBEDDINGxGROUPS; the default grid is E ∈ {384 (none), 128, 64} × G ∈ {6, 3, 1}.
Writes benchmarks/results/albert.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch
from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

from hf_compress import CompressionTrainer, CompressionTrainingArguments
from hf_compress.evaluation.measure import bytes_on_disk, predict

from .common import run_info, teacher_path, training_args, tweets_tokenized

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DEFAULT_ARMS = [f"{e}x{g}" for e in (384, 128, 64) for g in (6, 3, 1)]


def run_arm(arm: str, sharing_init: str, teacher, data, tokenizer, n_train: int, epochs: float, test) -> dict:
    """Convert a copy of the teacher, distil it, and measure it."""
    embedding_size, groups = (int(x) for x in arm.split("x"))
    student = AutoModelForSequenceClassification.from_pretrained(teacher_path())
    train = data["train"].shuffle(seed=1000).select(range(n_train))
    with tempfile.TemporaryDirectory() as workdir:
        args = CompressionTrainingArguments(
            **training_args(workdir, 0, epochs),
            temperature=2.0,
            alpha=0.9,
            hidden_loss_weight=1.0,
            embedding_size=None if embedding_size == teacher.config.hidden_size else embedding_size,
            num_hidden_groups=None if groups == teacher.config.num_hidden_layers else groups,
            sharing_init=sharing_init,
        )
        trainer = CompressionTrainer(
            model=student,
            teacher_model=teacher,
            args=args,
            train_dataset=train,
            data_collator=DataCollatorWithPadding(tokenizer),
        )
        before = predict(trainer.model, test, tokenizer).argmax(-1)
        start = time.time()
        trainer.train()
        seconds = time.time() - start
        trainer.save_model(os.path.join(workdir, "final"))
        size = bytes_on_disk(os.path.join(workdir, "final"))
        model = trainer.model
    labels = torch.tensor(test["label"]).numpy()
    accuracy = float((predict(model, test, tokenizer).argmax(-1) == labels).mean())
    return {
        "arm": arm,
        "sharing_init": sharing_init,
        "model_type": model.config.model_type,
        "parameters": model.num_parameters(),
        "bytes_on_disk": size,
        "accuracy_before_training": float((before == labels).mean()),
        "accuracy": accuracy,
        "train_seconds": seconds,
        "reconstruction_error": (model.config.compression or {})
        .get("albert", {})
        .get("embedding_reconstruction_error"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--arms", nargs="+", default=DEFAULT_ARMS)
    parser.add_argument("--sharing-inits", nargs="+", default=["mean"])
    parser.add_argument("--n-train", type=int, default=8000)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--out", default=os.path.join(RESULTS, "albert.json"))
    opts = parser.parse_args()
    data, tokenizer = tweets_tokenized()
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_path())
    test = data["test"].select(range(300)) if opts.quick else data["test"]
    n_train = 128 if opts.quick else opts.n_train
    labels = torch.tensor(test["label"]).numpy()
    teacher_acc = float((predict(teacher, test, tokenizer).argmax(-1) == labels).mean())
    with tempfile.TemporaryDirectory() as tmp:
        teacher.save_pretrained(tmp)
        teacher_bytes = bytes_on_disk(tmp)
    result = {
        **run_info(),
        "quick": opts.quick,
        "n_train": n_train,
        "epochs": opts.epochs,
        "teacher": {"accuracy": teacher_acc, "parameters": teacher.num_parameters(), "bytes_on_disk": teacher_bytes},
        "rows": [],
    }
    rows = result["rows"]
    os.makedirs(os.path.dirname(opts.out), exist_ok=True)
    for arm in opts.arms:
        for init in opts.sharing_inits:
            if init != "mean" and arm.endswith(f"x{teacher.config.num_hidden_layers}"):
                continue  # no sharing: nothing to initialise
            row = run_arm(arm, init, teacher, data, tokenizer, n_train, opts.epochs, test)
            rows.append(row)
            print(json.dumps(row), flush=True)
            with open(opts.out, "w") as f:  # after every arm, so a long run that stops keeps what it measured
                json.dump(result, f, indent=2)
    print("| E × G | init | params | vs teacher | MB | accuracy (before → after) | vs teacher |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['arm']} | {r['sharing_init']} | {r['parameters'] / 1e6:.2f}M | "
            f"{result['teacher']['parameters'] / r['parameters']:.2f}× smaller | "
            f"{r['bytes_on_disk'] / 1e6:.1f} | {r['accuracy_before_training']:.4f} → {r['accuracy']:.4f} | "
            f"{r['accuracy'] / teacher_acc:.1%} |"
        )


if __name__ == "__main__":
    main()
