"""The export's check: the file run in its runtime on sample inputs and compared with the PyTorch model it came from.

The sample is tokenizer output (single sentences and pairs, padded, lengths up to the model's longest input) of
random vocabulary words, in four batches of different sizes and lengths, so that the dynamic axes are exercised.
Float graphs must match to FLOAT_TOLERANCE (max |logit difference| at the positions serving reads); graphs with int8
matmuls must keep the logits within INT8_SQNR_DB of the PyTorch int8 model's and make its decisions (argmax per
sequence, per token, or of the answer's start and end) on at least INT8_AGREEMENT of those that are not ties at int8
precision.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch

FLOAT_TOLERANCE = 1e-4
INT8_AGREEMENT = 0.995
# Two int8 implementations of one model differ by rounding: a value a hair from a rounding boundary lands on either
# side, and the step moves everything after it. Measured on MiniLM-L6 int8 with an untrained head (logits RMS 0.022):
# the ONNX file vs the PyTorch int8 model 18.6 dB (OpenVINO 18.5 dB, the int8 modules' own traced path in ONNX Runtime
# 20.6 dB), PyTorch int8 vs fp32 15.8 dB; 5 of 67 decisions flipped, all with margins below 0.0045, i.e. below twice
# the RMS difference (0.0026). So an int8 file must keep the logits within INT8_SQNR_DB of PyTorch's (a wrong graph is
# near 0 dB or below) and make the same decision wherever the margin is at least TIE_NOISE times the RMS difference
# of the sequences that differ (see compare): with differences of that RMS, such a margin flips with probability
# P(Z > 4 / sqrt 2) = 0.23% (2x: 7.9%).
INT8_SQNR_DB = 15.0
TIE_NOISE = 4.0
# (batch size, sequence length (None: the model's longest input), sentence pairs) of each sample batch
SAMPLE_SHAPES = ((2, None, True), (1, 3, False), (16, 24, True), (48, 12, False))
# OpenVINO's INFERENCE_PRECISION_HINT for each precision field value
OPENVINO_PRECISIONS = {"f32": "f32", "bf16": "bf16"}


def _words(tokenizer, vocab_size: int) -> list[str]:
    """Whole words of the vocabulary (no special token, no sub-word piece), within the model's embedding rows."""
    special = set(tokenizer.all_special_ids)
    vocab = sorted((i, token) for token, i in tokenizer.get_vocab().items() if i < vocab_size and i not in special)
    vocab = [(token, i) for i, token in vocab]  # in id order: get_vocab()'s order changes from process to process
    words = [token for token, _ in vocab if token.isalnum()]
    return words if len(words) >= 10 else [token for token, _ in vocab]


def sample_batches(tokenizer, names: tuple[str, ...], max_length: int, vocab_size: int, seed: int = 0) -> list[dict]:
    """The sample: SAMPLE_SHAPES batches of tokenizer output (int64 numpy arrays named as the graph's inputs).

    Tokenizes with a copy: a fast tokenizer keeps the truncation and padding of its last call in its backend, which
    tokenizer.json would then carry to serving."""
    tokenizer = copy.deepcopy(tokenizer)
    rng = np.random.default_rng(seed)
    words = _words(tokenizer, vocab_size)
    batches = []
    for size, length, pairs in SAMPLE_SHAPES:
        length = min(length or max_length, max_length)
        # the first row fills the batch's length; the others are shorter, so that padding is exercised
        counts = [length] + [int(n) for n in rng.integers(1, length + 1, size - 1)]
        texts = [[str(w) for w in rng.choice(words, n)] for n in counts]
        if pairs:
            firsts = [t[: max(1, len(t) // 2)] for t in texts]
            seconds = [t[max(1, len(t) // 2) :] or t[:1] for t in texts]
            encoded = tokenizer(
                firsts,
                seconds,
                is_split_into_words=True,
                truncation=True,
                max_length=length,
                padding=True,
                return_tensors="np",
            )
        else:
            encoded = tokenizer(
                texts, is_split_into_words=True, truncation=True, max_length=length, padding=True, return_tensors="np"
            )
        batches.append({name: np.asarray(encoded[name], dtype=np.int64) for name in names})
    return batches


def torch_outputs(model, batches: list[dict], output_names: tuple[str, ...]) -> list[dict[str, np.ndarray]]:
    """The PyTorch model's outputs on each batch."""
    results = []
    with torch.inference_mode():
        for batch in batches:
            outputs = model(**{name: torch.from_numpy(array) for name, array in batch.items()})
            results.append({name: outputs[name].float().numpy() for name in output_names})
    return results


def onnxruntime_runner(path: str):
    """A function running the ONNX file in ONNX Runtime (CPU): feeds -> {output name: array}."""
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(None, feeds)))


def openvino_runner(path: str, output_names: tuple[str, ...], precision: str = "f32"):
    """A function running the OpenVINO IR on CPU with INFERENCE_PRECISION_HINT `precision`; and the precision the
    compiled model reports (a CPU without bf16 support runs f32). Outputs are looked up by name: a compiled output
    also carries the names of the nodes fused into it, and `get_any_name()` may return one of those."""
    import openvino as ov

    compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision]})
    outputs = {name: compiled.output(name) for name in output_names}

    def run(feeds):
        results = compiled(feeds)
        return {name: results[output] for name, output in outputs.items()}

    return run, compiled.get_property("INFERENCE_PRECISION_HINT").to_string()


# Run in a fresh interpreter in which `import hf_compress` fails: what a user without hf_compress gets.
STOCK_RUNNER = """
import sys

sys.modules["hf_compress"] = None  # this process must never import hf_compress
import numpy as np
import torch
import transformers

directory, inputs, outputs, architecture, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
pooled = names == ["sentence_embedding"]  # a sentence-transformers folder: what SentenceTransformer(path) computes
if pooled:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(directory, device="cpu").eval()
else:
    model = getattr(transformers, architecture).from_pretrained(directory).eval()
data = np.load(inputs)
results = {}
with torch.no_grad():
    for index in range(int(data["count"])):
        prefix = f"{index}/"
        feeds = {key[len(prefix):]: torch.from_numpy(data[key]) for key in data.files if key.startswith(prefix)}
        returned = model(feeds) if pooled else model(**feeds)
        for name in names:
            results[prefix + name] = returned[name].float().numpy()
np.savez(outputs, **results)
"""


def stock_transformers_outputs(
    directory: str, batches: list[dict], architecture: str, output_names: tuple[str, ...]
) -> list[dict[str, np.ndarray]]:
    """The checkpoint in `directory` loaded by stock transformers (`architecture`.from_pretrained; for the output
    `sentence_embedding`, `SentenceTransformer(directory)`) in a fresh interpreter that cannot import hf_compress, run
    on `batches`: the outputs a user without hf_compress gets.
    Raises RuntimeError with the interpreter's last lines when it fails."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        inputs, outputs = os.path.join(work, "inputs.npz"), os.path.join(work, "outputs.npz")
        arrays = {f"{i}/{name}": array for i, batch in enumerate(batches) for name, array in batch.items()}
        np.savez(inputs, count=np.asarray(len(batches)), **arrays)
        done = subprocess.run(
            [sys.executable, "-c", STOCK_RUNNER, directory, inputs, outputs, architecture, *output_names],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise RuntimeError(f"stock transformers could not run {directory}:\n{tail}")
        with np.load(outputs) as data:
            return [{name: data[f"{i}/{name}"] for name in output_names} for i in range(len(batches))]


def _scores(logits: np.ndarray, mask: np.ndarray, task: str) -> np.ndarray:
    """What each of serving's decisions chooses among, (decisions, choices): the labels of a sequence, the tags of a
    real token, the real tokens of a sequence for the answer's start (end), or the other sequences of the batch for a
    sentence embedding's nearest neighbour (a batch of one has none: no decision)."""
    if task == "text-classification":
        return logits
    if task == "sentence-embedding":  # each sequence's nearest neighbour in its batch, by cosine: what search returns
        unit = logits / np.maximum(np.linalg.norm(logits, axis=-1, keepdims=True), 1e-12)
        rows = len(unit)
        return (unit @ unit.T)[~np.eye(rows, dtype=bool)].reshape(rows, rows - 1)
    if task == "token-classification":
        return logits[mask]
    return np.where(mask, logits, -np.inf)


def compare(reference: list[dict], got: list[dict], batches: list[dict], task: str) -> dict:
    """The file's outputs against PyTorch's over the sample, at the positions serving reads: max |difference|, logits
    SQNR (dB; None when identical), and the agreement of the decisions (argmax), over all of them and over those
    whose PyTorch margin (top-1 minus top-2) is at least TIE_NOISE times the RMS difference of the other sequences
    that differ (`ties`: the others).

    Why the sequences that differ and not the whole sample: two int8 implementations differ by rare rounding events
    (a value a hair from a boundary lands on the other side), each confined to its sequence until the attention of
    that sequence spreads it; most sequences come out identical. Averaging over them shrinks the noise scale below
    what one event does. Measured on the 4-bit headline student (ONNX Runtime against PyTorch's fbgemm, 67 sample
    sequences): a difference below 1e-7 for most sequences and 0.04-0.09 RMS for a few, one of which flipped a
    decision with a margin of 0.088: 4.5x the sample's RMS difference (0.019), below the differing sequences'."""
    max_diff, signal = 0.0, 0.0
    same, margins, noises, sizes, owners = (
        [],
        [],
        [],
        [],
        [],
    )  # noises, sizes: squared differences, counts per sequence
    offset = 0
    for want, have, batch in zip(reference, got, batches):
        mask = batch["attention_mask"].astype(bool)
        rows = len(mask)
        row_noise, row_size = np.zeros(rows), np.zeros(rows)
        for name, expected in want.items():
            actual = np.asarray(have[name], dtype=np.float32)
            if actual.shape != expected.shape:
                raise ValueError(f"output {name!r} has shape {actual.shape}; PyTorch's has {expected.shape}")
            diff = (actual - expected).astype(np.float64)
            if task in ("text-classification", "sentence-embedding"):  # one vector per sequence
                kept = np.ones(diff.shape, dtype=bool)
            else:  # token and span outputs: real tokens
                kept = np.broadcast_to(mask.reshape(mask.shape + (1,) * (diff.ndim - 2)), diff.shape)
            squared = np.where(kept, diff**2, 0.0).reshape(rows, -1)
            row_noise += squared.sum(axis=1)
            row_size += kept.reshape(rows, -1).sum(axis=1)
            max_diff = max(max_diff, float(np.abs(diff[kept]).max()) if kept.any() else 0.0)
            signal += float((expected.astype(np.float64)[kept] ** 2).sum())
            scores = _scores(expected, mask, task)
            if scores.shape[-1] == 0:
                continue  # nothing to choose among (a sentence embedding alone in its batch): no decision
            top = np.sort(scores, axis=-1)[..., -2:]
            # a single choice cannot flip: its margin is infinite
            margins.append(top[..., 1] - top[..., 0] if top.shape[-1] == 2 else np.full(top.shape[:-1], np.inf))
            same.append(scores.argmax(-1) == _scores(actual, mask, task).argmax(-1))
            # the sequence of each decision: one per sequence, or one per real token
            owners.append(offset + (np.nonzero(mask)[0] if task == "token-classification" else np.arange(rows)))
        noises.append(row_noise)
        sizes.append(row_size)
        offset += rows
    noises, sizes, owners = np.concatenate(noises), np.concatenate(sizes), np.concatenate(owners)
    differ = np.sqrt(noises / np.maximum(sizes, 1)) > FLOAT_TOLERANCE
    # Each decision is judged against the events of the other sequences (leave its own out): a flip cannot excuse
    # itself by the difference it makes.
    own_noise, own_size = np.where(differ, noises, 0.0)[owners], np.where(differ, sizes, 0.0)[owners]
    other_noise, other_size = noises[differ].sum() - own_noise, sizes[differ].sum() - own_size
    # A lone event has no other to be judged against: its own size then (the SQNR floor bounds a gross one).
    alone = other_size == 0
    other_noise, other_size = np.where(alone, own_noise, other_noise), np.where(alone, own_size, other_size)
    scale = np.sqrt(np.maximum(other_noise, 0.0) / np.maximum(other_size, 1))
    same, margins = np.concatenate(same), np.concatenate(margins)
    clear = margins >= TIE_NOISE * scale
    noise = float(noises.sum())
    return {
        "sequences": sum(len(batch["input_ids"]) for batch in batches),
        "max_abs_diff": max_diff,
        "sqnr_db": float(10 * np.log10(signal / noise)) if noise > 0 else None,
        "argmax_agreement": float(same.mean()),
        "decisions": int(same.size),
        "ties": int((~clear).sum()),
        "clear_agreement": float(same[clear].mean()) if clear.any() else 1.0,
    }


def within_bound(stats: dict, int8: bool) -> tuple[bool, str]:
    """Whether the comparison is within the bound of its kind, and the bound as words."""
    if int8:
        sqnr = stats["sqnr_db"]
        ok = (sqnr is None or sqnr >= INT8_SQNR_DB) and stats["clear_agreement"] >= INT8_AGREEMENT
        return ok, (
            f"logits SQNR >= {INT8_SQNR_DB:.0f} dB and argmax agreement >= {INT8_AGREEMENT:.1%} on the decisions "
            f"whose margin is at least {TIE_NOISE:.0f}x the RMS difference of the other sequences that differ"
        )
    return stats["max_abs_diff"] <= FLOAT_TOLERANCE, f"max |logit difference| <= {FLOAT_TOLERANCE:.0e}"


def measured(stats: dict) -> str:
    """The comparison's numbers, as one phrase."""
    sqnr = "identical logits" if stats["sqnr_db"] is None else f"logits SQNR {stats['sqnr_db']:.1f} dB"
    clear = stats["decisions"] - stats["ties"]
    return (
        f"max |logit difference| {stats['max_abs_diff']:.2e}, {sqnr}, argmax agreement "
        f"{stats['argmax_agreement']:.2%} ({stats['clear_agreement']:.2%} of the {clear} decisions that are not ties)"
    )


def check_bf16(
    xml_path: str, output_names: tuple[str, ...], reference: list[dict], batches: list[dict], task: str
) -> dict:
    """The IR at `xml_path` compiled in bf16 against the PyTorch `reference`: its check record.

    OpenVINO's CPU plugin infers in bf16 where the processor has it; bf16 rounds about as int8 does, so the int8 bound
    applies. Raises ValueError (nothing written) when the bf16 run does not keep the model's decisions.
    """
    from ..checks import invalid

    run, compiled = openvino_runner(xml_path, output_names, "bf16")
    stats = compare(reference, [run(batch) for batch in batches], batches, task)
    ok, bound = within_bound(stats, int8=True)
    if not ok:
        raise invalid(
            "precision",
            "bf16",
            f"'f32', or 'bf16' for a model that keeps its decisions in bf16 ({bound}; measured "
            f"{measured(stats)} on the sample): nothing was written",
        )
    return {"precision": compiled, **stats, "bound": bound}
