"""A reference for the sentence-embedding students: the same distillation as a plain PyTorch loop, no hf_compress.

    python -m benchmarks.embeddings_reference [--layers 0,2,4] [--texts 16000] [--epochs 2] [--out PATH]

Why: the `embeddings` benchmark's students keep the downstream probe but not the teacher's embedding space (mean
cosine 0.84 for all-MiniLM-L6-v2 → 3 layers). This loop says whether that is our trainer or the data: the student is
the teacher's `--layers` (a copy of all-MiniLM-L6-v2 with the other layers dropped, as create_student keeps 0, 2, 4),
trained with AdamW (lr 2e-4, no weight decay, 6% linear warm-up then linear decay), batch 64, on the texts of the
first `--texts` train tweets shuffled with seed 1000 (the `minilm-3` arm's), loss = MSE + (1 − cosine) between the
normalised mean-pooled embeddings of student and teacher (the arm's terms, weights 1 and 1). The teacher runs on every
batch (no cache). Reported: the mean cosine to the teacher on the first 2,000 test tweets, before and after training.
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import time

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from .common import load_tweets, minilm_path, run_info, write_json


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", default="0,2,4")
    parser.add_argument("--texts", type=int, default=16000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/embeddings-reference.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    path = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    teacher = AutoModel.from_pretrained(path).eval()
    keep = [int(i) for i in args.layers.split(",")]
    student = copy.deepcopy(teacher)
    student.encoder.layer = torch.nn.ModuleList([student.encoder.layer[i] for i in keep])
    student.config.num_hidden_layers = len(keep)
    data = load_tweets()
    train = data["train"].shuffle(seed=1000)
    texts = train["text"][: args.texts]
    test = data["test"]["text"][:2000]

    def embed(model, batch):
        encoded = tokenizer(batch, padding=True, truncation=True, max_length=128, return_tensors="pt")
        hidden = model(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        return F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    @torch.no_grad()
    def cosine() -> float:
        student.eval()
        s = torch.cat([embed(student, test[i : i + 256]) for i in range(0, len(test), 256)])
        t = torch.cat([embed(teacher, test[i : i + 256]) for i in range(0, len(test), 256)])
        return float((s * t).sum(-1).mean())

    before = cosine()
    print(f"before training: mean cosine {before:.4f}", flush=True)
    batch_size = 64
    steps = args.epochs * math.ceil(len(texts) / batch_size)
    warmup = int(0.06 * steps)
    optimizer = torch.optim.AdamW(student.parameters(), lr=2e-4, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / max(warmup, 1), max(0.0, (steps - s) / max(steps - warmup, 1)))
    )
    start, step, losses = time.time(), 0, []
    for epoch in range(args.epochs):
        order = list(range(len(texts)))
        random.Random(epoch).shuffle(order)
        for i in range(0, len(order), batch_size):
            batch = [texts[j] for j in order[i : i + batch_size]]
            with torch.no_grad():
                target = embed(teacher, batch)
            student.train()
            predicted = embed(student, batch)
            loss = (predicted - target).pow(2).mean(1).mean() + (1 - F.cosine_similarity(predicted, target)).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step % 100 == 0:
                losses.append(round(loss.item(), 4))
                print(f"step {step}: loss {loss.item():.4f} ({time.time() - start:.0f} s)", flush=True)
    seconds = time.time() - start
    after = cosine()
    print(f"after {step} steps: mean cosine {after:.4f} ({seconds:.0f} s)")
    write_json(
        args.out,
        {
            "run_info": run_info(),
            "layers": keep,
            "texts": len(texts),
            "epochs": args.epochs,
            "steps": step,
            "loss_every_100_steps": losses,
            "mean_cosine_before": before,
            "mean_cosine_after": after,
            "seconds": round(seconds, 1),
        },
    )


if __name__ == "__main__":
    main()
