"""What could put our OpenVINO int8 of the teacher ahead of the peer's (#34 goal row 2): variants of the same path.

    python -m benchmarks.openvino_variants TEACHER_DIR [--test-examples 2000] [--rounds 12] [--output PATH]

The peer is what a user without hf_compress does: `openvino.convert_model` of the stock model, then `nncf.quantize`
(transformer preset) on 300 train tweets. Ours is `hf-compress quantize TEACHER --runtime openvino` (NNCF on the
recipe's 8 × 32 calibration tweets, our export's graph). Both are the same engine on the same model, so the arms ask
what else could differ:

- each at OpenVINO's default inference precision on this CPU (bf16 for the float operations where the CPU has it)
  as well as at f32 (what `benchmarks.runtimes` compiles every row with);
- the peer's IR with the query, key and value MatMuls of each layer fused into one (one weight of 3 × hidden rows
  and a split; the same numbers in float) before NNCF: does a wider int8 GEMM run faster?
- the peer's IR through NNCF's PERFORMANCE preset (symmetric activations);
- ours through the same preset, on the recipe's 8 and on 16 calibration batches: does our calibration text give the
  preset's symmetric activations the agreement the peer's asymmetric ones have?

Every arm is evaluated on `--test-examples` test tweets (argmax agreement with the fp32 PyTorch teacher) and timed in
one interleaved loop (batch 32 and batch 1, 48 tokens, one thread, `--rounds` rounds of 3 / 30 calls, medians). One
per-operation profile (OpenVINO's PERF_COUNT) of the peer at batch 32 says where its time goes. Writes the JSON and
prints a Markdown table.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import tempfile
import time

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .common import run_info, tweets_tokenized, write_json
from .runtimes import ours_openvino, peer_fp32_ir, peer_nncf

XML = "openvino_model.xml"


def _constant(node):
    while node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node if node.get_type_name() == "Constant" else None


def fuse_shared_input_matmuls(model) -> int:
    """Fuse the MatMuls (x · Wᵀ + b, constant W and b) that read the same tensor into one MatMul on the stacked
    weights, an Add of the stacked biases and a VariadicSplit; returns how many groups were fused."""
    from openvino import opset13 as ops

    groups = collections.defaultdict(list)
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        attributes = op.get_attributes()
        weight = _constant(op.input_value(1).get_node())
        if attributes["transpose_a"] or not attributes["transpose_b"] or weight is None:
            continue
        users = list(op.output(0).get_target_inputs())
        add = users[0].get_node() if len(users) == 1 else None
        if add is None or add.get_type_name() != "Add":
            continue
        other = add.input_value(1) if add.input_value(0).get_node() is op else add.input_value(0)
        bias = _constant(other.get_node())
        if bias is None:
            continue
        source = op.input_value(0)
        groups[source.get_node().get_friendly_name(), source.get_index()].append((weight, bias, add, source))
    fused = 0
    for members in groups.values():
        if len(members) < 2:
            continue
        weights = np.concatenate([w.data.astype(np.float32) for w, _, _, _ in members])
        biases = np.concatenate([b.data.astype(np.float32).reshape(-1) for _, b, _, _ in members])
        product = ops.add(ops.matmul(members[0][3], ops.constant(weights), False, True), ops.constant(biases))
        lengths = np.array([w.get_output_shape(0)[0] for w, _, _, _ in members], dtype=np.int64)
        split = ops.variadic_split(product, ops.constant(np.int64(-1)), ops.constant(lengths))
        for i, (_, _, add, _) in enumerate(members):
            add.output(0).replace(split.output(i))
        fused += 1
    model.validate_nodes_and_infer_types()
    return fused


def ours_with_preset(model_dir: str, out_dir: str, batches: int, preset) -> None:
    """`ours_openvino` with NNCF's `preset` in place of the transformer model type's default (MIXED: asymmetric
    activations). hf-compress has no field for it (it does not pass the agreement bar, see RESULTS), so the benchmark
    wraps `nncf.quantize` for this one call."""
    import nncf

    quantize = nncf.quantize
    nncf.quantize = lambda *args, **kwargs: quantize(*args, **{**kwargs, "preset": preset})
    try:
        ours_openvino(model_dir, out_dir, batches)
    finally:
        nncf.quantize = quantize


def padded(rows, keys, length=None) -> dict[str, np.ndarray]:
    length = length or max(len(r["input_ids"]) for r in rows)
    out = {k: np.zeros((len(rows), length), dtype=np.int64) for k in keys}
    for i, row in enumerate(rows):
        for k in keys:
            values = row[k][:length]
            out[k][i, : len(values)] = values
    return out


def profile(compiled_path: str, batch: dict, precision) -> dict[str, float]:
    """Share of the time per OpenVINO operation type (the CPU plugin's own counters), batch as given."""
    import openvino as ov

    compiled = ov.Core().compile_model(
        compiled_path, "CPU", {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": 1, "PERF_COUNT": True}
    )
    request = compiled.create_infer_request()
    for _ in range(3):
        request.infer(batch)
    spent = collections.Counter()
    for _ in range(5):
        request.infer(batch)
        for item in request.profiling_info:
            spent[f"{item.node_type} ({item.exec_type})"] += item.real_time.total_seconds()
    total = sum(spent.values())
    return {name: round(seconds / total, 4) for name, seconds in spent.most_common(8)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("teacher_dir")
    parser.add_argument("--test-examples", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--output", default="benchmarks/results/openvino-variants.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import nncf
    import openvino as ov

    tokenizer = AutoTokenizer.from_pretrained(args.teacher_dir)
    data, _ = tweets_tokenized(tokenizer)
    train, test = data["train"], data["test"]
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in train.column_names]
    n = min(args.test_examples, len(test))
    tests = [padded([test[j] for j in range(i, min(i + 64, n))], keys) for i in range(0, n, 64)]
    teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher_dir).eval()
    with torch.no_grad():
        reference = np.concatenate(
            [teacher(**{k: torch.from_numpy(v) for k, v in b.items()}).logits.argmax(-1).numpy() for b in tests]
        )
    core = ov.Core()
    f32 = ov.Type.f32
    default = core.get_property("CPU", "INFERENCE_PRECISION_HINT")
    with tempfile.TemporaryDirectory() as work:
        peer_float = peer_fp32_ir(args.teacher_dir, os.path.join(work, "peer-fp32"), train, keys)
        peer = peer_nncf(peer_float, os.path.join(work, "peer"), train, keys, 300)
        ours = os.path.join(work, "ours")
        ours_openvino(args.teacher_dir, ours, 8)
        fused_model = core.read_model(os.path.join(peer_float, XML))
        fused_groups = fuse_shared_input_matmuls(fused_model)
        os.makedirs(os.path.join(work, "peer-fp32-fused"))
        ov.save_model(fused_model, os.path.join(work, "peer-fp32-fused", XML), compress_to_fp16=False)
        fused = peer_nncf(os.path.join(work, "peer-fp32-fused"), os.path.join(work, "peer-fused"), train, keys, 300)
        samples = [{k: np.asarray([train[i][k]], dtype=np.int64) for k in keys} for i in range(300)]
        performance = nncf.quantize(
            core.read_model(os.path.join(peer_float, XML)),
            nncf.Dataset(samples),
            model_type=nncf.ModelType.TRANSFORMER,
            preset=nncf.QuantizationPreset.PERFORMANCE,
            subset_size=300,
        )
        os.makedirs(os.path.join(work, "peer-performance"))
        ov.save_model(performance, os.path.join(work, "peer-performance", XML))
        for batches in (8, 16):
            ours_with_preset(
                args.teacher_dir,
                os.path.join(work, f"ours-performance-{batches}"),
                batches,
                nncf.QuantizationPreset.PERFORMANCE,
            )
        arms = {
            "peer: convert_model + NNCF int8, f32": (peer, f32),
            f"peer, OpenVINO's default precision here ({default})": (peer, default),
            "ours: quantize --runtime openvino, f32": (ours, f32),
            f"ours, {default}": (ours, default),
            f"peer with Q/K/V fused ({fused_groups} groups), f32": (fused, f32),
            "peer through NNCF's PERFORMANCE preset, f32": (os.path.join(work, "peer-performance"), f32),
            "ours through the PERFORMANCE preset, f32": (os.path.join(work, "ours-performance-8"), f32),
            "ours through the PERFORMANCE preset, 16 calibration batches, f32": (
                os.path.join(work, "ours-performance-16"),
                f32,
            ),
        }
        compiled, agreement = {}, {}
        for name, (folder, precision) in arms.items():
            model = core.compile_model(
                os.path.join(folder, XML), "CPU", {"INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": 1}
            )
            predicted = np.concatenate([model(b)[0].argmax(-1) for b in tests])
            compiled[name], agreement[name] = model, float(np.mean(predicted == reference))
            print(f"{name}: agreement {agreement[name]:.2%}", flush=True)
        inputs32 = padded([train[i] for i in range(32)], keys, 48)
        inputs32["attention_mask"][:] = 1
        inputs = {32: inputs32, 1: {k: v[:1] for k, v in inputs32.items()}}
        calls = {32: 3, 1: 30}
        times = {name: {32: [], 1: []} for name in compiled}
        for _ in range(args.rounds):
            for name, model in compiled.items():
                for size, batch in inputs.items():
                    model(batch)
                    start = time.perf_counter()
                    for _ in range(calls[size]):
                        model(batch)
                    times[name][size].append((time.perf_counter() - start) / calls[size] * 1000)
        shares = profile(os.path.join(peer, XML), inputs32, f32)
    peer_name = next(iter(arms))
    medians = {name: {size: statistics.median(t) for size, t in by_size.items()} for name, by_size in times.items()}
    rows = []
    for name in arms:
        m = medians[name]
        rows.append(
            {
                "arm": name,
                "agreement": agreement[name],
                "ms_b32": round(m[32], 3),
                "ms_b1": round(m[1], 4),
                "vs_peer_b32": round(medians[peer_name][32] / m[32], 3),
                "vs_peer_b1": round(medians[peer_name][1] / m[1], 3),
            }
        )
    result = {
        "run_info": {
            **run_info(),
            "openvino": ov.__version__,
            "nncf": nncf.__version__,
            "default_precision": str(default),
        },
        "test_examples": n,
        "rows": rows,
        "peer_profile_b32_f32": shares,
    }
    write_json(args.output, result)
    print("\n| arm | agreement with fp32 | b32 ms | b1 ms | vs peer b32 | vs peer b1 |\n|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['arm']} | {r['agreement']:.2%} | {r['ms_b32']:.1f} | {r['ms_b1']:.2f} | {r['vs_peer_b32']:.3f}× "
            f"| {r['vs_peer_b1']:.3f}× |"
        )
    print("\npeer at batch 32, share of time per operation:", json.dumps(shares))


if __name__ == "__main__":
    main()
