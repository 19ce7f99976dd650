"""Loading factorised models through `from_pretrained`: a quantization config that only carries the layout.

Stock transformers has no factorised Linear: a BertForSequenceClassification always builds nn.Linear (out, in)
weights, so a checkpoint of LowRankLinear factors needs the modules swapped before its tensors load. The one hook
transformers gives a library for that is a registered quantizer: `from_pretrained` reads `quantization_config` from
config.json, builds the model on the meta device and calls the quantizer's `_process_model_before_weight_loading`
before filling it. So `factorize_linear_` attaches a `LowRankConfig` (quant_method "hf_compress_low_rank", the
per-module ranks) and `LowRankHfQuantizer` calls `restore_low_rank_layout`; nothing is quantized, the factors stay
float. Why not a model class of our own or a `trust_remote_code` module: both change the checkpoint's architecture
and run code from the folder; the quantizer keeps a stock BERT config and class, as our int8 checkpoints do.

A model both factorised and int8 carries only the int8 config (transformers reads one quantization_config), which
records the ranks in `low_rank_ranks`; `Int8HfQuantizer` restores the layout first. Without hf_compress imported,
transformers warns about the unknown quant_method, builds plain nn.Linear and fails on the flat factor shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from transformers.quantizers import register_quantization_config, register_quantizer
from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING
from transformers.utils.quantization_config import QuantizationConfigMixin

from ...checks import invalid, is_int, require
from ...config_fields import config_field
from ...format.trainable import TrainableQuantizer

LOW_RANK_METHOD = "hf_compress_low_rank"
FORMAT_VERSION = 1


@dataclass
class LowRankConfig(QuantizationConfigMixin):
    """The layout of a factorised checkpoint, as config.json's quantization_config: which Linears are factorised."""

    ranks: dict[str, int] = config_field(
        help="Written by factorize_linear_: module name -> rank of every LowRankLinear of the model.",
        default_factory=dict,
    )
    format_version: int = config_field(FORMAT_VERSION, "On-disk layout of the factors; bumped on incompatible change.")
    quant_method: str = config_field(
        LOW_RANK_METHOD, f"Always {LOW_RANK_METHOD!r}: the key transformers dispatches on."
    )

    def __post_init__(self):
        require(self.quant_method == LOW_RANK_METHOD, "quant_method", self.quant_method, repr(LOW_RANK_METHOD))
        ok = isinstance(self.ranks, dict) and len(self.ranks) > 0
        ok = ok and all(isinstance(k, str) and is_int(v) and v >= 1 for k, v in self.ranks.items())
        require(ok, "ranks", self.ranks, "a non-empty dict of module name -> integer rank >= 1")
        if self.format_version != FORMAT_VERSION:
            raise invalid(
                "format_version",
                self.format_version,
                f"{FORMAT_VERSION} (this hf_compress's layout); upgrade hf_compress (pip install -U hf_compress)",
            )

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], return_unused_kwargs: bool = False, **kwargs):
        """Build from a config.json entry, naming any key this version does not know."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config_dict) - known)
        require(not unknown, "quantization_config keys", unknown, f"{sorted(known)}; upgrade hf_compress")
        return super().from_dict(config_dict, return_unused_kwargs=return_unused_kwargs, **kwargs)


class LowRankHfQuantizer(TrainableQuantizer):
    """Swaps the factorised nn.Linear for empty LowRankLinear before `from_pretrained` loads the checkpoint."""

    requires_calibration = True  # a dense checkpoint cannot be "factorised on load": use factorize_linear_
    quantization_config: LowRankConfig

    def _process_model_before_weight_loading(self, model, **kwargs):
        from .transform import restore_low_rank_layout  # low_rank imports this module

        return restore_low_rank_layout(model, self.quantization_config.ranks)


def attach_low_rank(model, ranks: dict[str, int]) -> None:
    """Mark `model` as `from_pretrained` leaves a factorised checkpoint, so that save_pretrained records the layout.

    An int8 config already on the model (quantize_ then factorize is refused by factorize_linear_) is never replaced.
    """
    config = LowRankConfig(ranks=dict(ranks))
    model.config.quantization_config = config
    model.hf_quantizer = LowRankHfQuantizer(config, pre_quantized=True)
    model.is_quantized = True
    model.quantization_method = LOW_RANK_METHOD


def is_low_rank_config(config) -> bool:
    """Whether a quantization_config (object or dict) is the layout-only one of factorize_linear_."""
    method = config.get("quant_method") if isinstance(config, dict) else getattr(config, "quant_method", None)
    return method == LOW_RANK_METHOD


# Registration happens once per process; re-importing (e.g. importlib.reload) must not raise "already registered".
if LOW_RANK_METHOD not in AUTO_QUANTIZATION_CONFIG_MAPPING:
    register_quantization_config(LOW_RANK_METHOD)(LowRankConfig)
if LOW_RANK_METHOD not in AUTO_QUANTIZER_MAPPING:
    register_quantizer(LOW_RANK_METHOD)(LowRankHfQuantizer)
