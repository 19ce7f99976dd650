"""choose_bit_widths: the budget is met, the more sensitive module gets the more bits, and allocate_bits finds the
plan of least summed sensitivity within the budget."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hf_compress import LowBitEmbedding, LowBitLinear, bake_low_bit_, choose_bit_widths, fake_quantize_
from hf_compress.methods.low_bit.bit_widths import allocate_bits, output_divergences, planned_megabytes
from hf_compress.methods.low_bit.fake_quant import dequantize_groups, quantize_groups, stored_bytes
from tests.testing_utils import tiny_batch, tiny_bert


class TwoBranches(nn.Module):
    """h = gain_a·a(x) + gain_b·b(x): a and b hold the same weights (the same quantization error at every width), so
    only the gain on the loss tells them apart: the gradient of a's weight is gain_a / gain_b times b's."""

    def __init__(self, gain_a: float, gain_b: float):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.head = nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 3)
        self.b.load_state_dict(self.a.state_dict())
        self.gains = (gain_a, gain_b)

    def forward(self, x, labels=None):
        h = self.gains[0] * self.a(x) + self.gains[1] * self.b(x)
        logits = self.head(torch.tanh(h))
        return SimpleNamespace(logits=logits, loss=None if labels is None else F.cross_entropy(logits, labels))


def batches(n: int = 4):
    g = torch.Generator().manual_seed(0)
    return [
        {"x": torch.randn(16, 32, generator=g), "labels": torch.randint(0, 3, (16,), generator=g)} for _ in range(n)
    ]


@pytest.mark.parametrize("sensitivity", ["fisher", "kl"])
@pytest.mark.parametrize("gains, expected", [((3.0, 0.03), {"a": 8, "b": 2}), ((0.03, 3.0), {"a": 2, "b": 8})])
def test_the_more_sensitive_module_gets_more_bits(gains, expected, sensitivity):
    model = TwoBranches(*gains)
    # Room for one module at 8 bits and the other at 2, not for both at 4 and one at 8.
    budget = (stored_bytes(32, 32, 8, None) + stored_bytes(32, 32, 2, None)) / 1e6
    bits = choose_bit_widths(model, batches(), budget, modules=["a", "b"], sensitivity=sensitivity)
    assert bits == expected
    assert planned_megabytes(model, bits) <= budget


def test_output_divergences_measure_each_module_alone_and_restore_it():
    model = tiny_bert(seed=3).train()
    data = [tiny_batch(8, seed=s) for s in range(2)]
    modules = {n: model.get_submodule(n) for n in ("bert.encoder.layer.0.intermediate.dense", "bert.pooler.dense")}
    before = {n: m.weight.detach().clone() for n, m in modules.items()}
    with torch.no_grad():
        reference = model.eval()(**data[0]).logits
    model.train()

    kl = output_divergences(model, modules, data, num_batches=2)

    assert model.training and all(torch.equal(m.weight, before[n]) for n, m in modules.items())
    with torch.no_grad():
        assert torch.equal(model.eval()(**data[0]).logits, reference)
    for name in modules:
        assert 0 < kl[name][8] < kl[name][4] < kl[name][2]  # fewer bits, further from the float output
    # By hand for one module and width: round only it, then the mean KL over both batches.
    dense = modules["bert.pooler.dense"]
    codes, scales = quantize_groups(dense.weight.detach(), 2)
    with torch.no_grad():
        p = [torch.log_softmax(model(**b).logits.double(), -1) for b in data]
        dense.weight.copy_(dequantize_groups(codes, scales))
        q = [torch.log_softmax(model(**b).logits.double(), -1) for b in data]
        dense.weight.copy_(before["bert.pooler.dense"])
    expected = sum(float((a.exp() * (a - b)).sum(-1).mean()) for a, b in zip(p, q)) / 2
    assert kl["bert.pooler.dense"][2] == pytest.approx(expected, rel=1e-6)


def total(plan: dict[str, int], table: dict[str, dict[int, float]]) -> float:
    return sum(table[name][bits] for name, bits in plan.items())


def test_a_large_sensitive_module_is_not_starved_at_uniform_4_bit_bytes():
    # A big, sensitive table and a small module. Best Ω drop per byte first would take the small module's two cheap
    # upgrades, then have no room left for the table's 4 bits (summed Ω 100.1); at uniform 4-bit's own bytes the
    # least sensitive plan is uniform 4-bit itself (Ω 6).
    sizes = {"table": {2: 1000, 4: 2000, 8: 4000}, "small": {2: 10, 4: 20, 8: 40}}
    omega = {"table": {2: 100.0, 4: 1.0, 8: 0.01}, "small": {2: 10.0, 4: 5.0, 8: 0.1}}
    budget = sizes["table"][4] + sizes["small"][4]
    assert allocate_bits(sizes, omega, budget) == {"table": 4, "small": 4}


@pytest.mark.parametrize("seed", range(12))
def test_allocation_is_the_least_sensitive_plan_within_the_budget(seed):
    # Five modules of unlike sizes (one 30× the rest, as a word table beside Linears) and sensitivities over four
    # orders of magnitude; every plan is enumerated.
    g = torch.Generator().manual_seed(seed)
    names = [f"m{i}" for i in range(5)]
    weights = {n: int(torch.randint(500, 2000, (1,), generator=g)) * (30 if n == "m0" else 1) for n in names}
    sizes = {n: {b: weights[n] * b // 8 + 4 * 16 for b in (2, 4, 8)} for n in names}
    omega = {}
    for n in names:
        base = float(10 ** (4 * torch.rand(1, generator=g)))
        omega[n] = {2: base, 4: base * float(0.05 + 0.2 * torch.rand(1, generator=g)), 8: base * 1e-3}
    fewest = sum(s[2] for s in sizes.values())
    budget = fewest + float(torch.rand(1, generator=g)) * (sum(s[8] for s in sizes.values()) - fewest)
    plans = [dict(zip(names, widths)) for widths in itertools.product((2, 4, 8), repeat=len(names))]
    feasible = [p for p in plans if total(p, sizes) <= budget]

    plan = allocate_bits(sizes, omega, budget)

    assert total(plan, sizes) <= budget
    assert total(plan, omega) <= min(total(p, omega) for p in feasible) * (1 + 1e-9)
    for bits in (2, 4, 8):  # in particular never worse than a uniform width of no more bytes
        uniform = dict.fromkeys(names, bits)
        if total(uniform, sizes) <= budget:
            assert total(plan, omega) <= total(uniform, omega)


def test_budget_met_on_bert_and_the_plan_bakes_to_that_size():
    model = tiny_bert(seed=2)
    data = [tiny_batch(8, seed=s) for s in range(3)]
    names = ["encoder_embeddings"]
    low = choose_bit_widths(model, data, 1e9, bit_choices=(2,), modules=names[0])
    high = choose_bit_widths(model, data, 1e9, bit_choices=(8,), modules=names[0])
    lowest, highest = planned_megabytes(model, low, 16), planned_megabytes(model, high, 16)
    budget = (lowest + highest) / 2
    bits = choose_bit_widths(model, data, budget, group_size=16, modules=names[0])
    assert set(bits) == set(low) and set(bits.values()) > {2}  # mixed widths
    assert budget - 0.01 * (highest - lowest) <= planned_megabytes(model, bits, 16) <= budget  # spent, not exceeded
    fake_quantize_(model, bits, group_size=16)
    bake_low_bit_(model)
    stored = sum(
        m.weight.numel() + 4 * m.weight_scale.numel()
        for m in model.modules()
        if isinstance(m, (LowBitLinear, LowBitEmbedding))
    )
    assert stored <= budget * 1e6
    assert {model.config.quantization_config.quantized_modules[n] for n in bits} >= {"linear_2bit", "linear_8bit"}


def test_refusals():
    model = tiny_bert()
    data = [tiny_batch(4)]
    with pytest.raises(ValueError, match=r"budget_mb=1e-06 is invalid; allowed: at least 0\.0"):
        choose_bit_widths(model, data, 1e-6)
    with pytest.raises(ValueError, match="budget_mb=0 is invalid"):
        choose_bit_widths(model, data, 0)
    with pytest.raises(ValueError, match="bit_choices=.* is invalid"):
        choose_bit_widths(model, data, 1.0, bit_choices=(3,))
    unlabelled = [{k: v for k, v in tiny_batch(4).items() if k != "labels"}]
    with pytest.raises(ValueError, match="batches whose model output has a loss"):
        choose_bit_widths(model, unlabelled, 1.0)
    with pytest.raises(ValueError, match="dataloader='empty' is invalid"):
        choose_bit_widths(model, [], 1.0)
    with pytest.raises(ValueError, match="dataloader='empty' is invalid"):
        choose_bit_widths(model, [], 1.0, sensitivity="kl")
    with pytest.raises(ValueError, match="sensitivity='hessian' is invalid; allowed: 'fisher', 'kl'"):
        choose_bit_widths(model, data, 1.0, sensitivity="hessian")
    with pytest.raises(ValueError, match=r"budget_bytes=9 is invalid; allowed: at least 10"):
        allocate_bits({"a": {2: 10, 4: 20}}, {"a": {2: 1.0, 4: 0.5}}, 9)
    with pytest.raises(ValueError, match=r"sensitivities='other modules or widths than sizes' is invalid"):
        allocate_bits({"a": {2: 10, 4: 20}}, {"a": {2: 1.0}}, 30)
