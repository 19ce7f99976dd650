"""Int8 Linear codes: 8 bits within the pair limit, nearest under it, exact in the kernel, finer than 7 bits."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from hf_compress import Int8QuantizationConfig, calibrate_gptq_, quantize_
from hf_compress.methods.int8 import kernel as fbgemm
from hf_compress.methods.int8.gptq import gptq_quantize_rows
from hf_compress.methods.int8.modules import SEVEN_BIT_QMAX, Int8Linear, quantize_rows
from hf_compress.methods.int8.rounding import (
    LINEAR_QMAX,
    PAIR_LIMIT,
    SCALE_GRID,
    fit_pairs,
    linear_codes,
    pairs_fit,
)
from tests.test_smoothing import batches
from tests.testing_utils import tiny_bert

ALL_PAIRS = [(a, b) for a in range(-LINEAR_QMAX, LINEAR_QMAX + 1) for b in range(-LINEAR_QMAX, LINEAR_QMAX + 1)]
ALLOWED = torch.tensor([p for p in ALL_PAIRS if abs(p[0]) + abs(p[1]) <= PAIR_LIMIT], dtype=torch.float64)


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    return 10 * torch.log10(reference.pow(2).sum() / (reference - approx).pow(2).sum()).item()


def test_fit_pairs_is_the_nearest_allowed_point_for_every_pair():
    generator = torch.Generator().manual_seed(0)
    unit = (torch.rand(40, 9, generator=generator, dtype=torch.float64) * 2 - 1) * LINEAR_QMAX  # odd width
    unit[:, :2] = torch.tensor([127.0, -127.0], dtype=torch.float64)  # the worst pair
    codes = fit_pairs(unit)
    assert pairs_fit(codes.to(torch.int8)) and codes.abs().max() <= LINEAR_QMAX
    for row, k in itertools.product(range(40), range(0, 8, 2)):
        target = unit[row, k : k + 2]
        nearest = (ALLOWED - target).square().sum(dim=1).min()
        assert (codes[row, k : k + 2] - target).square().sum() == pytest.approx(nearest.item(), abs=1e-9)
    assert torch.equal(codes[:, 8], torch.round(unit[:, 8]))  # the unpaired last channel is only rounded


def test_linear_codes_fit_the_limit_and_beat_seven_bit_codes():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(64, 96, generator=generator) * torch.rand(1, 96, generator=generator).mul(3).exp()
    codes, scale = linear_codes(weight)
    assert codes.dtype == torch.int8 and pairs_fit(codes) and scale.dtype == torch.float32
    assert codes.abs().max() > SEVEN_BIT_QMAX  # uses the eighth bit
    seven, seven_scale = quantize_rows(weight, SEVEN_BIT_QMAX)
    gain = sqnr_db(weight, codes.float() * scale[:, None]) - sqnr_db(weight, seven.float() * seven_scale[:, None])
    assert gain > 2.0


def test_the_scale_follows_the_input_energy_when_a_hessian_is_given():
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(32, 64, generator=generator)
    h = torch.diag(torch.rand(64, generator=generator, dtype=torch.float64).pow(4) * 100)

    def output_error(codes, scale):
        delta = codes.double() * scale.double()[:, None] - weight.double()
        return ((delta @ h) * delta).sum().item()

    assert output_error(*linear_codes(weight, h)) < output_error(*linear_codes(weight))


@pytest.mark.parametrize("with_hessian", [False, True], ids=["weight_error", "output_error"])
def test_per_tensor_codes_share_the_grid_scale_with_the_least_total_error(with_hessian):
    """weight_granularity='per-tensor': one scale for the whole weight, the SCALE_GRID step of its absmax whose codes
    (after the pair fit) give the smallest summed error, found here by an independent search."""
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(24, 40, generator=generator) * torch.rand(24, 1, generator=generator).mul(4).exp()
    h = torch.diag(torch.rand(40, generator=generator, dtype=torch.float64) * 10) if with_hessian else None
    codes, scale = linear_codes(weight, h, per_tensor=True)
    assert codes.dtype == torch.int8 and pairs_fit(codes) and torch.all(scale == scale[0])
    w = weight.double()

    def total_error(q: int) -> float:
        delta = fit_pairs(w / (w.abs().max() / q)) * (w.abs().max() / q) - w
        return float(delta.square().sum() if h is None else ((delta @ h) * delta).sum())

    best = min(SCALE_GRID, key=total_error)
    assert scale[0].item() == pytest.approx((w.abs().max() / best).item(), rel=1e-6)
    assert torch.equal(codes.double(), fit_pairs(w / scale.double()[:, None]))
    # rows of small weights round coarser than with their own scale: what per-row buys
    row_codes, row_scale = linear_codes(weight, h)
    per_row_error = (row_codes.double() * row_scale.double()[:, None] - w).square().sum()
    assert (codes.double() * scale.double()[:, None] - w).square().sum() > per_row_error


def test_gptq_with_per_tensor_scales_keeps_one_scale():
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(16, 32, generator=generator)
    x = torch.randn(200, 32, generator=generator, dtype=torch.float64)
    h = x.T @ x / 200
    codes, scale = gptq_quantize_rows(weight, h, per_tensor=True)
    assert torch.all(scale == scale[0]) and pairs_fit(codes)

    def output_error(codes, scale):
        delta = codes.double() * scale.double()[:, None] - weight.double()
        return ((delta @ h) * delta).sum().item()

    assert output_error(codes, scale) < output_error(*linear_codes(weight, per_tensor=True))


@pytest.mark.skipif(not fbgemm.available(), reason="needs torch's fbgemm kernels")
def test_the_kernel_computes_codes_at_the_limit_exactly():
    """Every pair at |a| + |b| = 128 (the worst case the limit allows) times activations at the uint8 maximum: the
    kernel's int16 pair sums must not saturate. Fails if the limit or the pairing (2k, 2k+1) were wrong."""
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(1, LINEAR_QMAX + 1, (16, 32), generator=generator)
    signs = torch.where(torch.rand(16, 32, generator=generator) < 0.5, -1, 1)
    codes = torch.stack([signs * first, signs * (PAIR_LIMIT - first)], dim=-1).reshape(16, 64).to(torch.int8)
    assert pairs_fit(codes)
    scale = torch.full((16,), 0.01)
    x = torch.ones(4, 64)  # one range for the call: [0, 1] -> every activation is 255
    x[1:] = 0.0
    packed = fbgemm.pack(codes, scale)
    exact = x @ (codes.float() * scale[:, None]).T
    torch.testing.assert_close(fbgemm.linear(x, packed, None, None, per_token=False), exact, rtol=0, atol=1e-3)


@pytest.mark.parametrize("gptq", [False, True], ids=["round_to_nearest", "gptq"])
def test_quantized_linears_keep_every_pair_within_the_limit(gptq):
    model = tiny_bert(0)
    reference = Int8Linear.from_linear(nn.Linear(64, 48))
    assert pairs_fit(reference.int8_weight())
    calibration = calibrate_gptq_(model, batches()) if gptq else None
    quantize_(model, Int8QuantizationConfig(activation_range="per_batch"), calibration=calibration)
    linears = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert linears and all(pairs_fit(m.int8_weight()) for m in linears)
    assert max(m.int8_weight().abs().max().item() for m in linears) > SEVEN_BIT_QMAX
