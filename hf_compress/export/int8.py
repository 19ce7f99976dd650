"""Our int8 codes and scales in the exported graph: DynamicQuantizeLinear + MatMulInteger, ONNX's own dynamic int8.

Every int8 matmul of an hf_compress module (Int8Linear, Int8LowRankLinear, LowBitLinear computing in int8) goes through
`PackedInt8Module._matmul(index, x, bias, fuse_bias)` with the codes (out, in) int8 and one fp32 scale per row that
`_int8_weights()` gives. For the export, that one call becomes `hf_compress::dynamic_int8_matmul`, a torch custom op
that torch.export keeps as one node, and which the ONNX translation below writes as

    DynamicQuantizeLinear(x) -> MatMulInteger(x_q, codesᵀ, x_zero_point) -> Cast -> Mul(x_scale · scale)

the pattern `onnxruntime.quantization.quantize_dynamic` writes, which ONNX Runtime fuses into its int8 kernel
(DynamicQuantizeMatMul) and OpenVINO's ONNX frontend reads. Its numbers are fbgemm's: uint8 activations with one
asymmetric range per call (ONNX's DynamicQuantizeLinear is ATen's ChooseQuantizationParams on [min(x, 0), max(x, 0)]),
int8 weights with zero point 0, int32 accumulation. One range per token (`activation_range="per_token"`) maps each
token onto [0, 1] first, as `fbgemm.linear` does, so the graph computes what the PyTorch int8 model computes; the
export's check measures it (argmax agreement on the sample).

Why our codes and not the runtime's own quantization (quantize_dynamic / nncf on a float export): an int8 checkpoint
holds no float weights any more, and re-quantizing its dequantized weights rounds them a second time; measured in
docs/serving.md ("int8 in the runtime").
"""

from __future__ import annotations

import contextlib
import types

import torch

QMAX = 255  # uint8 activations, as DynamicQuantizeLinear and fbgemm use them


@torch.library.custom_op("hf_compress::dynamic_int8_matmul", mutates_args=())
def dynamic_int8_matmul(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (..., in) float32 times codes (out, in) int8, transposed, times scale (out,): ONNX's DynamicQuantizeLinear +
    MatMulInteger + scale, in torch (the op's meaning; the exported graph computes the ONNX ops)."""
    lo = x.detach().amin().clamp(max=0.0).double()
    hi = x.detach().amax().clamp(min=0.0).double()
    x_scale = ((hi - lo) / QMAX).float()
    x_scale = torch.where(x_scale == 0, torch.ones_like(x_scale), x_scale)
    zero_point = torch.round(-lo.float() / x_scale).clamp(0, QMAX)
    q = (torch.round(x / x_scale) + zero_point).clamp(0, QMAX) - zero_point
    acc = torch.matmul(q.double(), codes.double().t())  # exact: integers far below 2**53
    return (acc * (x_scale * scale.float()).double()).float()


@dynamic_int8_matmul.register_fake
def _(x: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], codes.shape[0]))


def onnx_dynamic_int8_matmul(x, codes, scale):
    """The ONNX translation of `dynamic_int8_matmul` (onnxscript ops, traced by torch.onnx's exporter)."""
    from onnxscript import opset18 as op

    quantized, x_scale, x_zero_point = op.DynamicQuantizeLinear(x)
    accumulated = op.MatMulInteger(quantized, op.Transpose(codes, perm=[1, 0]), x_zero_point)
    return op.Mul(op.Cast(accumulated, to=1), op.Mul(x_scale, scale))  # to=1: FLOAT


TRANSLATIONS = {torch.ops.hf_compress.dynamic_int8_matmul.default: onnx_dynamic_int8_matmul}


def exported_matmul(module, index: int, x: torch.Tensor, bias: torch.Tensor | None, fuse_bias: bool) -> torch.Tensor:
    """`PackedInt8Module._matmul` for the export: the index-th int8 matmul as `dynamic_int8_matmul`, one range per
    call, or per token by mapping each token onto [0, 1] first (`fbgemm.linear`'s per-token path)."""
    codes, scale = module._int8_weights()[index]
    codes, scale = codes.contiguous(), scale.float().contiguous()
    if not module.per_token:
        y = dynamic_int8_matmul(x, codes, scale)
        return y if bias is None else y + bias.to(y.dtype)
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    lo, hi = x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True)
    width = (hi - lo).clamp(min=1e-12)
    y = dynamic_int8_matmul((x - lo) / width, codes, scale)
    row_sums = codes.float().sum(dim=1) * scale  # W·1: the zero point of the mapped token, in output units
    out = y * width + lo * row_sums
    if bias is not None:
        out = out + bias.to(out.dtype)
    return out.reshape(*shape[:-1], -1)


def compressed_weight_matmul(
    module, index: int, x: torch.Tensor, bias: torch.Tensor | None, fuse_bias: bool
) -> torch.Tensor:
    """`PackedInt8Module._matmul` for OpenVINO: the index-th matmul with its int8 codes dequantized in the graph,
    x @ (codes · scale)ᵀ. OpenVINO's PyTorch frontend keeps that as an int8 constant → Convert → Multiply feeding the
    MatMul, the pattern of weights compressed by NNCF: the IR stores the codes at one byte each, and the CPU plugin
    runs the matmul on them with its own dynamic quantization of the activations (per token, in groups of 32 input
    channels by default: `DYNAMIC_QUANTIZATION_GROUP_SIZE`), so activations are rounded by the runtime, not by our
    per-call or per-token range.

    Why not the ONNX pattern above for OpenVINO: its frontend turns MatMulInteger's int8 codes into int32 constants,
    4 bytes per weight, that its int8 kernels do not run (measured on the MiniLM tweets teacher: 56.5 MB, 1.49× fp32
    PyTorch at batch 32, where this form gives 23.6 MB and 1.74× the fp32 IR's speed)."""
    codes, scale = module._int8_weights()[index]
    weight = codes.to(x.dtype) * scale.to(x.dtype)[:, None]
    return torch.nn.functional.linear(x, weight, None if bias is None else bias.to(x.dtype))


def int8_matmul_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The modules of `model` whose forward runs int8 matmuls (the fbgemm path of PackedInt8Module), by name."""
    from ..methods.int8.modules import PackedInt8Module

    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, PackedInt8Module) and getattr(module, "compute", "int8") == "int8"
    }


@contextlib.contextmanager
def int8_export_forms(model: torch.nn.Module, form=exported_matmul):
    """While exporting: every int8 matmul module computes through `form` (`exported_matmul`: ONNX's dynamic int8;
    `compressed_weight_matmul`: OpenVINO's compressed weights); yields how many there are.

    The modules are left as they were afterwards (the override is an instance attribute, removed on exit).
    """
    modules = int8_matmul_modules(model)
    for module in modules.values():
        module._matmul = types.MethodType(form, module)
    try:
        yield len(modules)
    finally:
        for module in modules.values():
            del module._matmul
