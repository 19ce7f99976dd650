"""Int8LowRankLinear: a factorised Linear (hf_compress.methods.low_rank.transform) with both factors in int8.

y = up(down(x)) runs as two int8 matmuls on the fbgemm path, as Int8Linear does: x is quantized at run time, down's
int8 codes give the rank-r h, which is quantized again for up. Each factor has its own scale per row (down: r rows,
up: out rows), so the equal-norm split of `factorize_linear_` gives both factors well-used int8 ranges. As for the
float factors, the codes are one flat `weight` (down's r·in codes, then up's out·r), so a loader that does not know
the format fails on the shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..int8.modules import PackedInt8Module
from ..int8.rounding import linear_codes


class Int8LowRankLinear(PackedInt8Module):
    """LowRankLinear with int8 factors (one fp32 scale per row of each) and activations quantized at run time."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rank: int,
        bias: bool = True,
        per_token: bool = True,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        # codes of down (rank, in) then up (out, rank); scales of their rows
        num_codes = rank * (in_features + out_features)
        self._init_storage(num_codes, rank + out_features, out_features, bias, per_token, device, dtype)

    @classmethod
    @torch.inference_mode(False)
    def from_low_rank(cls, module: nn.Module, per_token: bool = True, per_tensor: bool = False) -> Int8LowRankLinear:
        """Quantize a LowRankLinear's two factors (round to nearest, one scale per row, or one per factor with
        `per_tensor`); the bias stays float."""
        device = module.weight.device
        new = cls(module.in_features, module.out_features, module.rank, module.bias is not None, per_token, "cpu")
        down_codes, down_scale = linear_codes(module.down_weight, per_tensor=per_tensor)
        up_codes, up_scale = linear_codes(module.up_weight, per_tensor=per_tensor)
        new.weight = nn.Parameter(torch.cat([down_codes.reshape(-1), up_codes.reshape(-1)]).to(device), False)
        new.weight_scale = torch.cat([down_scale, up_scale]).to(device)
        if module.bias is not None:
            # clone() outside inference mode: a normal tensor even if the model was built inside it
            new.bias = nn.Parameter(module.bias.detach().clone(), requires_grad=module.bias.requires_grad)
        new.train(module.training)
        new.prepare()  # now, so that quantize_ pays the whole cost and not the first call
        return new

    def int8_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The codes of down (rank, in) and up (out, rank), as views of `weight`."""
        split = self.rank * self.in_features
        return (
            self.weight[:split].view(self.rank, self.in_features),
            self.weight[split:].view(self.out_features, self.rank),
        )

    def dequantized_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """codes * scale of down (rank, in) and up (out, rank): the float factors this module computes with."""
        down, up = self.int8_weights()
        scale = self.weight_scale
        return down.float() * scale[: self.rank, None], up.float() * scale[self.rank :, None]

    def dense_weight(self) -> torch.Tensor:
        """up · down in float, (out, in): the one weight this module computes with, for formats without factors
        (compressed-tensors stores it re-quantized per row)."""
        down, up = self.dequantized_weights()
        return up @ down

    # How the dense weight differs from the module's own codes (a format storing it says so in its record).
    dense_weight_note = "low-rank factors multiplied out and re-quantized per row"

    def _int8_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        down, up = self.int8_weights()
        return [(down, self.weight_scale[: self.rank]), (up, self.weight_scale[self.rank :])]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """y = up(down(x)) + b for x (..., in_features) -> (..., out_features), two int8 kernels on CPU float32.

        Under autograd, the value is the int8 kernels' and the gradient that of the float matmuls with the same
        int8 weights (straight-through activation rounding, as Int8Linear.forward); the codes get no gradient.
        """
        return self.int8_value_float_gradient(x)

    def _int8_forward(self, x: torch.Tensor, fuse_bias: bool = True) -> torch.Tensor:
        h = self._matmul(0, x, None, False)
        return self._matmul(1, h, self.bias, fuse_bias)

    def _reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        # Other devices or dtypes, a torch without fbgemm, or autograd: the same int8 weights, float matmuls.
        down, up = self.dequantized_weights()
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(F.linear(x, down.to(x.dtype)), up.to(x.dtype), bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
            f"bias={self.bias is not None}, per_token={self.per_token}"
        )
