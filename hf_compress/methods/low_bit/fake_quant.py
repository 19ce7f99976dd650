"""Weights below 8 bits: symmetric per-row or per-group quantizers, their straight-through fake quantization for
training, and the packing of 4-, 2- and 1-bit codes into bytes.

Quantizers (`quantize_groups`), for a weight (out, in) cut into groups of `group_size` consecutive input columns
(None: one group per row; a last, shorter group when group_size does not divide `in`):

- 8 bits: codes in [-63, 63] (`SEVEN_BIT_QMAX`: no int16 saturation in the int8 kernel, see rounding.py) or
  [-127, 127] for an embedding, scale = max|w| / qmax per group.
- 4 bits: codes in [-7, 7], scale = max|w| / 7 per group (symmetric uniform, as in Q8BERT/GPTQ's absmax form).
- 2 bits: ternary codes in {-1, 0, 1}: threshold Δ = 0.7·mean|w| and scale α = mean of |w| over |w| > Δ, per group
  (Ternary Weight Networks, Li et al. 2016, arXiv:1605.04711, the approximation-aware scale TernaryBERT uses: Zhang et
  al., EMNLP 2020, arXiv:2009.12812).
- 1 bit: binary codes in {-1, +1} (sign, zero taken as +1) and scale α = mean |w| per group, the scale that minimises
  ‖w − α·sign(w)‖² (XNOR-Net, Rastegari et al. 2016, arXiv:1603.05279; the weight binarization of BinaryBERT, Bai et
  al., ACL 2021, arXiv:2012.15701, and BiT, Liu et al., NeurIPS 2022, arXiv:2205.13016).

Training sees `w + (Q(w) − w).detach()`: the quantized value forward, the identity gradient backward (the
straight-through estimator, Bengio et al. 2013, arXiv:1308.3432), so the float master weight keeps learning.

Storage: codes in offset binary (code + 2^(bits−1)), 8 / bits codes per uint8, first code in the lowest bits; 1-bit
codes as their sign bit (−1 → 0, +1 → 1), 8 per byte.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_choice, check_positive_int, invalid
from ..int8.modules import EMBEDDING_QMAX, MIN_SCALE, SEVEN_BIT_QMAX
from .config import BITS, MODULE_SELECTIONS  # noqa: F401  (MODULE_SELECTIONS re-exported)

logger = logging.getLogger(__name__)

TERNARY_THRESHOLD = 0.7  # Δ = 0.7·mean|w|: TWN's approximation of the optimal ternary threshold
# Which modules `select_low_bit_modules` picks by name: the Linears inside the transformer layers; those plus the
# input word embeddings (TernaryBERT's choice); or every Linear (pooler and task head too) and the word embeddings.


def qmax(bits: int, embedding: bool = False) -> int:
    """Largest code magnitude: 63 (int8 Linear, SEVEN_BIT_QMAX) or 127 (int8 embedding), 7 (4 bits), 1 (ternary and
    binary)."""
    check_choice("bits", bits, BITS)
    if bits == 8:
        return EMBEDDING_QMAX if embedding else SEVEN_BIT_QMAX
    return max(1, 2 ** (bits - 1) - 1)


def num_groups(in_features: int, group_size: int | None) -> int:
    """Scales per row: 1 per row, or ceil(in / group_size)."""
    return 1 if group_size is None else math.ceil(in_features / group_size)


def _grouped(weight: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """(out, in) -> (out, groups, size), the last group zero-padded; zeros change neither max|w| nor |w| > Δ."""
    out, inp = weight.shape
    size = inp if group_size is None else group_size
    groups = num_groups(inp, group_size)
    pad = groups * size - inp
    if pad:
        weight = F.pad(weight, (0, pad))
    return weight.reshape(out, groups, size)


def quantize_groups(
    weight: torch.Tensor, bits: int, group_size: int | None = None, embedding: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (out, in) int8 and fp32 scales (out, groups) with weight ≈ codes · scale of the code's group.

    `weight`: (out, in) float; `group_size`: input columns per scale (None: one scale per row). Differentiable in
    nothing: call on detached weights, or through `fake_quantize`.
    """
    check_choice("bits", bits, BITS)
    out, inp = weight.shape
    w = _grouped(weight.detach().float(), group_size)
    # Real (unpadded) entries per group: the mean |w| of ternary and binary scales is over these.
    size = w.shape[-1]
    counts = torch.full((w.shape[1],), float(size), device=w.device)
    counts[-1] = inp - (w.shape[1] - 1) * size
    if bits == 1:
        # α = mean |w| over the group's real entries; codes sign(w), zero as +1 (a 1-bit code has no zero).
        scale = (w.abs().sum(-1) / counts).clamp(min=MIN_SCALE)
        codes = torch.where(w < 0, -1.0, 1.0)
    elif bits == 2:
        # Δ = 0.7 · mean|w| over the group's real (unpadded) entries; α = mean |w| of the entries above Δ.
        magnitude = w.abs()
        delta = TERNARY_THRESHOLD * magnitude.sum(-1) / counts
        keep = magnitude > delta[..., None]
        alpha = (magnitude * keep).sum(-1) / keep.sum(-1).clamp(min=1)
        scale = alpha.clamp(min=MIN_SCALE)
        codes = torch.sign(w) * keep
    else:
        q = qmax(bits, embedding)
        scale = (w.abs().amax(-1) / q).clamp(min=MIN_SCALE)
        codes = torch.round(w / scale[..., None]).clamp_(-q, q)
    codes = codes.reshape(out, -1)[:, :inp].to(torch.int8)
    return codes, scale


def dequantize_groups(codes: torch.Tensor, scales: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
    """codes (out, in) · scales (out, groups) broadcast over each group -> float32 (out, in)."""
    out, inp = codes.shape
    grouped = _grouped(codes.float(), group_size)
    return (grouped * scales.float()[..., None]).reshape(out, -1)[:, :inp]


def fake_quantize(weight: torch.Tensor, bits: int, group_size: int | None = None, embedding: bool = False):
    """Q(w) in the forward pass, identity in the backward pass: w + (Q(w) − w).detach(), same shape and dtype."""
    codes, scales = quantize_groups(weight, bits, group_size, embedding)
    quantized = dequantize_groups(codes, scales, group_size).to(weight.dtype)
    return weight + (quantized - weight).detach()


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed codes (any shape, values in [-2^(bits-1), 2^(bits-1) - 1]; for 1 bit, -1 or +1) -> flat uint8
    (ceil(numel·bits/8),).

    Offset binary, 8 / bits codes per byte, the first in the lowest bits; a last partial byte is zero-padded. 1-bit
    codes are stored as their sign bit (-1 -> 0, +1 -> 1).
    Raises ValueError for bits outside (8, 4, 2, 1) or a code out of range.
    """
    check_choice("bits", bits, BITS)
    flat = codes.reshape(-1).to(torch.int16)
    if bits == 1:
        if flat.numel() and not bool(((flat == -1) | (flat == 1)).all()):
            raise invalid("codes", f"[{int(flat.min())}, {int(flat.max())}]", "-1 or +1 for 1-bit codes")
        unsigned = (flat > 0).to(torch.uint8)
    else:
        offset = 2 ** (bits - 1)
        if flat.numel() and (int(flat.min()) < -offset or int(flat.max()) > offset - 1):
            raise invalid("codes", f"[{int(flat.min())}, {int(flat.max())}]", f"codes in [{-offset}, {offset - 1}]")
        unsigned = (flat + offset).to(torch.uint8)
    per_byte = 8 // bits
    pad = -unsigned.numel() % per_byte
    if pad:
        unsigned = torch.cat([unsigned, unsigned.new_zeros(pad)])
    unsigned = unsigned.view(-1, per_byte)
    packed = unsigned[:, 0].clone()
    for i in range(1, per_byte):
        packed |= unsigned[:, i] << (bits * i)
    return packed


def unpack_codes(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """The inverse of `pack_codes`: flat uint8 -> the first `numel` signed codes, flat int8."""
    check_choice("bits", bits, BITS)
    per_byte = 8 // bits
    if packed.numel() * per_byte < numel:
        raise invalid("numel", numel, f"at most {packed.numel() * per_byte} codes for {packed.numel()} bytes")
    # Shifts as integer division and remainder, not `>>` and `&`: ONNX's exporter has no translation of aten's bit
    # shifts (BitShift is defined for unsigned types only), and a low-bit embedding must export.
    powers = 2 ** torch.arange(0, 8, bits, dtype=torch.int32, device=packed.device)
    unsigned = torch.remainder(
        torch.div(packed.to(torch.int32).reshape(-1, 1), powers, rounding_mode="floor"), 2**bits
    )
    if bits == 1:
        return (unsigned.reshape(-1)[:numel].to(torch.int8) * 2 - 1).to(torch.int8)
    return (unsigned.reshape(-1)[:numel].to(torch.int16) - 2 ** (bits - 1)).to(torch.int8)


def packed_bytes(numel: int, bits: int) -> int:
    """uint8 bytes of `numel` packed codes."""
    return math.ceil(numel * bits / 8)


def stored_bytes(out_features: int, in_features: int, bits: int, group_size: int | None) -> int:
    """Bytes a module's weight takes on disk: packed codes plus fp32 scales (biases are not counted)."""
    return packed_bytes(out_features * in_features, bits) + 4 * out_features * num_groups(in_features, group_size)


class FakeQuantLinear(nn.Linear):
    """nn.Linear that trains a float master weight and computes with its `bits`-bit quantized value (STE).

    An nn.Linear subclass on purpose: pruners, FFN slicing and families.py find and edit it like any Linear.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bits: int = 4, group_size=None, **kw):
        super().__init__(in_features, out_features, bias, **kw)
        self.bits, self.group_size = bits, group_size

    @classmethod
    def from_linear(cls, linear: nn.Linear, bits: int, group_size: int | None = None) -> FakeQuantLinear:
        """Wrap `linear`'s own Parameters (the optimizer and pruner see the same tensors)."""
        new = cls(linear.in_features, linear.out_features, linear.bias is not None, bits, group_size, device="meta")
        new.weight, new.bias = linear.weight, linear.bias
        return new.train(linear.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = x Q(W)^T + b for x (..., in_features); the gradient reaches W as if Q were the identity."""
        return F.linear(x, fake_quantize(self.weight, self.bits, self.group_size), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}, group_size={self.group_size}"


class FakeQuantEmbedding(nn.Embedding):
    """nn.Embedding that trains a float master table and looks rows up in its `bits`-bit quantized value (STE)."""

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, bits: int, group_size: int | None = None) -> FakeQuantEmbedding:
        """Wrap `embedding`'s own table Parameter."""
        if embedding.max_norm is not None or embedding.scale_grad_by_freq or embedding.sparse:
            raise invalid(
                "embedding", repr(embedding), "an nn.Embedding without max_norm / scale_grad_by_freq / sparse"
            )
        new = cls(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx, device="meta")
        new.weight = embedding.weight
        new.bits, new.group_size = bits, group_size
        return new.train(embedding.training)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Rows (..., embedding_dim) of Q(table) for ids (...)."""
        table = fake_quantize(self.weight, self.bits, self.group_size, embedding=True)
        return F.embedding(input_ids, table, self.padding_idx)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, bits={self.bits}, group_size={self.group_size}"


def select_low_bit_modules(model: nn.Module, modules: str | list[str] = "encoder") -> dict[str, nn.Module]:
    """The modules to store below 8 bits, by name: a selection from MODULE_SELECTIONS or a list of module names.

    'encoder': the nn.Linear layers inside the transformer layers (families.encoder_linears); 'encoder_embeddings':
    those and the input word embeddings; 'all': every nn.Linear and the input word embeddings. A module whose weight
    is shared with another (tied embeddings) is left out with a warning: it must stay one float tensor.
    Raises ValueError for an unknown selection or name, or a named module that is not an nn.Linear / nn.Embedding.
    """
    from ...families import encoder_linears

    named = dict(model.named_modules())
    if isinstance(modules, str):
        check_choice("weight_quantization_modules", modules, MODULE_SELECTIONS)
        embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        if modules == "all":
            chosen = {n: m for n, m in named.items() if isinstance(m, nn.Linear) and not n.startswith("hf_compress_")}
        else:
            chosen = dict(encoder_linears(model))
        if modules != "encoder" and isinstance(embeddings, nn.Embedding):
            chosen.update({n: m for n, m in named.items() if m is embeddings})
    else:
        missing = [n for n in modules if n not in named]
        if missing or not modules:
            raise invalid("modules", missing or modules, f"names of modules of {type(model).__name__}")
        chosen = {n: named[n] for n in modules}
    wrong = [n for n, m in chosen.items() if not isinstance(m, (nn.Linear, nn.Embedding))]
    if wrong:
        raise invalid("modules", wrong, "nn.Linear or nn.Embedding modules only")
    owners: dict[int, int] = {}
    for module in named.values():
        weight = getattr(module, "weight", None)
        if isinstance(weight, torch.Tensor):
            owners[id(weight)] = owners.get(id(weight), 0) + 1
    for name in [n for n, m in chosen.items() if owners[id(m.weight)] > 1]:
        logger.warning("keeping %s in full precision: its weight is tied to another module's", name)
        del chosen[name]
    return chosen


def fake_quantize_(
    model: nn.Module,
    bits: int | dict[str, int],
    group_size: int | None = None,
    modules: str | list[str] = "encoder",
) -> nn.Module:
    """Swap the selected nn.Linear / nn.Embedding of `model` for FakeQuantLinear / FakeQuantEmbedding, in place.

    `bits`: 8, 4, 2 or 1 for every selected module, or a {module name: bits} map (e.g. from `choose_bit_widths`; its
    names are then the selection). `group_size`: input columns (embedding dims) per scale, None for one per row.
    The master weights stay the same Parameter objects, so an optimizer built afterwards (or a pruner) trains them.
    Quantization-aware training (Jacob et al. 2018, arXiv:1712.05877) with the quantizers of this module.
    Raises ValueError for bits outside (8, 4, 2, 1), a bad group_size or selection, or an already fake-quantized
    module.
    """
    check_positive_int("group_size", group_size, optional=True)
    if isinstance(bits, dict):
        plan = dict(bits)
        select_low_bit_modules(model, list(plan))  # names checked
        chosen = {n: model.get_submodule(n) for n in plan}
    else:
        chosen = select_low_bit_modules(model, modules)
        plan = dict.fromkeys(chosen, bits)
    for name, module in chosen.items():
        check_choice(f"bits[{name!r}]", plan[name], BITS)
        if isinstance(module, (FakeQuantLinear, FakeQuantEmbedding)):
            raise invalid("model", f"{name} is a {type(module).__name__}", "a model not yet fake-quantized")
    for name, module in chosen.items():
        if isinstance(module, nn.Embedding):
            new = FakeQuantEmbedding.from_embedding(module, plan[name], group_size)
        else:
            new = FakeQuantLinear.from_linear(module, plan[name], group_size)
        model.set_submodule(name, new)
    return model


def fake_quantized_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Every FakeQuantLinear / FakeQuantEmbedding of `model`, by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, (FakeQuantLinear, FakeQuantEmbedding))}
