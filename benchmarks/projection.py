"""Hidden-state distillation into a narrower student, which needs the learned projection W_h (TinyBERT).

Issue: the projection lived outside the student, so Trainer's zero_grad never reached it and AdamW saw the running
sum of every past gradient. This script trains the same student before and after the fix and reports accuracy and
the projection's gradient norm at the start of each optimizer step (0 when it is cleared as it should be).

It uses only the API both versions share and imports nothing else from benchmarks/, so it also runs as a file
against an older checkout (as a file, PYTHONPATH comes before this checkout; with -m the current folder would):
    OMP_NUM_THREADS=1 python -m benchmarks.projection --label after
    git worktree add /tmp/before d6a6f2c && OMP_NUM_THREADS=1 PYTHONPATH=/tmp/before \\
        python benchmarks/projection.py --label before
Teacher: the fine-tuned tweets MiniLM cached by benchmarks/common.py (6 x 384). Student: BERT 3 x 256 (heads 4,
FFN 1024), randomly initialised with a fixed seed, distilled on the first 4,000 training tweets for 2 epochs
(T=2, alpha=0.9, hidden_loss_weight=1), evaluated on the 4,000 test tweets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    TrainerCallback,
)

import hf_compress
from hf_compress import DistillationTrainer, DistillationTrainingArguments, load_tweets, tokenize

CACHE = os.environ.get("HF_COMPRESS_CACHE", os.path.expanduser("~/.cache/hf_compress"))
TEACHER_DIR = os.path.join(CACHE, "tweets-teacher-minilm")
HERE = os.path.dirname(os.path.abspath(__file__))


class ProjectionGradient(TrainerCallback):
    """Norm of the projection's gradient when each optimizer step begins (0 when it was cleared)."""

    def __init__(self):
        self.trainer, self.norms = None, []

    def on_step_begin(self, args, state, control, **kwargs):
        grads = [p.grad for p in self.trainer.hidden_projection.parameters()]
        self.norms.append(sum(float(g.norm()) for g in grads if g is not None))


@torch.inference_mode()
def accuracy(model, data, collator, batch_size: int = 128) -> float:
    model.eval()
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in data.column_names]
    correct = 0
    for start in range(0, len(data), batch_size):
        rows = data[start : start + batch_size]
        batch = collator([{k: rows[k][i] for k in keys} for i in range(len(rows["input_ids"]))])
        correct += int((model(**batch).logits.argmax(-1).numpy() == np.asarray(rows["label"])).sum())
    return correct / len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="name of this run in the JSON (e.g. before / after)")
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    opts = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(TEACHER_DIR)
    data = tokenize(load_tweets(), tokenizer)
    train = data["train"].shuffle(seed=opts.seed).select(range(opts.n_train))
    teacher = AutoModelForSequenceClassification.from_pretrained(TEACHER_DIR)
    torch.manual_seed(opts.seed)
    student = BertForSequenceClassification(
        BertConfig(
            vocab_size=teacher.config.vocab_size, hidden_size=256, num_hidden_layers=3, num_attention_heads=4,
            intermediate_size=1024, num_labels=3, id2label=teacher.config.id2label, label2id=teacher.config.label2id,
        )
    )  # fmt: skip
    args = DistillationTrainingArguments(
        output_dir=os.path.join(HERE, "runs", f"projection-{opts.label}"),
        num_train_epochs=opts.epochs,
        per_device_train_batch_size=32,
        learning_rate=opts.learning_rate,
        warmup_steps=0.06,
        temperature=2.0,
        alpha=0.9,
        hidden_loss_weight=1.0,
        logging_steps=25,
        save_strategy="no",
        report_to="none",
        seed=opts.seed,
        disable_tqdm=True,
    )
    collator = DataCollatorWithPadding(tokenizer)
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=train, data_collator=collator
    )
    watch = ProjectionGradient()
    watch.trainer = trainer
    trainer.add_callback(watch)
    start = time.time()
    trainer.train()
    seconds = time.time() - start
    norms = watch.norms
    result = {
        "label": opts.label,
        "hf_compress_version": hf_compress.__version__,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python " + " ".join(sys.argv),
        "steps": len(norms),
        "accuracy": accuracy(trainer.model, data["test"], collator),
        "teacher_accuracy": accuracy(teacher, data["test"], collator),
        "projection_grad_norm_at_step_start": {
            "first": norms[1] if len(norms) > 1 else None,
            "middle": norms[len(norms) // 2],
            "last": norms[-1],
            "max": max(norms),
        },
        "final_train_loss": [h for h in trainer.state.log_history if "loss" in h][-1]["loss"],
        "train_seconds": round(seconds, 1),
    }
    print(json.dumps(result, indent=2))
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", f"projection-{opts.label}.json"), "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
