"""What int8 calibration found, handed to `quantize_` explicitly (never left on the model's modules).

SmoothQuant (`smooth_activations_`), outlier channels (`keep_outlier_channels_`) and GPTQ (`calibrate_gptq_`) each
measure the float model on calibration batches and return an `Int8Calibration`; `quantize_(model, config,
calibration=...)` builds the int8 modules from it. The steps compose with `|`:

    calibration = smooth_activations_(model, batches) | keep_outlier_channels_(model, batches)
    quantize_(model, calibration=calibration | calibrate_gptq_(model, batches))

Keeping the results out of the model means a float model saved or copied between the steps is the plain float
model, and a step that never reaches `quantize_` changes nothing but its exact folds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ...checks import invalid


@dataclass
class Int8Calibration:
    """Per nn.Linear (by qualified module name) what `quantize_` needs beyond round-to-nearest.

    - `smoothing`: SmoothQuant's s, shape (in_features,), fp32, for Linears whose 1/s could not be folded into the
      producing module: `quantize_` stores W diag(s) in int8 and 1/s as the module's input scale (Xiao et al. 2023).
    - `outlier_channels`: input-channel indices, shape (k,), int64, sorted, computed in float (LLM.int8(), Dettmers et
      al. 2022).
    - `hessians`: H = E[x xᵀ] of the Linear's inputs, shape (in_features, in_features), fp32, for GPTQ rounding
      (Frantar et al. 2023).
    """

    smoothing: dict[str, torch.Tensor] = field(default_factory=dict)
    outlier_channels: dict[str, torch.Tensor] = field(default_factory=dict)
    hessians: dict[str, torch.Tensor] = field(default_factory=dict)

    def __or__(self, other: Int8Calibration) -> Int8Calibration:
        """Both steps' results; a Linear calibrated twice for the same thing raises ValueError (which one wins would
        be a guess)."""
        if not isinstance(other, Int8Calibration):
            return NotImplemented
        merged = {}
        for name in ("smoothing", "outlier_channels", "hessians"):
            mine, theirs = getattr(self, name), getattr(other, name)
            both = sorted(set(mine) & set(theirs))
            if both:
                raise invalid("calibration", f"two {name} for {both[:2]}", "each Linear calibrated once per step")
            merged[name] = {**mine, **theirs}
        return Int8Calibration(**merged)

    def __bool__(self) -> bool:
        return bool(self.smoothing or self.outlier_channels or self.hessians)

    def names(self) -> set[str]:
        """Every module name the calibration refers to."""
        return set(self.smoothing) | set(self.outlier_channels) | set(self.hessians)

    def for_linear(self, name: str) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """(smoothing, outlier_channels, hessian) of one Linear, None where that step did not calibrate it."""
        return self.smoothing.get(name), self.outlier_channels.get(name), self.hessians.get(name)

    def check(self, model: nn.Module, selected: dict[str, str]) -> None:
        """Raise ValueError, before any module is replaced, when the calibration does not fit `model`: a name that is
        not an nn.Linear of it (e.g. factorised after calibration) or not selected for int8, or a tensor whose shape
        does not match the Linear's in_features (calibrated on another model)."""
        modules = dict(model.named_modules())
        for name in sorted(self.names()):
            module = modules.get(name)
            if not isinstance(module, nn.Linear):
                found = "no module" if module is None else f"a {type(module).__name__}"
                raise invalid(
                    "calibration",
                    f"{name!r} ({found})",
                    "names of nn.Linear modules of this model, calibrated after any factorize_linear_",
                )
            if selected.get(name) != "linear":
                raise invalid("calibration", f"{name!r} (kept float)", "names of Linears that quantize_ converts")
            width = module.in_features
            s, channels, h = self.for_linear(name)
            if s is not None and tuple(s.shape) != (width,):
                raise invalid("calibration", f"smoothing {name!r} of shape {tuple(s.shape)}", f"shape ({width},)")
            if channels is not None and (channels.numel() >= width or int(channels.max()) >= width):
                raise invalid("calibration", f"outlier_channels {name!r}", f"fewer than {width} indices below {width}")
            if h is not None and tuple(h.shape) != (width, width):
                raise invalid("calibration", f"hessian {name!r} of shape {tuple(h.shape)}", f"({width}, {width})")
