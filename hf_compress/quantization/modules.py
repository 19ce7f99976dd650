"""Int8Linear and Int8Embedding: int8 codes with one fp32 scale per row, in the layout they are saved in.

Weights are stored *flat* (1-D, out*in int8 codes). A loader that does not know this format (transformers without
hf_compress imported) then meets a size mismatch on every `weight` and raises, instead of casting the int8 codes
into the float weight of an nn.Linear and running with wrong logits.

Both modules build their tensors outside inference mode (`torch.inference_mode(False)`), even when called inside
it: inference tensors have no version counter, and `Int8Linear`'s packed-weight cache reads it to notice in-place
edits. Tensors a user builds in inference mode are still accepted (the cache is then keyed on storage only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import fbgemm
from .rounding import MIN_SCALE, linear_codes

# Linear weights: 8-bit codes within a pair limit, so that fbgemm's AVX2 kernel never saturates (see rounding.py).
# SEVEN_BIT_QMAX: codes that cannot saturate whatever their neighbours, the 8-bit format of low-bit QAT (low_bit.py)
# and of this project's int8 checkpoints before 2026-11-30. Embeddings have no matmul: full 8 bits.
SEVEN_BIT_QMAX = 63
EMBEDDING_QMAX = 127


def quantize_rows(weight: torch.Tensor, qmax: int = EMBEDDING_QMAX) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 codes in [-qmax, qmax] and one fp32 scale per row: weight ~= codes * scale[:, None]."""
    weight = weight.detach().float()
    scale = (weight.abs().amax(dim=1) / qmax).clamp(min=MIN_SCALE)
    codes = torch.round(weight / scale[:, None]).clamp_(-qmax, qmax).to(torch.int8)
    return codes, scale


class PackedInt8Module(nn.Module):
    """What the int8 matmul modules share: the int8 kernel's value with a float gradient, and a packed-weight cache.

    Subclasses give `_int8_forward(x)` (the fbgemm kernels on packed weights) and `_reference_forward(x)` (float
    matmuls with the same dequantized int8 weights), and keep their packed weights in `_packed` / `_packed_key`.
    """

    def _init_storage(
        self, num_codes: int, num_scales: int, out_features: int, bias: bool, per_token: bool, device=None, dtype=None
    ) -> None:
        """The saved layout every subclass shares: `weight` (num_codes,) int8 codes, flat so that a loader unaware of
        the format raises on its size; `weight_scale` (num_scales,) fp32; a float `bias` (out_features,) or None;
        and an empty packed-weight cache."""
        self.per_token = per_token  # activation ranges: one per token (accurate) or one per call (faster)
        codes = torch.zeros(num_codes, dtype=torch.int8, device=device)
        self.weight = nn.Parameter(codes, requires_grad=False)
        self.register_buffer("weight_scale", torch.ones(num_scales, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None
        self._packed = None  # rebuilt when the tensors it was packed from change (see `version`)
        self._packed_key = None

    def int8_value_float_gradient(self, x: torch.Tensor) -> torch.Tensor:
        """The int8 kernel's output; when autograd needs this call (grad enabled and x or the bias requires grad,
        e.g. under Trainer.train), its gradient is that of the reference float matmuls: the rounding of the
        activations is passed straight through (Bengio et al. 2013, https://arxiv.org/abs/1308.3432; as in
        quantization-aware training, Jacob et al. 2018, https://arxiv.org/abs/1712.05877). The codes and scales never
        receive a gradient. Other devices or dtypes, or a torch without fbgemm, use the reference path.
        """
        fast = x.is_cpu and x.dtype == torch.float32 and fbgemm.available()
        bias = getattr(self, "bias", None)
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad))
        if not needs_grad:
            return self._int8_forward(x) if fast else self._reference_forward(x)
        reference = self._reference_forward(x)
        if not fast:
            return reference
        with torch.no_grad():
            exact = self._int8_forward(x, fuse_bias=False)  # the bias may change every step: do not repack it
        return reference + (exact - reference).detach()

    def __getstate__(self):
        # The packed weights are a cache of tensors the module already holds; never copy them.
        state = self.__dict__.copy()
        state["_packed"], state["_packed_key"] = None, None
        return state


class Int8Linear(PackedInt8Module):
    """nn.Linear with int8 weights (per output channel) and activations quantized at run time, per token or batch."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        per_token: bool = True,
        device=None,
        dtype=None,
        smoothed: bool = False,
        num_outliers: int = 0,
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self._init_storage(out_features * in_features, out_features, out_features, bias, per_token, device, dtype)
        # SmoothQuant's 1/s, one per input channel, applied to x before its int8 rounding (None: not smoothed)
        ones = torch.ones(in_features, dtype=torch.float32, device=device)
        self.register_buffer("input_scale", ones if smoothed else None)
        # Input channels computed in float (LLM.int8()'s decomposition, see outliers.py): their indices (k,) and
        # weight columns (out_features, k); their int8 codes are 0. None: every channel goes through int8.
        k = num_outliers
        channels = torch.zeros(k, dtype=torch.long, device=device) if k else None
        self.register_buffer("outlier_channels", channels)
        outlier_weight = torch.zeros(out_features, k, dtype=torch.float32, device=device) if k else None
        self.register_buffer("outlier_weight", outlier_weight)

    @classmethod
    @torch.inference_mode(False)
    def from_linear(
        cls,
        linear: nn.Linear,
        per_token: bool = True,
        smoothing: torch.Tensor | None = None,
        outlier_channels: torch.Tensor | None = None,
        hessian: torch.Tensor | None = None,
    ) -> Int8Linear:
        """Quantize an nn.Linear's weight (8-bit codes within rounding.py's pair limit, one scale per output row); the
        bias stays float.

        `smoothing` (in_features,): SmoothQuant's s (see smoothing.py). The int8 codes are then those of
        W diag(s), and the module multiplies its input by 1/s before rounding it: the same y = x W^T + b in float.
        `outlier_channels` (k,) long: input channels kept in float (see outliers.py); their columns leave the int8
        weight (codes 0) for `outlier_weight`, and the module zeroes them in x before rounding x.
        `hessian` (in_features, in_features): E[x x^T] of the float Linear's inputs (see gptq.py). The codes are then
        GPTQ's, which round column by column and fold each column's rounding error into the columns not yet rounded;
        without it, round to nearest.
        """
        smoothed = smoothing is not None
        k = 0 if outlier_channels is None else outlier_channels.numel()
        module = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            per_token,
            device="cpu",
            smoothed=smoothed,
            num_outliers=k,
        )
        weight = linear.weight.detach().float()
        if hessian is not None:
            hessian = hessian.detach().to(weight.device, torch.float64)
        if smoothed:
            s = smoothing.to(weight.device, torch.float32)
            weight = weight * s
            module.input_scale = smoothing.detach().float().reciprocal().to(linear.weight.device)
            if hessian is not None:  # E[(x/s)(x/s)^T]: the inputs the int8 weight will see
                hessian = hessian / s.double()[:, None] / s.double()[None, :]
        if k:
            channels = outlier_channels.to(weight.device, torch.long)
            module.outlier_channels = channels.clone()
            module.outlier_weight = weight[:, channels].clone()
            weight = weight.index_fill(1, channels, 0.0)
            if hessian is not None:  # those channels reach the int8 weight as zeros
                hessian = hessian.index_fill(0, channels, 0.0).index_fill(1, channels, 0.0)
        if hessian is None:
            codes, scale = linear_codes(weight)
        else:
            from .gptq import gptq_quantize_rows  # gptq.py imports this module

            codes, scale = gptq_quantize_rows(weight, hessian)
        module.weight = nn.Parameter(codes.reshape(-1).to(linear.weight.device), requires_grad=False)
        module.weight_scale = scale.to(linear.weight.device)
        if linear.bias is not None:
            # clone() outside inference mode: a normal tensor even if the model was built inside it
            module.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=linear.bias.requires_grad)
        if module.weight.is_cpu and fbgemm.available():
            # pack now, so that quantize_ pays the whole cost and not the first call
            fbgemm.warm(module._packed_weight()[0], module.bias, per_token)
        return module

    def int8_weight(self) -> torch.Tensor:
        """The int8 codes as an (out_features, in_features) view."""
        return self.weight.view(self.out_features, self.in_features)

    def dequantized_weight(self) -> torch.Tensor:
        """codes * scale: the float weight this module computes with (applied to x * input_scale if smoothed)."""
        return self.int8_weight().float() * self.weight_scale[:, None]

    def _packed_weight(self) -> tuple[torch.ScriptObject, torch.Tensor]:
        key = fbgemm.cache_key(self.weight, self.weight_scale)
        if self._packed_key != key:
            # Built outside inference mode and autograd, so that the cache serves calls in and out of both.
            with torch.inference_mode(False), torch.no_grad():
                row_sums = self.dequantized_weight().sum(dim=1)
                self._packed = (fbgemm.pack(self.int8_weight(), self.weight_scale), row_sums)
            self._packed_key = key
        return self._packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = x W^T + b for x (..., in_features) -> (..., out_features), int8 kernel on CPU float32; under autograd
        the gradient of the float matmul with the same int8 weights (see `int8_value_float_gradient`). With outlier
        channels, y = int8(x with them zeroed) + x[..., outliers] @ outlier_weight^T in float; x is left as it was.
        """
        owned = self.input_scale is not None  # x is then a tensor of this call's own, free to edit in place
        if owned:
            x = x * self.input_scale.to(x.dtype)
        if self.outlier_channels is None:
            return self.int8_value_float_gradient(x)
        channels = self.outlier_channels
        outliers = x.index_select(-1, channels)  # a copy, taken before x loses them
        needs_grad = torch.is_grad_enabled() and x.requires_grad
        if owned and not needs_grad:
            y = self.int8_value_float_gradient(x.index_fill_(-1, channels, 0.0))
        elif needs_grad or not x.is_contiguous() or (x.is_inference() and not torch.is_inference_mode_enabled()):
            # Autograd keeps x for the backward, a view may share memory between elements, and an inference tensor
            # cannot change outside inference mode: copy.
            y = self.int8_value_float_gradient(x.index_fill(-1, channels, 0.0))
        else:
            # The caller's tensor: zero k columns in place and put them back after, instead of copying all of x
            # (a copy of a 1536-wide FFN activation costs a few % of the int8 model's time).
            y = self.int8_value_float_gradient(x.index_fill_(-1, channels, 0.0))
            x.index_copy_(-1, channels, outliers)
        return y + F.linear(outliers, self.outlier_weight.to(x.dtype))

    def _int8_forward(self, x: torch.Tensor, fuse_bias: bool = True) -> torch.Tensor:
        packed, row_sums = self._packed_weight()
        return fbgemm.linear(x, packed, row_sums, self.bias, self.per_token, fuse_bias)

    def _reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        # Reference path (other devices or dtypes, a torch without fbgemm, or autograd): same int8 weights, float
        # matmul.
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight().to(x.dtype), bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"per_token={self.per_token}, smoothed={self.input_scale is not None}, "
            f"outlier_channels={0 if self.outlier_channels is None else self.outlier_channels.numel()}"
        )


class Int8Embedding(nn.Module):
    """nn.Embedding stored as int8 codes with one fp32 scale per row; looked-up rows are dequantized."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, device=None):
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        codes = torch.zeros(num_embeddings * embedding_dim, dtype=torch.int8, device=device)
        self.weight = nn.Parameter(codes, requires_grad=False)
        self.register_buffer("weight_scale", torch.ones(num_embeddings, dtype=torch.float32, device=device))

    @classmethod
    @torch.inference_mode(False)
    def from_embedding(cls, embedding: nn.Embedding) -> Int8Embedding:
        """Quantize an nn.Embedding's table, one scale per row (token)."""
        if embedding.max_norm is not None or embedding.scale_grad_by_freq or embedding.sparse:
            raise ValueError(
                f"{embedding} uses max_norm / scale_grad_by_freq / sparse, which Int8Embedding does not support"
            )
        module = cls(embedding.num_embeddings, embedding.embedding_dim, embedding.padding_idx, device="cpu")
        codes, scale = quantize_rows(embedding.weight)
        module.weight = nn.Parameter(codes.reshape(-1).to(embedding.weight.device), requires_grad=False)
        module.weight_scale = scale.to(embedding.weight.device)
        return module

    def int8_weight(self) -> torch.Tensor:
        """The int8 codes as a (num_embeddings, embedding_dim) view."""
        return self.weight.view(self.num_embeddings, self.embedding_dim)

    def dequantized_weight(self) -> torch.Tensor:
        """codes * scale: the float table this module looks rows up in."""
        return self.int8_weight().float() * self.weight_scale[:, None]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Float rows (…, embedding_dim) of the ids (…), in the scales' dtype."""
        # Only the looked-up rows are dequantized: the int8 table is never expanded to float.
        rows = F.embedding(input_ids, self.int8_weight())
        return rows.to(self.weight_scale.dtype) * self.weight_scale[input_ids].unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, padding_idx={self.padding_idx}"
