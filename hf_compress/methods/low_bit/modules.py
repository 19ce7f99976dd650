"""LowBitLinear and LowBitEmbedding: 8/4/2/1-bit codes packed into uint8 with per-row or per-group fp32 scales, in
the layout they are saved in; and `bake_low_bit_`, which turns a fake-quantized model into them.

Low bits are a *storage* format on this machine: torch's int4 CPU kernel (`_weight_int4pack_mm_for_cpu`) measured
60-70x slower than fp32 `F.linear` on a 384x1536 layer, so a LowBitLinear computes with the int8 kernel of
`Int8Linear` (compute="int8", the default) or with float weights (compute="float"). At load, its codes are unpacked
once, dequantized and re-quantized to int8 codes with one scale per row (the fbgemm kernel's layout):

- per-row scales (group_size None): exact. The largest 4-bit code of a row is ±7, so the int8 scale is s/9 and every
  code c maps to 9c; ternary ±1 maps to ±63; 8-bit codes are kept. The int8 weights equal the fake-quantized ones.
- per-group scales: one rounding to nearest, at most max_row|Q(w)| / 126 per weight (half an int8 step).

Either way the int8 kernel also rounds the activations at run time (Int8Linear's bound), so a reloaded model equals
the fake-quantized model it was baked from within int8 compute's error; with compute="float", to float rounding.
Embeddings have no matmul: a LowBitEmbedding unpacks only the looked-up rows, with their exact scales.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from ... import provenance
from ...checks import check_choice, invalid
from ..int8.modules import SEVEN_BIT_QMAX, PackedInt8Module, quantize_rows
from .fake_quant import (
    dequantize_groups,
    fake_quantized_modules,
    num_groups,
    pack_codes,
    packed_bytes,
    quantize_groups,
    unpack_codes,
)

COMPUTES = ("int8", "float")


def low_bit_kind(module_type: str, bits: int) -> str:
    """The quantized_modules kind of a module: 'linear_4bit', 'embedding_2bit', ..."""
    return f"{module_type}_{bits}bit"


def parse_kind(kind: str) -> tuple[str, int] | None:
    """('linear' | 'embedding', bits) for a low-bit kind, None for the int8 kinds."""
    module_type, _, rest = kind.rpartition("_")
    if module_type in ("linear", "embedding") and rest.endswith("bit") and rest[:-3].isdigit():
        return module_type, int(rest[:-3])
    return None


class LowBitLinear(PackedInt8Module):
    """nn.Linear stored as packed `bits`-bit codes and fp32 scales, computing with int8 kernels (or float weights).

    Saved tensors: `weight` (ceil(out·in·bits/8),) uint8, flat so that a loader unaware of the format raises on its
    size; `weight_scale` (out·groups,) fp32, row-major (out, groups); `bias` (out,) float or None.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bits: int,
        group_size: int | None = None,
        bias: bool = True,
        per_token: bool = True,
        compute: str = "int8",
        device=None,
        dtype=None,
    ):
        super().__init__()
        check_choice("compute", compute, COMPUTES)
        self.in_features, self.out_features, self.bits, self.group_size = in_features, out_features, bits, group_size
        self.compute = compute
        groups = num_groups(in_features, group_size)
        self._init_storage(1, out_features * groups, out_features, bias, per_token, device, dtype)
        packed = torch.zeros(packed_bytes(out_features * in_features, bits), dtype=torch.uint8, device=device)
        self.weight = nn.Parameter(packed, requires_grad=False)
        # What `prepare` unpacks the codes into, once: for compute="int8", the int8 codes (out, in) and row scales;
        # for compute="float", the dequantized weight. Not saved (the packed codes are); traced calls read them too.
        self.register_buffer("int8_codes", None, persistent=False)
        self.register_buffer("int8_scale", None, persistent=False)
        self.register_buffer("float_weight", None, persistent=False)

    @classmethod
    @torch.inference_mode(False)
    def from_fake_quant(cls, module: nn.Linear, per_token: bool = True, compute: str = "int8") -> LowBitLinear:
        """Pack the quantized value of a FakeQuantLinear's master weight (the value its forward used)."""
        device = module.weight.device
        new = cls(
            module.in_features,
            module.out_features,
            module.bits,
            module.group_size,
            module.bias is not None,
            per_token,
            compute,
            device="cpu",
        )
        codes, scales = quantize_groups(module.weight, module.bits, module.group_size)
        new.weight = nn.Parameter(pack_codes(codes, module.bits).to(device), requires_grad=False)
        new.weight_scale = scales.reshape(-1).to(device)
        if module.bias is not None:
            new.bias = nn.Parameter(module.bias.detach().clone(), requires_grad=module.bias.requires_grad)
        new.train(module.training)
        new.prepare()
        return new

    def codes(self) -> torch.Tensor:
        """The signed codes as an (out_features, in_features) int8 tensor."""
        numel = self.out_features * self.in_features
        return unpack_codes(self.weight, self.bits, numel).view(self.out_features, self.in_features)

    def dequantized_weight(self) -> torch.Tensor:
        """codes · scale of their group: the float weight (out, in) the fake-quantized model computed with."""
        scales = self.weight_scale.view(self.out_features, -1)
        return dequantize_groups(self.codes(), scales, self.group_size)

    def int8_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Int8 codes (out, in) in [-63, 63] and one scale per row for the int8 kernel (exact for per-row scales)."""
        # Per-row scales, max |code| = m: int8 scale m·s/63 and codes c·63/m, exact since 63/m is an integer (m = 1, 7,
        # 63: ternary, 4-bit and 8-bit absmax rows). Per-group scales: rounded to nearest, half an int8 step at most.
        return quantize_rows(self.dequantized_weight(), SEVEN_BIT_QMAX)

    def prepare(self) -> None:
        """Unpack the codes now (at bake or load time) into what the forward computes with: the int8 kernel's codes,
        packed for fbgemm (compute="int8"), or the float weight (compute="float"); call it after editing the module's
        tensors in place."""
        self.int8_codes = self.int8_scale = self.float_weight = None
        if self.weight.device.type != "meta":
            with torch.inference_mode(False), torch.no_grad():
                if self.compute == "float":
                    self.float_weight = self.dequantized_weight()
                else:
                    self.int8_codes, self.int8_scale = self.int8_rows()
        if self.compute == "float":
            self._kernels, self._bias_trained, self._direct, self._kernel_keys = None, False, None, None
        else:
            super().prepare()

    def _int8_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if self.int8_codes is None:  # not prepared (built by hand): computed, not kept
            return [self.int8_rows()]
        return [(self.int8_codes, self.int8_scale)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = x W^T + b for x (..., in_features) -> (..., out_features); int8 kernel on CPU float32 (compute="int8")
        or a float matmul with the dequantized weight (compute="float"). Gradients reach x, never the codes."""
        if self.compute == "float":
            bias = None if self.bias is None else self.bias.to(x.dtype)
            weight = self.dequantized_weight() if self.float_weight is None else self.float_weight
            return F.linear(x, weight.to(x.dtype), bias)
        y = self.direct_call(x)
        return self.int8_value_float_gradient(x) if y is None else y

    def _int8_forward(self, x: torch.Tensor, fuse_bias: bool = True) -> torch.Tensor:
        return self._matmul(0, x, self.bias, fuse_bias)

    def _reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        [(codes, scale)] = self._int8_weights()
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, (codes.float() * scale[:, None]).to(x.dtype), bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
            f"group_size={self.group_size}, bias={self.bias is not None}, compute={self.compute}"
        )


class LowBitEmbedding(nn.Module):
    """nn.Embedding stored as packed `bits`-bit codes with per-row or per-group fp32 scales; looked-up rows are
    unpacked and dequantized exactly (no int8 step: an embedding has no matmul).

    Saved tensors: `weight` (num_embeddings·embedding_dim·bits/8,) uint8, one whole number of bytes per row;
    `weight_scale` (num_embeddings·groups,) fp32.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        bits: int,
        group_size: int | None = None,
        padding_idx: int | None = None,
        device=None,
    ):
        super().__init__()
        if embedding_dim * bits % 8:
            raise invalid("embedding_dim", embedding_dim, f"a multiple of {8 // bits} at {bits} bits (whole bytes)")
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.bits, self.group_size = bits, group_size
        packed = torch.zeros(packed_bytes(num_embeddings * embedding_dim, bits), dtype=torch.uint8, device=device)
        self.weight = nn.Parameter(packed, requires_grad=False)
        groups = num_groups(embedding_dim, group_size)
        self.register_buffer("weight_scale", torch.ones(num_embeddings * groups, dtype=torch.float32, device=device))

    @classmethod
    @torch.inference_mode(False)
    def from_fake_quant(cls, module: nn.Embedding) -> LowBitEmbedding:
        """Pack the quantized value of a FakeQuantEmbedding's master table."""
        device = module.weight.device
        new = cls(
            module.num_embeddings, module.embedding_dim, module.bits, module.group_size, module.padding_idx, "cpu"
        )
        codes, scales = quantize_groups(module.weight, module.bits, module.group_size, embedding=True)
        new.weight = nn.Parameter(pack_codes(codes, module.bits).to(device), requires_grad=False)
        new.weight_scale = scales.reshape(-1).to(device)
        return new

    def packed_rows(self) -> torch.Tensor:
        """The packed bytes as (num_embeddings, embedding_dim·bits/8)."""
        return self.weight.view(self.num_embeddings, -1)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Float rows (len(ids), embedding_dim) of the flat ids."""
        codes = unpack_codes(self.packed_rows()[ids], self.bits, ids.numel() * self.embedding_dim)
        scales = self.weight_scale.view(self.num_embeddings, -1)[ids]
        return dequantize_groups(codes.view(-1, self.embedding_dim), scales, self.group_size)

    def dequantized_weight(self) -> torch.Tensor:
        """The whole float table (num_embeddings, embedding_dim)."""
        return self.rows(torch.arange(self.num_embeddings, device=self.weight.device))

    def select_rows(self, rows: torch.Tensor, padding_idx: int | None) -> LowBitEmbedding:
        """A LowBitEmbedding of the rows `rows` (codes and scales selected, never re-quantized): vocabulary pruning."""
        with torch.inference_mode(False), torch.no_grad():
            rows = rows.to(self.weight.device)
            new = LowBitEmbedding(len(rows), self.embedding_dim, self.bits, self.group_size, padding_idx, "meta")
            new.weight = nn.Parameter(self.packed_rows()[rows].reshape(-1).clone(), requires_grad=False)
            new.weight_scale = self.weight_scale.view(self.num_embeddings, -1)[rows].reshape(-1).clone()
        return new

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Float rows (..., embedding_dim) of the ids (...); only those rows are unpacked."""
        return self.rows(input_ids.reshape(-1)).view(*input_ids.shape, self.embedding_dim)

    def extra_repr(self) -> str:
        return (
            f"{self.num_embeddings}, {self.embedding_dim}, bits={self.bits}, group_size={self.group_size}, "
            f"padding_idx={self.padding_idx}"
        )


def bake_low_bit_(model, config=None, compute: str = "int8"):
    """Replace every FakeQuantLinear / FakeQuantEmbedding of `model` by its packed LowBitLinear / LowBitEmbedding,
    in place, and mark the model quantized so that `save_pretrained` writes the packed tensors and config.json.

    `config`: an Int8QuantizationConfig for the run-time options (activation_range); the quantized modules, group
    size and compute are filled in. The other modules stay as they are (float). Returns the model.
    Raises ValueError when the model holds no fake-quantized module or is already quantized.
    """
    from ...format.config import Int8QuantizationConfig
    from ..int8.transform import attach, check_not_quantized

    check_choice("compute", compute, COMPUTES)
    fakes = fake_quantized_modules(model)
    if not fakes:
        raise invalid("model", type(model).__name__, "a model with fake-quantized modules (fake_quantize_)")
    check_not_quantized(model)
    config = config or Int8QuantizationConfig()
    group_sizes = {m.group_size for m in fakes.values()}
    if len(group_sizes) > 1:
        raise invalid("group_size", sorted(group_sizes, key=str), "one group size for the whole model")
    per_token = config.activation_range == "per_token"
    kinds = {}
    for name, module in fakes.items():
        if isinstance(module, nn.Embedding):
            new = LowBitEmbedding.from_fake_quant(module)
            kinds[name] = low_bit_kind("embedding", module.bits)
        else:
            new = LowBitLinear.from_fake_quant(module, per_token, compute)
            kinds[name] = low_bit_kind("linear", module.bits)
        model.set_submodule(name, new)
    config = dataclasses.replace(
        config, quantized_modules=kinds, weight_group_size=group_sizes.pop(), low_bit_compute=compute
    )
    attach(model, config)
    bits = [b for _, b in map(parse_kind, kinds.values())]
    provenance.record(
        model.config,
        "quantization",
        {"method": "low_bit", **{f"{b}bit": bits.count(b) for b in sorted(set(bits), reverse=True)}},
    )
    return model


def set_low_bit_compute_(model: nn.Module, compute: str) -> nn.Module:
    """Switch every LowBitLinear of `model` to compute="int8" (fbgemm kernel) or "float" (dequantized weights)."""
    check_choice("compute", compute, COMPUTES)
    for module in model.modules():
        if isinstance(module, LowBitLinear):
            module.compute = compute
            module.prepare()
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    if config is not None and hasattr(config, "low_bit_compute"):
        config.low_bit_compute = compute
    return model
