"""Compile- and export-clean quantized modules (DESIGN principle 7, #33): every artifact kind runs under
torch.compile(fullgraph=True) and torch.export with eager's outputs, and no forward reads a data pointer or a
version counter; the traced path computes fbgemm's numbers bit for bit; what replaced the per-call cache keys
(prepare at build, load, load_state_dict, copy; the fused bias refreshed by eval()) keeps eager outputs right."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification

from hf_compress import (
    Int8QuantizationConfig,
    LowBitEmbedding,
    LowBitLinear,
    bake_low_bit_,
    factorize_linear_,
    fake_quantize_,
    keep_outlier_channels_,
    quantize_,
    smooth_activations_,
)
from hf_compress.methods.int8 import kernel as fbgemm
from hf_compress.methods.int8.modules import Int8Embedding, Int8Linear
from hf_compress.methods.int8.rounding import linear_codes
from hf_compress.methods.low_rank.int8 import Int8LowRankLinear
from hf_compress.methods.low_rank.transform import LowRankLinear
from tests.testing_utils import tiny_batch, tiny_bert

pytestmark = pytest.mark.skipif(not fbgemm.available(), reason="needs torch's fbgemm kernels")

TOLERANCE = 1e-5


def batches(n: int = 2) -> list[dict]:
    return [{k: v for k, v in tiny_batch(8, 12, seed).items() if k != "labels"} for seed in range(n)]


BATCH = {k: v for k, v in tiny_batch(4, 12, seed=7).items() if k != "labels"}


# ---------------------------------------------------------------- the artifacts


def int8_model(activation_range: str) -> nn.Module:
    """Every Int8Linear variant and Int8Embedding: smoothed (query/key/value, attention output, FFN up, pooler), with
    an outlier channel (FFN down), plain (classifier)."""
    model = tiny_bert()
    calibration = smooth_activations_(model, batches()) | keep_outlier_channels_(model, batches())
    return quantize_(model, Int8QuantizationConfig(activation_range=activation_range), calibration=calibration)


def low_rank_model(activation_range: str) -> nn.Module:
    """Layer 0's Linears factorised (two int8 matmuls each), the others plain Int8Linear."""
    model = factorize_linear_(tiny_bert(), rank_ratio=0.5, filter_fn=lambda module, name: ".layer.0." in name)
    return quantize_(model, Int8QuantizationConfig(activation_range=activation_range))


def low_bit_model(activation_range: str, compute: str) -> nn.Module:
    model = fake_quantize_(tiny_bert(seed=3), 4, None, "encoder_embeddings")
    return bake_low_bit_(model, Int8QuantizationConfig(activation_range=activation_range), compute=compute)


ARTIFACTS = {
    "int8-per_token": lambda: int8_model("per_token"),
    "int8-per_batch": lambda: int8_model("per_batch"),
    "low_rank-per_token": lambda: low_rank_model("per_token"),
    "low_rank-per_batch": lambda: low_rank_model("per_batch"),
    "low_bit_int8-per_token": lambda: low_bit_model("per_token", "int8"),
    "low_bit_int8-per_batch": lambda: low_bit_model("per_batch", "int8"),
    "low_bit_float": lambda: low_bit_model("per_batch", "float"),  # float weights: no activation range
}


def module_kinds(model: nn.Module) -> set[str]:
    """The quantized module kinds in `model`, Int8Linear split by variant."""
    kinds = set()
    for module in model.modules():
        if isinstance(module, Int8Linear):
            kinds.add("smoothed" if module.input_scale is not None else "int8_linear")
            if module.outlier_channels is not None:
                kinds.add("outliers")
        elif isinstance(module, LowBitLinear):
            kinds.add(f"low_bit_{module.compute}")
        elif isinstance(module, (Int8Embedding, Int8LowRankLinear, LowBitEmbedding)):
            kinds.add(type(module).__name__)
    return kinds


EXPECTED_KINDS = {
    "int8": {"smoothed", "outliers", "int8_linear", "Int8Embedding"},
    "low_rank": {"Int8LowRankLinear", "int8_linear", "Int8Embedding"},
    "low_bit_int8": {"low_bit_int8", "LowBitEmbedding"},
    "low_bit_float": {"low_bit_float", "LowBitEmbedding"},
}


@torch.no_grad()
def logits(model, batch=BATCH) -> torch.Tensor:
    return model(**batch).logits


@pytest.mark.parametrize("mode", ["compile", "export"])
@pytest.mark.parametrize("artifact", list(ARTIFACTS))
def test_every_artifact_compiles_fullgraph_and_exports_with_eager_outputs(artifact, mode, tmp_path):
    """compile: the model as quantize_ / bake_low_bit_ leave it, under torch.compile(fullgraph=True), where any graph
    break raises (dynamo's own backend: the graph is traced whole and run as traced; inductor's numbers are checked
    below). export: the same artifact saved and loaded back with from_pretrained, through torch.export.export, which
    raises on any read of a data pointer. Both give eager's logits."""
    model = ARTIFACTS[artifact]().eval()
    assert module_kinds(model) == EXPECTED_KINDS[artifact.split("-")[0]]
    if mode == "export":
        model.save_pretrained(tmp_path)
        model = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    eager = logits(model)
    torch._dynamo.reset()
    if mode == "compile":
        traced = logits(torch.compile(model, fullgraph=True, backend="eager"))
    else:
        with torch.no_grad():
            program = torch.export.export(model, (), dict(BATCH))
        traced = logits(program.module())
    assert (traced - eager).abs().max() <= TOLERANCE


class Chain(nn.Module):
    """One of every quantized module kind, in a row (their ops only, so that the compiled graph's numbers are ours)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = Int8Embedding.from_embedding(nn.Embedding(50, 32))
        self.low_bit_embedding = low_bit_model("per_token", "int8").bert.embeddings.word_embeddings
        self.smoothed = Int8Linear.from_linear(nn.Linear(32, 48), True, smoothing=torch.rand(32) + 0.5)
        self.outliers = Int8Linear.from_linear(nn.Linear(48, 48), False, outlier_channels=torch.tensor([3, 7]))
        factors = LowRankLinear.from_factors(torch.randn(40, 8) * 0.3, torch.randn(8, 48) * 0.3, torch.randn(40))
        self.low_rank = Int8LowRankLinear.from_low_rank(factors, per_token=False)
        self.low_bit = low_bit_model("per_batch", "int8").bert.encoder.layer[0].intermediate.dense  # 32 -> 64
        self.low_bit_float = low_bit_model("per_batch", "float").bert.encoder.layer[0].output.dense  # 64 -> 32
        # Ternary codes (±63) on 2,100 inputs: a float32 matmul of them is not exact in one piece.
        wide = nn.Linear(2100, 32)
        with torch.no_grad():
            wide.weight.copy_(torch.sign(torch.randn(32, 2100)) * 0.01)
        self.wide = Int8Linear.from_linear(wide, False)
        self.up = nn.Linear(40, 2100)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.embedding(ids) + self.low_bit_embedding(ids)
        h = self.outliers(self.smoothed(h))
        h = self.low_rank(h)
        return self.low_bit_float(self.low_bit(h[..., :32])) + self.wide(self.up(h))


def test_inductor_computes_every_module_kind_bit_for_bit():
    """torch.compile's default backend (inductor generates its own kernels) on every module kind and both activation
    ranges, the fused bias included (eval mode): the same floats as eager on random inputs."""
    chain = Chain().eval()
    wide_codes = chain.wide._int8_weights()[0][0]
    assert 255 * wide_codes.abs().int().sum(dim=1).max() > 2**24  # int32 sums a float32 matmul would round
    assert not chain.low_rank.per_token and chain.smoothed.per_token
    torch._dynamo.reset()
    compiled = torch.compile(chain, fullgraph=True)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _ in range(5):
            ids = torch.randint(0, 50, (3, 7), generator=generator)
            assert torch.equal(compiled(ids), chain(ids))


# ---------------------------------------------------------------- the traced path is the kernel, bit for bit


def inputs_with_edge_cases() -> list[torch.Tensor]:
    """Random activations over many magnitudes and offsets, and the cases where fbgemm's rounding rules show: exact
    ties, all zeros, one sign only, ranges below the smallest scale, constant tokens, denormals, outliers."""
    generator = torch.Generator().manual_seed(0)
    out = []
    for magnitude in (1e-6, 1e-4, 1e-2, 1.0, 30.0, 1e4):
        for offset in (-1.0, 0.0, 0.3):
            out.append(torch.randn(3, 5, 64, generator=generator) * magnitude + offset * magnitude)
    x = torch.randn(4, 64, generator=generator)
    out += [torch.zeros(4, 64), x.abs(), -x.abs(), x.abs() * 1e-5, -x.abs() * 1e-5, x * 1e-7, x * 1e-40]
    out += [x.round(), x.round() / 2, torch.full((4, 64), 2.5), torch.ones(4, 64) * torch.arange(4.0)[:, None]]
    spiky = x.clone()
    spiky[1, 3] = 500.0
    out.append(spiky)
    # Activations on exact half steps of the call's scale: rounding half to even after the zero point is added.
    lo, hi = -1.7, 2.9
    scale = float(torch.tensor((hi - lo) / 255, dtype=torch.float32))
    ties = (torch.randint(0, 255, (8, 64), generator=generator) - 94 + 0.5) * scale
    ties[0, :2] = torch.tensor([lo, hi])
    out.append(ties)
    return out


@pytest.mark.parametrize("bias", ["no_bias", "bias_after", "bias_fused"])
@pytest.mark.parametrize("per_token", [True, False], ids=["per_token", "per_batch"])
def test_traced_linear_equals_the_kernel_bit_for_bit(per_token, bias):
    torch.manual_seed(0)
    codes, scale = linear_codes(torch.randn(48, 64) * 0.05)
    b = torch.randn(48) if bias != "no_bias" else None
    fused = bias == "bias_fused" and not per_token
    packed = fbgemm.pack(codes, scale, b if fused else None)
    for x in inputs_with_edge_cases():
        kernel = fbgemm.linear(x, packed, packed.row_sums, b, per_token, fuse_bias=fused)
        traced = fbgemm.traced_linear(x, codes, scale, b, per_token, fused)
        assert torch.equal(traced, kernel)


def test_wide_rows_of_large_codes_are_summed_exactly_in_int32():
    """Sums beyond 2**24, which a float32 matmul of the same integers would round on the way, are the kernel's."""
    generator = torch.Generator().manual_seed(0)
    codes = torch.randint(60, 64, (4, 4096), generator=generator, dtype=torch.int8)  # within the pair limit
    codes[:, ::2] *= -1
    codes[:, ::3] *= -1
    scale = torch.full((4,), 0.01)
    # Activations at the top of the range wherever row 0's codes are positive: its int32 sum passes 2**24, and a
    # float32 matmul in one piece rounds partial sums on the way.
    x = torch.full((3, 4096), 0.999)
    x[:, codes[0] < 0] = 0.0
    x[:, -1], x[:, 5] = 1.0, 0.7377
    packed = fbgemm.pack(codes, scale)
    kernel = fbgemm.linear(x, packed, None, None, per_token=False)
    assert torch.equal(fbgemm.traced_linear(x, codes, scale, None, False, False), kernel)
    q, zero_point, x_scale = fbgemm.quantize_activations(x)
    in_float32 = torch.nn.functional.linear(q - zero_point, codes.float()) * (x_scale * scale)
    assert not torch.equal(in_float32, kernel)  # the case is a hard one: float32 alone does not get it


# ---------------------------------------------------------------- prepared, never looked up


def test_no_forward_reads_a_data_pointer_or_a_version_counter(monkeypatch):
    models = {name: build().eval() for name, build in ARTIFACTS.items()}
    expected = {name: logits(model) for name, model in models.items()}

    def forbidden(*args):
        raise AssertionError("a forward read a data pointer or a version counter")

    monkeypatch.setattr(torch.Tensor, "data_ptr", forbidden)
    monkeypatch.setattr(torch.Tensor, "_version", property(forbidden))
    for name, model in models.items():
        assert torch.equal(logits(model), expected[name])
        x = torch.randn(2, 5, 32, requires_grad=True)
        model.bert.encoder.layer[0].attention.self.query(x).sum().backward()  # a training call too


def test_in_place_edits_reach_the_output_after_prepare_and_load_state_dict_prepares():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48, bias=False)
    module = Int8Linear.from_linear(linear).eval()
    x = torch.randn(5, 64)
    before = module(x)
    with torch.no_grad():
        module.weight_scale.mul_(2)
        assert torch.equal(module(x), before)  # not noticed: nothing is looked up per call
    module.prepare()
    assert torch.equal(module(x), 2 * before)  # doubling every scale doubles every float exactly
    fresh = Int8Linear(64, 48, bias=False)  # built by hand: placeholders, prepared by load_state_dict
    fresh.load_state_dict(module.state_dict())
    assert torch.equal(fresh.eval()(x), module(x))
    with torch.no_grad():
        fresh.load_state_dict(Int8Linear.from_linear(linear).state_dict())  # copied into the same tensors
    assert torch.equal(fresh(x), before)


def test_a_copy_is_prepared_on_its_own_tensors():
    model = quantize_(tiny_bert())
    clone = copy.deepcopy(model)
    assert torch.equal(logits(clone), logits(model))
    dense = clone.bert.pooler.dense
    with torch.no_grad():
        dense.weight_scale.mul_(2)
    dense.prepare()
    assert dense._kernels[0] is not model.bert.pooler.dense._kernels[0]
    assert not torch.equal(logits(clone), logits(model))
    assert torch.equal(logits(model), logits(quantize_(tiny_bert())))


def test_a_trained_bias_is_added_after_the_kernel_and_fused_again_by_eval():
    """Per batch, eval mode, no autograd: the bias packed into the kernel. A training call marks that copy stale
    (later inference calls add the bias after the kernel), and eval() packs it again with the trained values."""
    torch.manual_seed(0)
    module = Int8Linear.from_linear(nn.Linear(64, 48), per_token=False).eval()
    x = torch.randn(5, 7, 64)
    packed = module._kernels[0]

    def unfused() -> torch.Tensor:
        with torch.no_grad():
            return torch.ops.quantized.linear_dynamic(x, packed.plain(), False) + module.bias

    assert packed.fused_bias_equals(module.bias)
    with torch.no_grad():
        torch.testing.assert_close(module(x), unfused(), rtol=0, atol=1e-5)
    optimizer = torch.optim.SGD([module.bias], lr=0.5)
    module(x).square().mean().backward()  # eval mode, autograd on: a training call
    optimizer.step()
    assert module._bias_trained and not packed.fused_bias_equals(module.bias)
    with torch.no_grad():
        assert torch.equal(module(x), unfused())  # the bias added after the kernel: the trained values
    module.train().eval()
    assert packed.fused_bias_equals(module.bias) and not module._bias_trained
    with torch.no_grad():
        torch.testing.assert_close(module(x), unfused(), rtol=0, atol=1e-5)


# ---------------------------------------------------------------- compiled calls run the kernel itself


def int8_ops(model: nn.Module, batch: dict) -> tuple[int, int]:
    """(kernel ops, torch._int_mm ops) in the graph torch.compile captures of `model` on `batch`."""
    found = []

    def backend(graph_module, example_inputs):
        targets = [node.target for node in graph_module.graph.nodes if node.op == "call_function"]
        found.append(targets)
        return graph_module.forward

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, fullgraph=True, backend=backend)(**batch)
    (targets,) = found
    kernel = sum(t is torch.ops.hf_compress.int8_linear.default for t in targets)
    return kernel, sum(t is torch.ops.aten._int_mm.default or t is torch._int_mm for t in targets)


def test_compiled_int8_runs_the_kernel_and_export_traces_plain_ops():
    """Under torch.compile every int8 matmul is the kernel as one op (no emulation), the output equal to eager's bit
    for bit through inductor; torch.export captures the plain-op emulation instead (no opaque op in its program)."""
    model = int8_model("per_batch").eval()
    matmuls = sum(len(m._int8_weights()) for m in model.modules() if isinstance(m, Int8Linear | Int8LowRankLinear))
    assert int8_ops(model, BATCH) == (matmuls, 0)
    torch._dynamo.reset()
    assert torch.equal(logits(torch.compile(model, fullgraph=True)), logits(model))
    with torch.no_grad():
        program = torch.export.export(model, (), dict(BATCH))
    targets = [node.target for node in program.graph.nodes if node.op == "call_function"]
    assert torch.ops.hf_compress.int8_linear.default not in targets
    assert sum(t is torch.ops.aten._int_mm.default for t in targets) == matmuls


def test_a_compiled_call_whose_packed_weight_is_gone_falls_back_to_the_same_numbers():
    torch.manual_seed(0)
    codes, scale = linear_codes(torch.randn(48, 64) * 0.05)
    bias, x = torch.randn(48), torch.randn(5, 64)
    packed = fbgemm.pack(codes, scale, bias)
    key = fbgemm.register(packed)
    kernel = fbgemm.linear(x, packed, packed.row_sums, bias, False, True)
    assert torch.equal(fbgemm.compiled_linear(x, codes, scale, bias, False, True, key), kernel)
    del packed  # the module that held it is gone: the key finds nothing
    assert torch.equal(fbgemm.compiled_linear(x, codes, scale, bias, False, True, key), kernel)
