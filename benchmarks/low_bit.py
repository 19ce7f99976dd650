"""Below 8 bits on tweets: fp32, int8 PTQ, 4-bit QAT, ternary QAT and a mixed-width budget, by accuracy and bytes.

Usage: python -m benchmarks.low_bit [--seeds 0 1 2] [--arms fp32 int8 4bit ternary mixed] [--epochs 2] [--quick]
       [--out benchmarks/results/low_bit.json]
       python -m benchmarks.low_bit --latency --seeds 0 [--arms ...] --out LATENCY.json   (after the training runs)
       python -m benchmarks.low_bit --summarize PART.json ... --out benchmarks/results/low_bit.json
       python -m benchmarks.low_bit --fidelity --seeds 0 1 2 --out FIDELITY.json   (after the PTQ arms)

Every arm distils a 3-layer student (`create_student(teacher, num_hidden_layers=3)`) of the cached tweets teacher
(`benchmarks.common.TEACHER_DIR`; this script waits for it and never trains it) with `CompressionTrainer` on 4,000
train tweets (batch 32, T=2, α=0.9, hidden_loss_weight=1 as TernaryBERT distils hidden states, lr 1e-4):

- fp32: plain distillation; int8: that fp32 student after `quantize_` (post-training, no extra training);
- 4bit: weight_bits=4, one scale per row, every Linear and the word embeddings (as int8 PTQ; quantization-aware);
- ternary: weight_bits=2 for the same Linears, word embeddings at 4 bits (embedding_weight_bits=4);
- mixed: bit_budget_mb = the 4-bit arm's stored bytes of the same modules; choose_bit_widths picks 8/4/2 per module;
- mixed-ternary: the same at the ternary arm's bytes (Linears at 2 bits, word embeddings at 4), a tighter budget;
- 4bit-ptq, ternary-ptq, mixed-ptq, mixed-ternary-ptq: the same plans applied to the saved fp32 student with no
  training at all (round to nearest, then packed): `choose_bit_widths` ranks the trained fp32 student's modules on the
  same 8 train batches the trainer calibrates on. They ask whether the sensitivity ranking spends bytes better than a
  uniform width where nothing repairs the rounding (with QAT, uniform 4-bit already matches the fp32 student);
- mixed-kl, mixed-ternary-kl (and their -ptq arms): the same budgets ranked by ZeroQ's measured output KL
  (`bit_sensitivity: kl`) instead of the Fisher estimate;
- ternary-from-fp32: the ternary arm's fields, but its student starts from the saved fp32 student of the same seed
  (TernaryBERT initialises quantization-aware training from a fine-tuned full-precision model), not from the
  teacher's layers: twice the training of the other arms;
- ternary-long: the ternary arm trained for twice --epochs, from the teacher's layers: the control of
  ternary-from-fp32 (same total training, other initialisation).
- binary: weight_bits=1 (sign × mean|w| per row, BinaryBERT / BiT) for the same Linears, word embeddings at 4 bits.

Accuracy and agreement with the teacher on the 4,000 test tweets; bytes of the saved model.safetensors; every saved
model is reloaded with `from_pretrained` and must give the trainer's logits. Low-bit weights are a storage format
here: they compute with the int8 kernel, so their latency should be int8's; `--latency` measures it (teacher and the
saved students of one seed, reloaded, interleaved on one thread, batch 1 and 32, 48 tokens).
`--fidelity` compares the saved arms made from the fp32 student (int8 and the -ptq arms) with that student on the
test tweets: argmax agreement and logits SQNR, finer than accuracy (whose binomial standard error on 4,000 tweets is
±0.65 points) at telling how much the rounding itself changed.
Writes JSON after every arm and prints a Markdown table for RESULTS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from functools import partial

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from hf_compress import (
    CompressionTrainer,
    CompressionTrainingArguments,
    Int8QuantizationConfig,
    bake_low_bit_,
    choose_bit_widths,
    create_student,
    fake_quantize_,
    quantize_,
)
from hf_compress.evaluation.measure import predict
from hf_compress.methods.low_bit.bit_widths import planned_megabytes
from hf_compress.methods.low_bit.fake_quant import select_low_bit_modules

from .common import run_info, speedup_rows, training_args, tweets_tokenized, wait_for_teacher

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
MODELS = os.path.join(tempfile.gettempdir(), "hf-compress-low-bit-models")
ARMS = (
    "fp32",
    "int8",
    "4bit",
    "ternary",
    "mixed",
    "mixed-ternary",
    "mixed-kl",
    "mixed-ternary-kl",
    "4bit-ptq",
    "ternary-ptq",
    "mixed-ptq",
    "mixed-ternary-ptq",
    "mixed-kl-ptq",
    "mixed-ternary-kl-ptq",
    "ternary-from-fp32",
    "ternary-long",
    "binary",
)
# Arms made from the saved fp32 student of the same seed, with no training (int8 PTQ and the low-bit plans, rounded).
FROM_FP32 = ("int8", *(arm for arm in ARMS if arm.endswith("-ptq")))
# The budget (the uniform arm's bytes) each mixed arm spends.
BUDGET_OF = {
    "mixed": "mixed",
    "mixed-kl": "mixed",
    "mixed-ternary": "mixed-ternary",
    "mixed-ternary-kl": "mixed-ternary",
}
# One scale per row and every Linear plus the word embeddings: the modules int8 PTQ (`quantize_`) converts, so the
# arms compare like for like. Per 64-column groups with fp32 scales add 1/16 bits per code: the 4-bit student would
# be 57.6% of the int8 one's bytes (planned), per row 52.6% (the goal is <= 55%).
GROUP_SIZE = None
MODULES = "all"
LOW_BIT_FIELDS = {
    "4bit": dict(weight_bits=4),
    "ternary": dict(weight_bits=2, embedding_weight_bits=4),
    "mixed": {},  # bit_budget_mb filled in from the 4-bit arm's bytes
    "mixed-ternary": {},  # bit_budget_mb filled in from the ternary arm's bytes
    "mixed-kl": dict(bit_sensitivity="kl"),
    "mixed-ternary-kl": dict(bit_sensitivity="kl"),
    "ternary-from-fp32": dict(weight_bits=2, embedding_weight_bits=4),
    "ternary-long": dict(weight_bits=2, embedding_weight_bits=4),
    "binary": dict(weight_bits=1, embedding_weight_bits=4),
}
# Quantization-aware arms whose student starts from the saved fp32 student of the same seed instead of
# create_student(teacher): TernaryBERT (arXiv:2009.12812, Sec. 3.3) initialises the quantized model from a fine-tuned
# full-precision one. Two epochs of fp32 distillation then two of QAT: twice the other arms' training.
INIT_FROM_FP32 = ("ternary-from-fp32",)
# Arms trained for a multiple of --epochs: ternary-long is the control of ternary-from-fp32 (the same total training,
# from the teacher's layers), which tells the initialisation from the longer training.
EPOCH_FACTOR = {"ternary-long": 2}


def evaluate(model, test, tokenizer, teacher_pred: np.ndarray | None = None) -> tuple[dict, np.ndarray]:
    """Accuracy (and agreement with the teacher's predictions) on a tokenised test set, and the logits."""
    logits = predict(model, test, tokenizer)
    pred = logits.argmax(-1)
    row = {"accuracy": float((pred == np.asarray(test["label"])).mean())}
    if teacher_pred is not None:
        row["agreement_with_teacher"] = float((pred == teacher_pred).mean())
    return row, logits


def budgets_mb(teacher) -> dict[str, float]:
    """Megabytes of packed codes + scales of the 4-bit and the ternary arms (same modules, same shapes): the budgets
    of the mixed arms."""
    student = create_student(teacher, num_hidden_layers=3)
    return {
        "mixed": planned_megabytes(student, uniform_plan(student, "4bit"), GROUP_SIZE),
        "mixed-ternary": planned_megabytes(student, uniform_plan(student, "ternary"), GROUP_SIZE),
    }


def uniform_plan(model, arm: str) -> dict[str, int]:
    """{module: bits} of the 4bit or ternary arm: every selected module at 4 bits, or Linears at 2 and the word
    embeddings at 4."""
    word = model.get_input_embeddings()
    chosen = select_low_bit_modules(model, MODULES)
    return {name: 4 if arm == "4bit" or module is word else 2 for name, module in chosen.items()}


def calibration_batches(train, tokenizer, model, count: int) -> list[dict]:
    """The first `count` train batches in order, model inputs and labels only: what CompressionTrainer calibrates
    choose_bit_widths on (batch 32, unshuffled)."""
    keep = set(tokenizer.model_input_names) | {"label", "labels"}
    columns = [c for c in train.column_names if c in keep]
    loader = DataLoader(train.select_columns(columns), batch_size=32, collate_fn=DataCollatorWithPadding(tokenizer))
    return list(itertools.islice(loader, count))


def fp32_folder(arm: str, seed: int) -> str:
    """The saved fp32 student of `seed`, which `arm` starts from; exits with what to run when it is missing."""
    folder = os.path.join(MODELS, f"fp32-seed{seed}")
    if not os.path.isdir(folder):
        raise SystemExit(f"the {arm} arm starts from the fp32 arm's student: run --arms fp32 for seed {seed} first")
    return folder


def from_fp32(arm: str, seed: int, train, tokenizer, args, budgets: dict[str, float]) -> tuple:
    """int8 PTQ or a rounded low-bit plan of the saved fp32 student of `seed`: the model, its folder, the record."""
    model = AutoModelForSequenceClassification.from_pretrained(fp32_folder(arm, seed)).eval()
    record = {}
    if arm == "int8":
        quantize_(model)
    else:
        base = arm.removesuffix("-ptq")
        if base in BUDGET_OF:
            count = 2 if args.quick else 8
            batches = calibration_batches(train, tokenizer, model, count)
            budget = budgets[BUDGET_OF[base]]
            sensitivity = LOW_BIT_FIELDS[base].get("bit_sensitivity", "fisher")
            bits = choose_bit_widths(
                model,
                batches,
                budget,
                num_batches=count,
                group_size=GROUP_SIZE,
                modules=MODULES,
                sensitivity=sensitivity,
            )
            record.update(bit_budget_mb=budget, bit_calibration_batches=count, bit_sensitivity=sensitivity, bits=bits)
        else:
            bits = uniform_plan(model, base)
        record["bits_count"] = {str(b): list(bits.values()).count(b) for b in (8, 4, 2)}
        fake_quantize_(model, bits, GROUP_SIZE)
        bake_low_bit_(model, Int8QuantizationConfig())
    folder = os.path.join(MODELS, f"{arm}-seed{seed}")
    model.save_pretrained(folder)
    return model.eval(), folder, record


def distil(arm: str, seed: int, train, tokenizer, args, budgets: dict[str, float], teacher_dir: str) -> tuple:
    """Train one arm's student, save it; return the finalized model, its folder and what to record."""
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    if arm in INIT_FROM_FP32:
        student = AutoModelForSequenceClassification.from_pretrained(fp32_folder(arm, seed))
    else:
        student = create_student(teacher, num_hidden_layers=3)
    fields = {}
    if arm in LOW_BIT_FIELDS:
        fields = dict(LOW_BIT_FIELDS[arm], weight_group_size=GROUP_SIZE, weight_quantization_modules=MODULES)
        if arm in BUDGET_OF:
            fields.update(bit_budget_mb=budgets[BUDGET_OF[arm]], bit_calibration_batches=2 if args.quick else 8)
    output_dir = os.path.join(MODELS, f"{arm}-seed{seed}")
    with tempfile.TemporaryDirectory() as workdir:
        train_args = CompressionTrainingArguments(
            **training_args(workdir, seed, args.epochs * EPOCH_FACTOR.get(arm, 1)),
            temperature=2.0,
            alpha=0.9,
            hidden_loss_weight=1.0,
            **fields,
        )
        trainer = CompressionTrainer(
            model=student,
            teacher_model=teacher,
            args=train_args,
            train_dataset=train,
            data_collator=DataCollatorWithPadding(tokenizer),
        )
        widths = dict(trainer.low_bit_widths or {})
        start = time.perf_counter()
        trainer.train()
        seconds = round(time.perf_counter() - start)
        trainer.save_model(output_dir)
    record = {"train_seconds": seconds, "train_steps": trainer.state.global_step, **fields}
    if widths:
        record["bits_count"] = {str(b): list(widths.values()).count(b) for b in (8, 4, 2)}
        if arm in BUDGET_OF:
            record["bits"] = widths
    return trainer.model.eval(), output_dir, record


def run(args) -> dict:
    teacher_dir = wait_for_teacher(args.wait)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    data, _ = tweets_tokenized(tokenizer)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    test = data["test"].select(range(200)) if args.quick else data["test"]
    n_train = 256 if args.quick else 4000
    train = data["train"].shuffle(seed=1000).select(range(n_train))
    os.makedirs(MODELS, exist_ok=True)
    teacher_row, teacher_logits = evaluate(teacher, test, tokenizer)
    teacher_pred = teacher_logits.argmax(-1)
    budgets = budgets_mb(teacher)
    result = {
        **run_info(),
        "test_examples": len(test),
        "train_examples": n_train,
        "epochs": args.epochs,
        "group_size": GROUP_SIZE,
        "modules": MODULES,
        "mixed_budget_mb": round(budgets["mixed"], 6),
        "mixed_ternary_budget_mb": round(budgets["mixed-ternary"], 6),
        "teacher": teacher_row,
        "arms": [],
    }
    print(f"teacher: accuracy {teacher_row['accuracy']:.4f}; budgets {budgets} MB", flush=True)
    for seed in args.seeds:
        for arm in args.arms:
            row = {"arm": arm, "seed": seed}
            build = from_fp32 if arm in FROM_FP32 else partial(distil, teacher_dir=teacher_dir)
            model, folder, record = build(arm, seed, train=train, tokenizer=tokenizer, args=args, budgets=budgets)
            row.update(record)
            metrics, logits = evaluate(model, test, tokenizer, teacher_pred)
            row.update(metrics)
            row["bytes"] = os.path.getsize(os.path.join(folder, "model.safetensors"))
            reloaded = AutoModelForSequenceClassification.from_pretrained(folder).eval()
            row["reload_max_abs_logit_diff"] = float(np.abs(predict(reloaded, test, tokenizer) - logits).max())
            print(
                f"seed {seed} {arm}: accuracy {row['accuracy']:.4f}, {row['bytes'] / 1e6:.2f} MB, "
                f"reload diff {row['reload_max_abs_logit_diff']:.2e}",
                flush=True,
            )
            result["arms"].append(row)
            write(result, args.out)  # after every arm: CPU time is scarce, keep what is done
    return result


def latency(args) -> dict:
    """Teacher vs the saved students of one seed (reloaded with from_pretrained), interleaved on one thread."""
    teacher_dir = wait_for_teacher(args.wait)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    models = {"teacher": AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()}
    for arm in args.arms:
        models[arm] = saved(arm, args.seeds[0])
    rows, repeats = speedup_rows(models, tokenizer, args.quick)
    return {"latency": {**run_info(), "seed": args.seeds[0], "seq_len": 48, "repeats": repeats, "rows": rows}}


def saved(arm: str, seed: int):
    """The saved model of an arm and seed, reloaded with from_pretrained, in eval mode."""
    return AutoModelForSequenceClassification.from_pretrained(os.path.join(MODELS, f"{arm}-seed{seed}")).eval()


def fidelity(args) -> dict:
    """Agreement with, and logits SQNR against, the fp32 student of the same seed, for its saved FROM_FP32 arms."""
    from benchmarks.quantization import rounded_sqnr

    teacher_dir = wait_for_teacher(args.wait)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    data, _ = tweets_tokenized(tokenizer)
    test = data["test"].select(range(200)) if args.quick else data["test"]
    rows = []
    for seed in args.seeds:
        reference = predict(saved("fp32", seed), test, tokenizer)
        for arm in [a for a in args.arms if a in FROM_FP32]:
            logits = predict(saved(arm, seed), test, tokenizer)
            agreement = float((logits.argmax(-1) == reference.argmax(-1)).mean())
            rows.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "agreement_with_fp32": agreement,
                    "logits_sqnr_db": rounded_sqnr(reference, logits),
                }
            )
            print(
                f"seed {seed} {arm}: agreement with fp32 {agreement:.4f}, SQNR {rows[-1]['logits_sqnr_db']} dB",
                flush=True,
            )
    return {"fidelity": {**run_info(), "test_examples": len(test), "rows": rows}}


def write(result: dict, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)


def speedup(row: dict | None) -> str:
    """'b1× / b32×' of a latency row, or a dash."""
    return f"{row['speedup_batch1']:.2f}× / {row['speedup_batch32']:.2f}×" if row else "—"


def table(result: dict) -> str:
    """Mean (and spread over seeds) accuracy and bytes per arm, as Markdown."""
    teacher = result["teacher"]["accuracy"]
    lines = [
        "| arm | seeds | accuracy (mean ± sd) | vs teacher | agreement | MB (safetensors) | vs fp32 bytes | "
        "vs int8 bytes | speed-up b1 / b32 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by_arm: dict[str, list[dict]] = {}
    for row in result["arms"]:
        by_arm.setdefault(row["arm"], []).append(row)
    fp32_bytes = statistics.mean(r["bytes"] for r in by_arm["fp32"]) if "fp32" in by_arm else None
    int8_bytes = statistics.mean(r["bytes"] for r in by_arm["int8"]) if "int8" in by_arm else None
    speed = result.get("latency", {}).get("rows", {})
    for arm, rows in by_arm.items():
        acc = [r["accuracy"] for r in rows]
        sd = statistics.stdev(acc) if len(acc) > 1 else 0.0
        size = statistics.mean(r["bytes"] for r in rows)
        ratio = f"{size / fp32_bytes:.1%}" if fp32_bytes else "—"
        ratio_int8 = f"{size / int8_bytes:.1%}" if int8_bytes else "—"
        agreement = statistics.mean(r["agreement_with_teacher"] for r in rows)
        lines.append(
            f"| {arm} | {len(rows)} | {statistics.mean(acc):.4f} ± {sd:.4f} | {statistics.mean(acc) / teacher:.1%} | "
            f"{agreement:.1%} | {size / 1e6:.2f} | {ratio} | {ratio_int8} | {speedup(speed.get(arm))} |"
        )
    return "\n".join(lines)


def paired(result: dict, arm: str, baseline: str) -> dict:
    """Accuracy of `arm` minus `baseline` on the seeds both ran: per seed, mean, sd, two-sided 95% t-interval of the
    mean with its t and p, the Wilcoxon signed-rank p and how many seeds were positive. (The interval assumes the
    differences are roughly normal; the rank test and the sign count do not.)"""
    from scipy import stats

    accuracy = {(r["arm"], r["seed"]): r["accuracy"] for r in result["arms"]}
    seeds = sorted(s for a, s in accuracy if a == arm and (baseline, s) in accuracy)
    if len(seeds) < 2:
        raise SystemExit(f"--paired {arm} {baseline}: needs both arms on at least 2 seeds; found {seeds}")
    diffs = [accuracy[arm, s] - accuracy[baseline, s] for s in seeds]
    mean, sd = statistics.mean(diffs), statistics.stdev(diffs)
    half = stats.t.ppf(0.975, len(diffs) - 1) * sd / len(diffs) ** 0.5
    test = stats.ttest_1samp(diffs, 0.0)
    return {
        "arm": arm,
        "baseline": baseline,
        "seeds": seeds,
        "differences": [round(d, 6) for d in diffs],
        "mean": round(mean, 6),
        "sd": round(sd, 6),
        "ci95": [round(mean - half, 6), round(mean + half, 6)],
        "t": round(float(test.statistic), 3),
        "p_t": round(float(test.pvalue), 4),
        # A rank test beside the t-interval: it does not assume normal differences (zero differences are dropped).
        "p_wilcoxon": round(float(stats.wilcoxon(diffs).pvalue), 4) if any(diffs) else None,
        "positive": sum(d > 0 for d in diffs),
        "negative": sum(d < 0 for d in diffs),
    }


def summarize(paths: list[str]) -> dict:
    """One result from part files of the same settings (e.g. two processes with different arms)."""
    merged: dict = {"arms": []}
    for path in paths:
        with open(path) as f:
            part = json.load(f)
        merged["arms"].extend(part.pop("arms", []))
        for key, value in part.items():
            merged.setdefault(key, value)
    return merged


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--epochs", type=float, default=2.0, help="distillation epochs over the train tweets")
    parser.add_argument(
        "--quick", action="store_true", help="200 test tweets, 256 train tweets, 2 calibration batches"
    )
    parser.add_argument("--wait", type=float, default=4 * 3600, help="seconds to wait for the teacher")
    parser.add_argument("--out", default=os.path.join(RESULTS, "low_bit.json"))
    parser.add_argument(
        "--latency", action="store_true", help="time the teacher and the saved students of --seeds[0] (no training)"
    )
    parser.add_argument(
        "--fidelity",
        action="store_true",
        help="the FROM_FP32 arms of --seeds against their fp32 student (no training)",
    )
    parser.add_argument("--summarize", nargs="+", metavar="PART_JSON", help="merge part files into --out, print")
    parser.add_argument(
        "--paired",
        nargs=2,
        action="append",
        metavar=("ARM", "BASELINE"),
        help="with --summarize: ARM minus BASELINE accuracy per seed, its mean and 95%% t-interval (repeatable)",
    )
    args = parser.parse_args()
    if args.latency:
        write(latency(args), args.out)
        return
    if args.fidelity:
        write(fidelity(args), args.out)
        return
    if args.summarize:
        result = summarize(args.summarize)
        if args.paired:
            result["paired"] = [paired(result, arm, baseline) for arm, baseline in args.paired]
        write(result, args.out)
        print(table(result))
        for row in result.get("paired", []):
            low, high = row["ci95"]
            print(
                f"{row['arm']} - {row['baseline']} over {len(row['seeds'])} seeds: mean {row['mean']:+.4f}, "
                f"sd {row['sd']:.4f}, 95% CI [{low:+.4f}, {high:+.4f}], t {row['t']} (p {row['p_t']}), "
                f"Wilcoxon p {row['p_wilcoxon']}, {row['positive']} up / {row['negative']} down"
            )
        return
    if args.quick and args.out == os.path.join(RESULTS, "low_bit.json"):
        args.out = os.path.join(tempfile.gettempdir(), "low_bit_quick.json")  # a smoke run never overwrites results
    torch.manual_seed(0)
    result = run(args)
    print(table(result))


if __name__ == "__main__":
    main()
