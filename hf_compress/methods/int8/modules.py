"""Int8Linear and Int8Embedding: int8 codes with one fp32 scale per row, in the layout they are saved in.

Weights are stored *flat* (1-D, out*in int8 codes). A loader that does not know this format (transformers without
hf_compress imported) then meets a size mismatch on every `weight` and raises, instead of casting the int8 codes
into the float weight of an nn.Linear and running with wrong logits.

Both modules build their tensors outside inference mode (`torch.inference_mode(False)`), even when called inside
it, so that they serve calls in and out of it and can be trained. Tensors a user builds in inference mode are still
accepted.

Compile- and export-clean: no forward reads a data pointer or a version counter. `Int8Linear` packs its weights for
fbgemm when it is built, loaded or moved (`PackedInt8Module.prepare`); under torch.compile the kernel runs as one
opaque op on those packed weights (`fbgemm.compiled_linear`), and under torch.export the kernel's numbers are computed
in plain tensor ops (`fbgemm.traced_linear`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import kernel as fbgemm
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
    """What the int8 matmul modules share: the int8 kernel's value with a float gradient, on weights prepared once.

    Subclasses give `_int8_weights()` (codes (out, in) int8 and one scale per row of each int8 matmul, in order: the
    saved tensors or views of them), `_int8_forward(x, fuse_bias)` (calling `_matmul`) and `_reference_forward(x)`
    (float matmuls with the same dequantized int8 weights).

    Prepared, never looked up: `prepare()` packs the weights for fbgemm. It runs when a module is built (from_linear,
    ...), loaded (the quantizer after loading; `load_state_dict`), moved or cast (`_apply`), copied or unpickled. A
    forward reads no data pointer or version counter, so torch.compile and torch.export trace it (in plain tensor ops,
    `fbgemm.traced_linear`); the price: after editing `weight`, `weight_scale` or a frozen `bias` in place by hand,
    call `prepare()`.

    The bias: with one activation range per call, the kernel can add it in its output stage (`fbgemm.PackedWeight`).
    That copy holds the bias's values of its packing, so it serves only calls that need no autograd while the module
    is in eval mode and its bias has not been trained since: a call that trains the bias (every step changes it) adds
    it after the kernel and marks the fused copy stale; `eval()` re-packs it if the bias changed.
    """

    def _init_storage(
        self, num_codes: int, num_scales: int, out_features: int, bias: bool, per_token: bool, device=None, dtype=None
    ) -> None:
        """The saved layout every subclass shares: `weight` (num_codes,) int8 codes, flat so that a loader unaware of
        the format raises on its size; `weight_scale` (num_scales,) fp32; a float `bias` (out_features,) or None;
        and nothing prepared yet."""
        self.per_token = per_token  # activation ranges: one per token (accurate) or one per call (faster)
        codes = torch.zeros(num_codes, dtype=torch.int8, device=device)
        self.weight = nn.Parameter(codes, requires_grad=False)
        self.register_buffer("weight_scale", torch.ones(num_scales, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None
        self._kernels: list[fbgemm.PackedWeight] | None = None  # fbgemm's packed weights, one per int8 matmul
        self._kernel_keys: tuple[int, ...] | None = None  # their keys for compiled calls (fbgemm.compiled_linear)
        self._bias_trained = False  # a call trained the bias since the fused copy was packed
        self._direct = None  # the packed weight an inference call hands straight to the kernel (see `direct_call`)

    def _int8_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Pack the int8 weights for fbgemm now (with the bias fused too, for one range per call) and measure what
        traced calls need, so that calls pay nothing; call it after editing the module's tensors in place."""
        self._kernels, self._bias_trained, self._direct = None, False, None
        self._kernel_keys = None  # compiled calls' keys of the packed weights (see fbgemm.compiled_linear)
        if self.weight.device.type == "meta":  # allocated by a loader later, which prepares then
            return
        # The scales the packed weights were made from, compared by value when switching to eval mode (see `train`).
        self._prepared_scale = self.weight_scale.detach().clone()
        # Built outside inference mode and autograd, so that the packed weights serve calls in and out of both.
        with torch.inference_mode(False), torch.no_grad():
            weights = self._int8_weights()
            if not (self.weight.is_cpu and fbgemm.available()):
                return
            kernels = [fbgemm.pack(codes.contiguous(), scale.float().contiguous()) for codes, scale in weights]
            *first, last = kernels
            for packed in first:
                packed.plain()
            if self._fuses_bias():
                last.fuse(self.bias)  # the copy per-call inference uses; the plain one is packed if training needs it
            else:
                last.plain()
            self._kernels = kernels
            self._kernel_keys = tuple(fbgemm.register(packed) for packed in kernels)
        self._refresh_direct()

    def _refresh_direct(self) -> None:
        """Whether (and with which packed weight) an inference call may skip the module's bookkeeping: one int8
        matmul, one activation range per call, no input scale or outlier channels, eval mode, the fused bias
        current."""
        kernels = self._kernels
        plain = (
            kernels is not None
            and len(kernels) == 1
            and not self.training
            and not self.per_token
            and not self._bias_trained
            and getattr(self, "input_scale", None) is None
            and getattr(self, "outlier_channels", None) is None
        )
        # Kept as the PackedWeight (a plain Python object) and which copy: torch.export lifts a module attribute that
        # is itself a packed ScriptObject as a constant, and fails on fbgemm's.
        if not plain:
            self._direct = None
        else:
            self._direct = (kernels[0], getattr(self, "bias", None) is not None)

    def direct_call(self, x: torch.Tensor) -> torch.Tensor | None:
        """The kernel's output for an inference call that needs none of the module's bookkeeping, else None.

        Why: at batch 1 the int8 matmul of a 48-token input is fast enough that the Python checks around it (autograd,
        fused bias, tracing, per-token mapping) cost ~12% of the whole model's time against torch.ao's
        quantize_dynamic, which calls the same kernel directly (benchmarks/RESULTS.md, "Where a model runs
        fastest"). The numbers are those of the full path (the same op on the same packed weight)."""
        if torch.compiler.is_compiling():
            return None
        direct = getattr(self, "_direct", None)
        if direct is None or torch.is_grad_enabled() or x.dtype != torch.float32:
            return None
        packed, fused = direct
        return torch.ops.quantized.linear_dynamic(x, packed.fused() if fused else packed.plain(), False)

    def _fuses_bias(self) -> bool:
        """Whether the last int8 matmul keeps a copy with the bias fused (one range per call, a bias)."""
        return not self.per_token and getattr(self, "bias", None) is not None

    def _matmul(self, index: int, x: torch.Tensor, bias: torch.Tensor | None, fuse_bias: bool) -> torch.Tensor:
        """The index-th int8 matmul: fbgemm on the prepared weights, or its numbers in plain tensor ops when traced.
        `fuse_bias`: the call may use the copy with the bias fused (see the class docstring for when it does)."""
        fuse = fuse_bias and bias is not None and self._fuses_bias() and not self.training and not self._bias_trained
        if torch.compiler.is_compiling():
            codes, scale = self._int8_weights()[index]
            keys = getattr(self, "_kernel_keys", None)
            if keys is None or torch.compiler.is_exporting():  # an exported program holds plain ops only
                return fbgemm.traced_linear(x, codes, scale, bias, self.per_token, fuse)
            return fbgemm.compiled_linear(x, codes, scale, bias, self.per_token, fuse, keys[index])
        if self._kernels is None:
            self.prepare()  # built by hand, not by from_linear or a loader
        packed = self._kernels[index]
        return fbgemm.linear(x, packed, packed.row_sums, bias, self.per_token, fuse)

    def int8_value_float_gradient(self, x: torch.Tensor) -> torch.Tensor:
        """The int8 kernel's output; when autograd needs this call (grad enabled and x or the bias requires grad,
        e.g. under Trainer.train), its gradient is that of the reference float matmuls: the rounding of the
        activations is passed straight through (Bengio et al. 2013, https://arxiv.org/abs/1308.3432; as in
        quantization-aware training, Jacob et al. 2018, https://arxiv.org/abs/1712.05877). The codes and scales never
        receive a gradient. Other devices or dtypes, or a torch without fbgemm, use the reference path.
        """
        fast = x.is_cpu and x.dtype == torch.float32 and fbgemm.available()
        bias = getattr(self, "bias", None)
        trains_bias = bias is not None and bias.requires_grad
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or trains_bias)
        if not needs_grad:
            return self._int8_forward(x) if fast else self._reference_forward(x)
        reference = self._reference_forward(x)
        if not fast:
            return reference
        if trains_bias and not torch.compiler.is_compiling():
            self._bias_trained = True  # the fused copy may be stale from the next optimizer step on
            self._direct = None
        with torch.no_grad():
            exact = self._int8_forward(x, fuse_bias=False)  # the bias may change every step: do not repack it
        return reference + (exact - reference).detach()

    def train(self, mode: bool = True):
        """nn.Module.train; switching to eval mode prepares again if the scales were edited in place since (compared
        by value: one scale per row, once per switch, never per call), else re-packs the fused bias copy if the bias
        changed. Edits of the int8 codes in place need `prepare()`."""
        super().train(mode)
        prepared = getattr(self, "_prepared_scale", None)
        if not mode and prepared is not None and not torch.equal(prepared, self.weight_scale.detach()):
            self.prepare()
            return self
        if not mode and self._kernels is not None and self._fuses_bias():
            last = self._kernels[-1]
            if not last.fused_bias_equals(self.bias):  # once per switch, not per call
                last.fuse(self.bias)
            self._bias_trained = False
        self._refresh_direct()
        return self

    def _apply(self, fn, recurse: bool = True):
        # .to(), .cpu(), .float(), ...: the packed weights are of the tensors as they were.
        super()._apply(fn, recurse)
        self.prepare()
        return self

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self.prepare()

    def __getstate__(self):
        # The packed weights are derived from tensors the module already holds: never copied, prepared again.
        state = self.__dict__.copy()
        state["_kernels"] = None
        state["_kernel_keys"] = None
        state["_direct"] = None
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.prepare()


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
        per_tensor: bool = False,
    ) -> Int8Linear:
        """Quantize an nn.Linear's weight (8-bit codes within rounding.py's pair limit, one scale per output row); the
        bias stays float. With `per_tensor`, every row gets the same scale (`rounding.linear_codes`).

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
            codes, scale = linear_codes(weight, per_tensor=per_tensor)
        else:
            from .gptq import gptq_quantize_rows  # gptq.py imports this module

            codes, scale = gptq_quantize_rows(weight, hessian, per_tensor)
        module.weight = nn.Parameter(codes.reshape(-1).to(linear.weight.device), requires_grad=False)
        module.weight_scale = scale.to(linear.weight.device)
        if linear.bias is not None:
            # clone() outside inference mode: a normal tensor even if the model was built inside it
            module.bias = nn.Parameter(linear.bias.detach().clone(), requires_grad=linear.bias.requires_grad)
        module.train(linear.training)
        module.prepare()  # now, so that quantize_ pays the whole cost and not the first call
        return module

    def int8_weight(self) -> torch.Tensor:
        """The int8 codes as an (out_features, in_features) view."""
        return self.weight.view(self.out_features, self.in_features)

    def dequantized_weight(self) -> torch.Tensor:
        """codes * scale: the float weight this module computes with (applied to x * input_scale if smoothed)."""
        return self.int8_weight().float() * self.weight_scale[:, None]

    def _int8_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(self.int8_weight(), self.weight_scale)]

    def _packed_weight(self) -> tuple[fbgemm.PackedWeight, torch.Tensor]:
        """fbgemm's packed weight and its row sums, as prepared."""
        if self._kernels is None:
            self.prepare()
        return self._kernels[0], self._kernels[0].row_sums

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = x W^T + b for x (..., in_features) -> (..., out_features), int8 kernel on CPU float32; under autograd
        the gradient of the float matmul with the same int8 weights (see `int8_value_float_gradient`). With outlier
        channels, y = int8(x with them zeroed) + x[..., outliers] @ outlier_weight^T in float; x is left as it was.
        """
        y = self.direct_call(x)
        if y is not None:
            return y
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
        elif (
            needs_grad
            or torch.compiler.is_compiling()
            or not x.is_contiguous()
            or (x.is_inference() and not torch.is_inference_mode_enabled())
        ):
            # Autograd keeps x for the backward, a traced graph is kept free of edits to its inputs, a view may share
            # memory between elements, and an inference tensor cannot change outside inference mode: copy.
            y = self.int8_value_float_gradient(x.index_fill(-1, channels, 0.0))
        else:
            # The caller's tensor: zero k columns in place and put them back after, instead of copying all of x
            # (a copy of a 1536-wide FFN activation costs a few % of the int8 model's time).
            y = self.int8_value_float_gradient(x.index_fill_(-1, channels, 0.0))
            x.index_copy_(-1, channels, outliers)
        return y + F.linear(outliers, self.outlier_weight.to(x.dtype))

    def _int8_forward(self, x: torch.Tensor, fuse_bias: bool = True) -> torch.Tensor:
        return self._matmul(0, x, self.bias, fuse_bias)

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
