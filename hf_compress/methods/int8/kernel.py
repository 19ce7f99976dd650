"""The only place that touches torch's deprecated quantized-tensor API: fbgemm's dynamic int8 linear kernel; and its
numbers in plain tensor ops, for torch.compile and torch.export.

Why it is used: on the 2-core AVX2 (no VNNI) machine this project benchmarks on, `quantized::linear_dynamic` (the
kernel behind `torch.ao.quantization.quantize_dynamic`) is the fastest int8 matmul that torch ships for CPU. Measured
on one MiniLM feed-forward Linear (384 -> 1536), time relative to fp32 `F.linear`, for 48 / 1536 tokens:
fbgemm 0.43 / 0.59, onednn::qlinear_pointwise with per-batch activation quantization 0.94 / 1.75,
torch._int_mm 5.2 / 44, torch._weight_int8pack_mm (weight-only) 2.8 / 38.

Eager and traced: eager calls run the kernel on weights packed once (`pack`, called by the modules' `prepare()` when
they are built, converted, loaded or moved), never looked up per call. A packed weight is an opaque ScriptObject and
the kernel reads data pointers, which torch.compile and torch.export cannot trace. Under torch.compile the kernel
runs as one opaque op (`compiled_linear`, finding the module's packed weight by a key the module holds), so compiled
and eager int8 matmuls are the same computation. Under torch.export (and wherever no packed weight is registered)
`traced_linear` computes the kernel's numbers with plain tensor ops, bit for bit:
fbgemm's activation quantization (ATen's ChooseQuantizationParams, then fbgemm's fused multiply-add rounding), an
integer matmul in int32 (`integer_matmul`, torch._int_mm), and the kernel's scale and bias roundings. The graph
then reads the saved int8 codes and scales, which an ONNX or OpenVINO export can map to DynamicQuantizeLinear and
MatMulInteger. tests/test_compile_export.py checks the agreement.

Why it is deprecated: torch 2.13 deprecates the qint8/quint8 dtypes and the functions that create them
(https://github.com/pytorch/pytorch/issues/184982); `linear_prepack` only accepts a qint8 tensor.

Removal plan: nothing outside this module calls these ops. The on-disk format (int8 codes + fp32 scales) and
`Int8Linear` are backend-independent; when torch removes the ops, `available()` returns False and `Int8Linear`
falls back to its reference path (int8 weights dequantized on the fly: same weights, float speed). Then replace
this module by the fastest CPU kernel that takes plain torch.int8 tensors (torchao or oneDNN), keeping `pack` and
`linear`'s signatures, and re-run benchmarks/quantization.py to check it still beats fp32.
"""

from __future__ import annotations

import itertools
import warnings
import weakref

import torch

# ATen's ChooseQuantizationParams (aten/src/ATen/native/quantized/cpu/QuantUtils.h), which fbgemm's dynamic linear
# calls with qmin 0, qmax 255 (uint8 activations, reduce_range False): its smallest scale, as float32.
SMALL_SCALE_FLOAT32 = 6.1e-5
# ATen compares the float64 scale with it. On the CPU by name: this module may first be imported while
# from_pretrained builds a model under the meta device.
SMALL_SCALE_FLOAT64 = float(torch.tensor(6.1e-5, dtype=torch.float32, device="cpu"))
QMAX = 255


def _has_ops() -> bool:
    try:
        return hasattr(torch.ops.quantized, "linear_prepack") and hasattr(torch.ops.quantized, "linear_dynamic")
    except (AttributeError, RuntimeError):
        return False


_AVAILABLE = _has_ops()  # a torch build's ops do not change while it runs


def available() -> bool:
    """Whether this torch build still has fbgemm's prepack and dynamic linear ops (asked on every int8 call, and
    traced by torch.compile: a constant)."""
    return _AVAILABLE


def per_tensor(scale: torch.Tensor) -> bool:
    """Whether every row has the same scale (`weight_granularity="per-tensor"`)."""
    return bool((scale == scale[0]).all())


def _prepack(codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.ScriptObject:
    with warnings.catch_warnings():
        # The deprecation is handled by this module's removal plan; users can do nothing about it.
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        if per_tensor(scale):
            # fbgemm's per-tensor output stage (one multiplier for the whole output, as quantize_dynamic's default)
            # runs faster at large batches than its per-channel one; the numbers are the same.
            qweight = torch._make_per_tensor_quantized_tensor(codes, float(scale[0]), 0)
        else:
            zero_points = torch.zeros(codes.shape[0], dtype=torch.long)
            qweight = torch._make_per_channel_quantized_tensor(codes, scale.double(), zero_points, 0)
    return torch.ops.quantized.linear_prepack(qweight, bias)


def row_sums(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Σ_k W[j, k] per output row j, as (Σ_k codes) · scale: the sum is an exact integer, so eager and traced
    calls get the same float whatever order they add in."""
    return codes.float().sum(dim=1) * scale.float()


class PackedWeight:
    """fbgemm's prepacked int8 weight (out, in), one fp32 scale per output row (symmetric, zero point 0), without
    and, once `fuse(bias)` has packed it, with a bias fused into the kernel's output stage; plus its row sums.

    Why two: fusing the bias saves a pass over the output (measured 2-7% of a MiniLM Linear's int8 time at 1,536
    tokens on the AVX2 machine, benchmarks/int8_kernel.py), but packing costs more than a forward call (~8 ms for
    384 x 1536), and the fused copy holds the bias's values of the time it was packed: the modules fuse it for
    inference only and refresh it explicitly (`PackedInt8Module.prepare`). The plain copy is packed when first
    asked for.
    """

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor):
        self.codes, self.scale = codes, scale
        self.row_sums = row_sums(codes, scale)
        self._plain = None
        self._fused = None
        self._fused_bias = None  # the bias values packed into _fused

    def plain(self) -> torch.ScriptObject:
        if self._plain is None:
            with torch.inference_mode(False), torch.no_grad():
                self._plain = _prepack(self.codes, self.scale, None)
        return self._plain

    def fuse(self, bias: torch.Tensor) -> None:
        """Pack (again) the copy with `bias` fused, with its current values."""
        with torch.inference_mode(False), torch.no_grad():
            self._fused_bias = bias.detach().float().clone()
            self._fused = _prepack(self.codes, self.scale, self._fused_bias)

    def fused(self) -> torch.ScriptObject | None:
        """The copy packed by the last `fuse`, or None."""
        return self._fused

    def fused_bias_equals(self, bias: torch.Tensor) -> bool:
        """Whether the fused copy holds `bias`'s current values."""
        return self._fused_bias is not None and torch.equal(self._fused_bias, bias.detach().float())


# Every live packed weight by a key its module keeps (`register`), for `compiled_linear`: compiled code can hand an
# opaque op tensors and numbers, not the module's packed weight. Weak values: an entry goes with the module holding it.
_PACKED: weakref.WeakValueDictionary[int, PackedWeight] = weakref.WeakValueDictionary()
_KEYS = itertools.count(1)


def register(packed: PackedWeight) -> int:
    """The key `compiled_linear` finds `packed` by (a module keeps it as a Python int, which torch.compile bakes in
    as a constant and guards on)."""
    key = next(_KEYS)
    _PACKED[key] = packed
    return key


def pack(codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None) -> PackedWeight:
    """Int8 codes (out, in) with one fp32 scale per output row, ready for `linear`; with `bias`, also packed with it
    fused (the plain copy is packed when first used)."""
    packed = PackedWeight(codes, scale)
    if bias is not None:
        packed.fuse(bias)
    return packed


@torch.library.custom_op("hf_compress::int8_linear", mutates_args=())
def compiled_linear(
    x: torch.Tensor,
    codes: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    per_token: bool,
    fuse_bias: bool,
    key: int,
) -> torch.Tensor:
    """`linear` as one opaque op for torch.compile: fbgemm itself on the module's packed weight (found by `key`), so
    compiled int8 matmuls compute what eager ones do, at the kernel's speed, and inductor compiles everything around
    them. Why not `traced_linear` under torch.compile: its exact emulation of fbgemm's rounding in
    plain ops (float64 multiply-adds, a whole-tensor range) ran the compiled MiniLM teacher at 0.77-0.88 of torchao's
    compiled int8 at batch 32 (benchmarks/RESULTS.md, "Our int8 against torch's own"). torch.export still traces
    `traced_linear`: an exported program must hold plain ops. `key`: `register`'s key of the module's packed weight;
    a key that finds none (a graph compiled before its module was freed or prepared again; a module re-prepared gets
    new keys, and torch.compile's guard on them recompiles) falls back to `traced_linear`'s numbers, computed eagerly
    inside the op: the same floats, more slowly."""
    packed = _PACKED.get(key)
    if packed is None or packed.codes.shape != codes.shape:
        return traced_linear(x, codes, scale, bias, per_token, fuse_bias)
    # `fuse_bias` is the module's own decision, as in eager calls (the fused copy holds the bias's current values)
    return linear(x.contiguous(), packed, packed.row_sums, bias, per_token, fuse_bias)


@compiled_linear.register_fake
def _(x, codes, scale, bias, per_token, fuse_bias, key):
    return x.new_empty((*x.shape[:-1], codes.shape[0]))


def linear(
    x: torch.Tensor,
    packed: PackedWeight,
    weight_row_sums: torch.Tensor | None,
    bias: torch.Tensor | None,
    per_token: bool = True,
    fuse_bias: bool = True,
) -> torch.Tensor:
    """y = x W^T + b with x quantized to uint8 at run time (one range per token, or per call) and int32 accumulation.

    fbgemm quantizes its input with one range per call, which outlier tokens and channels of BERT activations
    stretch (on MiniLM that costs ~5 dB of SQNR). For one range per token, each row is first mapped onto [0, 1]
    (x = lo + width * unit), which makes fbgemm's per-call range a per-token one, and mapped back:
    W x = width * (W unit) + lo * (W 1). That costs four elementwise passes.
    `fuse_bias`: with one range per call, use the copy of the weight packed with the bias (`PackedWeight.fuse`),
    when there is one: the caller vouches that it holds `bias`'s values. Otherwise the bias is added after.
    """
    # Full 8-bit activations (reduce_range=False): safe from the int16 saturation of x86 AVX2 int8 dot products
    # (vpmaddubsw) because the weights keep every channel pair within rounding.py's limit, 255 * 128 < 2**15.
    if not per_token:
        if bias is not None and fuse_bias and packed.fused() is not None:
            return torch.ops.quantized.linear_dynamic(x, packed.fused(), False)
        y = torch.ops.quantized.linear_dynamic(x, packed.plain(), False)
        return y if bias is None else y.add_(bias)
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    lo, hi = x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True)  # 5x faster than torch.aminmax here
    width = (hi - lo).clamp_(min=1e-12)
    inverse = width.reciprocal()
    unit = torch.addcmul(-lo * inverse, x, inverse)
    y = torch.ops.quantized.linear_dynamic(unit, packed.plain(), False)
    out = lo * weight_row_sums if bias is None else torch.addcmul(bias, lo, weight_row_sums)
    return out.addcmul_(y, width).reshape(*shape[:-1], -1)


# ---------------------------------------------------------------- the same numbers in plain tensor ops


def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """float32 a * b + c rounded once, as a fused multiply-add (ATen's CPU addcmul and fbgemm's output stage use
    one): the float32 product is exact in float64 (b and c are promoted to it), so only the sum rounds, then once more
    to float32, which differs from a single rounding only when the float64 sum lands exactly on a float32 midpoint
    (never met in testing)."""
    return (a.double() * b + c).float()


def quantize_activations(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """fbgemm's dynamic quantization of x to uint8 with one range per call: q (x's shape, exact integers in [0, 255]
    held in float32), the zero point and the scale (0-d float32).

    The range is ATen's ChooseQuantizationParams(min(x, 0), max(x, 0), 0, 255): scale (max - min) / 255 in float64,
    at least SMALL_SCALE (the range then widened by the same factor, in float32); the zero point from whichever end
    adds the smaller terms, rounded half to even. Each x then rounds as fbgemm's AVX2 Quantize does:
    fma(x, 1 / scale, zero point) in float32, rounded half to even and clamped to [0, 255]. Where ATen would take 0.1
    for a range of (almost) zero width, every x quantizes to the zero point all the same, and the output is 0.
    """
    flat = x.reshape(-1)  # reduced along a dimension, as ONNX's ReduceMin / ReduceMax translate
    bounds = torch.stack([flat.amin(dim=0).clamp(max=0.0), flat.amax(dim=0).clamp(min=0.0)])
    wide = bounds.double()
    scale = (wide[1] - wide[0]) / QMAX
    scale32 = scale.float()
    small = scale < SMALL_SCALE_FLOAT64
    amplifier = torch.where(small & (scale32 > 0), SMALL_SCALE_FLOAT32 / scale32, 1.0)
    scale = torch.where(small, SMALL_SCALE_FLOAT64, scale)
    scale32 = torch.where(small, SMALL_SCALE_FLOAT32, scale32)
    from_min, from_max = ((bounds * amplifier).double() / scale).unbind()  # min / scale, max / scale, as in ATen
    use_min = -from_min.abs() < QMAX - from_max.abs()
    zero_point = torch.where(use_min, -from_min, QMAX - from_max).round().clamp(0, QMAX)
    q = _fma(x, scale32.reciprocal(), zero_point).round().clamp(0, QMAX)
    return q, zero_point, scale32


def integer_matmul(q: torch.Tensor, zero_point: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Σ_k (q[.., k] − zero point) · codes[j, k] in int32, as fbgemm accumulates, then rounded once to float32 as
    its int32 → float conversion does: q (..., in) integers in [0, 255], codes (out, in) int8.

    torch._int_mm takes signed int8 on both sides, so q is shifted by 128 into int8 and the shift, with the zero point,
    comes back through the codes' integer row sums: (q − zp)·w = (q − 128)·w + (128 − zp)·Σw. Every term is an exact
    integer (|sum| ≤ 255 · 127 · in < 2**31 for in < 66,000), so the result equals the kernel's whatever the width,
    and inductor compiles it to the CPU's int8 dot products (VNNI where there is one): measured on one MiniLM FFN
    Linear (1,536 tokens, 384 → 1,536, one thread, AVX-512 VNNI, compiled) at 0.28 of fp32's time, where the
    same integers in a float32 matmul took 1.06 of it.
    """
    shape = q.shape
    shifted = (q.reshape(-1, shape[-1]) - 128).to(torch.int8)
    sums = codes.to(torch.int32).sum(dim=1)
    acc = torch._int_mm(shifted, codes.t()) + (128 - zero_point).to(torch.int32) * sums
    return acc.float().reshape(*shape[:-1], -1)


def traced_linear(
    x: torch.Tensor,
    codes: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None,
    per_token: bool = True,
    fuse_bias: bool = False,
) -> torch.Tensor:
    """`linear`'s numbers in plain tensor ops, for torch.compile and torch.export: codes (out, in) int8, scale (out,)
    float32.

    `fuse_bias`: round as the kernel with the bias packed in does (`linear` with a fused copy). Equal to `linear` bit
    for bit on x86 CPUs with AVX2 and FMA (where fbgemm rounds with fused multiply-adds), up to a double rounding in
    float64 that testing never met.
    """
    shape = x.shape
    if per_token:
        x = x.reshape(-1, shape[-1])
        lo, hi = x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True)
        width = (hi - lo).clamp(min=1e-12)
        inverse = width.reciprocal()
        x = _fma(x, inverse, -lo * inverse)  # the unit mapping of `linear`
    q, zero_point, x_scale = quantize_activations(x)
    # The kernel's output stage: float(int32 sum) * (x scale * row scale), then the bias fused (one rounding) or not.
    acc, combined = integer_matmul(q, zero_point, codes), x_scale * scale
    if not per_token:
        if bias is None:
            return acc * combined
        return _fma(acc, combined, bias) if fuse_bias else acc * combined + bias
    y = acc * combined
    sums = row_sums(codes, scale)
    out = lo * sums if bias is None else _fma(lo, sums, bias)
    return _fma(y, width, out).reshape(*shape[:-1], -1)
