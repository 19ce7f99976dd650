"""Outlier channels in float: the few input channels that stretch an int8 Linear's activation range.

With one int8 range per call (`activation_range="per_batch"`), the largest |x| of the batch sets the rounding step
of every value. In BERT's FFN down projections one or two of the 1,536 intermediate channels reach 14-24 on a few
tokens ([CLS], [SEP]) while the others stay below ~6 (all-MiniLM-L6-v2 fine-tuned on tweets), so those channels alone
make the step 3-4x coarser for every token. SmoothQuant cannot move them into the weights: the input is a GELU
output, with no producer to fold a scale into. LLM.int8() (Dettmers et al., NeurIPS 2022,
https://arxiv.org/abs/2208.07339) computes such channels in float and the rest in int8:
y = int8(x with them zeroed) + x[:, outliers] W[:, outliers]^T. Here the channels are chosen once, from calibration
batches (the k largest max |x_j|), which keeps the run-time cost to two k-column gathers and one (tokens x k) matmul.

`keep_outlier_channels_` chooses them on a float model; `quantize_(model, calibration=...)` builds the split
Int8Linear and records the counts in `quantization_config.outlier_channels`, from which `from_pretrained` rebuilds the
modules.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from ... import provenance
from ...checks import check_positive_int, require
from ...families import distinct_layers
from .calibration import Int8Calibration
from .smoothquant import input_maxima
from .transform import check_not_quantized


@torch.no_grad()
def keep_outlier_channels_(
    model: nn.Module,
    dataloader: Iterable[Mapping[str, torch.Tensor]],
    num_channels: int = 1,
    num_batches: int = 8,
    modules: list[str] | None = None,
) -> Int8Calibration:
    """Choose, per Linear, the `num_channels` input channels with the largest calibration max |x_j|.

    Runs up to `num_batches` batches of `dataloader` (dicts holding input_ids) and returns the channel indices
    (num_channels,) per Linear (`Int8Calibration.outlier_channels`), which `quantize_(model, calibration=...)`
    applies: those channels are then computed in float. The model is not changed.
    `modules`: names of nn.Linear modules; None: the FFN down projections of every layer (the inputs SmoothQuant
    leaves alone; see the module docstring). Measured on the tweets teacher (benchmarks/RESULTS.md, "Int8 fidelity"):
    one channel per FFN down projection.
    Raises ValueError for a quantized model, a model family without a known layer layout (with modules=None), a name
    that is not an nn.Linear, num_channels >= a Linear's in_features, a bad num_batches, an empty dataloader or a
    batch without input_ids, before any work. Records the step in config.compression["outlier_channels"].
    """
    check_positive_int("num_channels", num_channels)
    check_positive_int("num_batches", num_batches)
    check_not_quantized(model)
    named = dict(model.named_modules())
    if modules is None:
        names = [parts.module_name("ffn_down") for parts in distinct_layers(model, check_linear=("ffn_down",))]
    else:
        names = list(modules)
    wrong = [n for n in names if not isinstance(named.get(n), nn.Linear)]
    require(not wrong, "modules", wrong[:3], "names of nn.Linear modules of the model")
    require(bool(names), "modules", names, "at least one nn.Linear")
    narrowest = min(named[n].in_features for n in names)
    require(num_channels < narrowest, "num_channels", num_channels, f"1 to {narrowest - 1} (the inputs' width - 1)")
    start = time.perf_counter()
    maxima, batches = input_maxima(model, names, dataloader, num_batches)
    calibration = Int8Calibration(
        outlier_channels={n: maxima[n].topk(num_channels).indices.sort().values for n in names}
    )
    provenance.record(
        model.config,
        "outlier_channels",
        {
            "num_channels": num_channels,
            "linears": len(names),
            "calibration_batches": batches,
            "seconds": round(time.perf_counter() - start, 2),
        },
    )
    return calibration
