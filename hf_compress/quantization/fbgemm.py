"""The only place that touches torch's deprecated quantized-tensor API: fbgemm's dynamic int8 linear kernel.

Why it is used: on the 2-core AVX2 (no VNNI) machine this project benchmarks on, `quantized::linear_dynamic` (the
kernel behind `torch.ao.quantization.quantize_dynamic`) is the fastest int8 matmul that torch ships for CPU. Measured
on one MiniLM feed-forward Linear (384 -> 1536), time relative to fp32 `F.linear`, for 48 / 1536 tokens:
fbgemm 0.43 / 0.59, onednn::qlinear_pointwise with per-batch activation quantization 0.94 / 1.75,
torch._int_mm 5.2 / 44, torch._weight_int8pack_mm (weight-only) 2.8 / 38.

Why it is deprecated: torch 2.13 deprecates the qint8/quint8 dtypes and the functions that create them
(https://github.com/pytorch/pytorch/issues/184982); `linear_prepack` only accepts a qint8 tensor.

Removal plan: nothing outside this module calls these ops. The on-disk format (int8 codes + fp32 scales) and
`Int8Linear` are backend-independent; when torch removes the ops, `available()` returns False and `Int8Linear`
falls back to its reference path (int8 weights dequantized on the fly: same weights, float speed). Then replace
this module by the fastest CPU kernel that takes plain torch.int8 tensors (torchao or oneDNN), keeping `pack` and
`linear`'s signatures, and re-run benchmarks/quantization.py to check it still beats fp32.
"""

from __future__ import annotations

import functools
import warnings

import torch


@functools.cache  # asked on every int8 call; a torch build's ops do not change while it runs
def available() -> bool:
    """Whether this torch build still has fbgemm's prepack and dynamic linear ops."""
    try:
        return hasattr(torch.ops.quantized, "linear_prepack") and hasattr(torch.ops.quantized, "linear_dynamic")
    except (AttributeError, RuntimeError):
        return False


def version(tensor: torch.Tensor) -> int | None:
    """The tensor's in-place version counter; None for an inference tensor, which has none (and which can only be
    edited in place inside inference mode)."""
    return None if tensor.is_inference() else tensor._version


def cache_key(weight: torch.Tensor, scale: torch.Tensor) -> tuple:
    """What a packed-weight cache is keyed on: the storages and in-place versions of the codes and their scales."""
    # Written out rather than built from a generator: it runs on every int8 call, where microseconds show at batch 1.
    return weight.data_ptr(), version(weight), scale.data_ptr(), version(scale)


def _prepack(codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.ScriptObject:
    zero_points = torch.zeros(codes.shape[0], dtype=torch.long)
    with warnings.catch_warnings():
        # The deprecation is handled by this module's removal plan; users can do nothing about it.
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        qweight = torch._make_per_channel_quantized_tensor(codes, scale.double(), zero_points, 0)
    return torch.ops.quantized.linear_prepack(qweight, bias)


class PackedWeight:
    """fbgemm's prepacked int8 weight (out, in), one fp32 scale per output row (symmetric, zero point 0), without
    and with the bias fused into the kernel's output stage; each variant is packed when first asked for.

    Why two: fusing the bias saves a pass over the output (measured 2-7% of a MiniLM Linear's int8 time at 1,536
    tokens, benchmarks/int8_kernel.py), but packing costs more than a forward call (~8 ms for 384 x 1536), so the
    fused copy is only kept while the bias is unchanged: calls that train the bias (every step changes it) use the
    plain copy and add it after.
    """

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor):
        self.codes, self.scale = codes, scale
        self._plain = None
        self._fused = None
        self._fused_bias = None  # the bias values packed into _fused

    def plain(self) -> torch.ScriptObject:
        if self._plain is None:
            with torch.inference_mode(False), torch.no_grad():
                self._plain = _prepack(self.codes, self.scale, None)
        return self._plain

    def fused(self, bias: torch.Tensor) -> torch.ScriptObject:
        # Compared by value, not by version counter: fused optimizers (Trainer's default adamw_torch_fused) update
        # parameters without bumping it. Comparing out_features floats costs microseconds.
        if self._fused_bias is None or not torch.equal(self._fused_bias, bias.data):
            with torch.inference_mode(False), torch.no_grad():
                self._fused_bias = bias.detach().float().clone()
                self._fused = _prepack(self.codes, self.scale, self._fused_bias)
        return self._fused


def pack(codes: torch.Tensor, scale: torch.Tensor) -> PackedWeight:
    """Int8 codes (out, in) with one fp32 scale per output row, ready for `linear` (packed on first use)."""
    return PackedWeight(codes, scale)


def warm(packed: PackedWeight, bias: torch.Tensor | None, per_token: bool) -> None:
    """Pack now the variant that an inference call will use, so that quantizing or loading pays it, not a call."""
    packed.fused(bias) if bias is not None and not per_token else packed.plain()


def linear(
    x: torch.Tensor,
    packed: PackedWeight,
    weight_row_sums: torch.Tensor,
    bias: torch.Tensor | None,
    per_token: bool = True,
    fuse_bias: bool = True,
) -> torch.Tensor:
    """y = x W^T + b with x quantized to uint8 at run time (one range per token, or per call) and int32 accumulation.

    fbgemm quantizes its input with one range per call, which outlier tokens and channels of BERT activations
    stretch (on MiniLM that costs ~5 dB of SQNR). For one range per token, each row is first mapped onto [0, 1]
    (x = lo + width * unit), which makes fbgemm's per-call range a per-token one, and mapped back:
    W x = width * (W unit) + lo * (W 1). That costs four elementwise passes.
    `fuse_bias`: with one range per call, add the bias inside the kernel (see `PackedWeight`); pass False when the
    bias is being trained, so that each step does not repack.
    """
    # Full 8-bit activations (reduce_range=False): safe from the int16 saturation of x86 AVX2 int8 dot products
    # (vpmaddubsw) because the weights use 7 bits, 255 * 63 * 2 < 2**15 (see LINEAR_QMAX in modules.py).
    if not per_token:
        if bias is not None and fuse_bias:
            return torch.ops.quantized.linear_dynamic(x, packed.fused(bias), False)
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
