"""The quantization configs hf_compress writes to config.json, and what `from_pretrained` reads back.

`Int8QuantizationConfig` (quant_method "hf_compress_int8"): every quantized module by kind (`quantized_modules`,
the kinds of `format/kinds.py`), plus what loading them needs (ranks of factorised modules, outlier channels, group
size). `LowRankConfig` (quant_method "hf_compress_low_rank"): the layout of a factorised float model, nothing
quantized. A checkpoint carries one of them; both load through the one quantizer of `format/quantizer.py`.

Why a quantization config for a float layout: stock transformers has no factorised Linear, and a registered
quantizer is the one hook `from_pretrained` gives a library to swap modules before a checkpoint's tensors load; it
keeps a stock config and class (no `trust_remote_code`). Without hf_compress imported, transformers warns about the
unknown quant_method, builds plain nn.Linear and fails on the flat factor shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from transformers.utils.quantization_config import QuantizationConfigMixin

from ..checks import invalid, is_int, require
from ..config_fields import config_field

QUANT_METHOD = "hf_compress_int8"
FORMAT_VERSION = 1
# A one-byte tensor saved beside the int8 weights. Without hf_compress, transformers ignores our quantization_config,
# fails on the int8 shapes and points to its load report; this key is the report row that says what to do.
LOAD_NOTICE_KEY = "hf_compress_int8.requires_hf_compress:pip_install_hf-compress_then_import_hf_compress"
# The kinds of quantized_modules ("linear", "smoothed_linear", "low_rank_linear", "embedding", "linear_4bit", ...) are
# the table of format/kinds.py, each declared by its method.
LOW_BIT_COMPUTES = ("int8", "float")
ACTIVATION_RANGES = ("per_token", "per_batch")
WEIGHT_GRANULARITIES = ("per-row", "per-tensor")


@dataclass
class Int8QuantizationConfig(QuantizationConfigMixin):
    """Post-training int8: dynamic int8 for nn.Linear, weight-only int8 (one scale per row) for word embeddings."""

    modules_to_not_convert: list[str] | None = config_field(
        None,
        "Modules kept in full precision, e.g. ['classifier']: a name, a prefix up to a '.' boundary, "
        "a regex or a suffix, matched as in transformers' quantizers. Each entry must match some module.",
    )
    modules_to_convert: list[str] | None = config_field(
        None,
        "Exact names of the nn.Linear / nn.Embedding modules to quantize. None: every nn.Linear, plus "
        "the input word embeddings if quantize_embeddings.",
    )
    quantize_embeddings: bool = config_field(
        True, "With the default selection, also store the input word embeddings as int8 (per row)."
    )
    activation_range: str = config_field(
        "per_batch",
        "Run-time int8 range of Linear inputs: 'per_batch' (one per call, as quantize_dynamic; fastest: "
        "MiniLM at batch 32 runs 1.5x fp32 on an AVX2 CPU, 2.7x with AVX-512 VNNI) or 'per_token' (one per "
        "row; ~7 dB more SQNR; 1.25x / 2.2x).",
    )
    weight_granularity: str = config_field(
        "per-row",
        "Scales of the int8 Linear weights: 'per-row' (one per output channel) or 'per-tensor' (one per weight, "
        "fbgemm's faster per-tensor kernel at large batches). Stored one per row either way; loading needs neither.",
    )
    quantized_modules: dict[str, str] = config_field(
        help="Written by quantize_ / bake_low_bit_, read when loading: name -> 'linear' | 'smoothed_linear' | "
        "'low_rank_linear' | 'embedding' for every module stored as int8, or 'linear_4bit', 'embedding_2bit', "
        "... (linear|embedding _ 8|4|2 bit) for packed low-bit modules. Leave empty when configuring.",
        default_factory=dict,
    )
    low_rank_ranks: dict[str, int] = config_field(
        help="Written by quantize_ for a model factorised by factorize_linear_, read when loading: name -> "
        "rank of every LowRankLinear (int8 or kept float). One quantization_config knows both. Leave empty.",
        default_factory=dict,
    )
    outlier_channels: dict[str, int] = config_field(
        help="Written by quantize_ for Linears given outlier channels by keep_outlier_channels_, read when loading: "
        "name -> how many input channels it computes in float. Leave empty.",
        default_factory=dict,
    )
    weight_group_size: int | None = config_field(
        None,
        "Written by bake_low_bit_, read when loading: input columns per fp32 scale of the low-bit kinds "
        "(linear_4bit, ...); null: one scale per row. Leave unset.",
    )
    low_bit_compute: str = config_field(
        "int8",
        "How the low-bit Linears compute once loaded: 'int8' (codes unpacked at load and re-quantized "
        "per row for the int8 kernel, the fast path on CPU) or 'float' (dequantized fp32 weights).",
    )
    format_version: int = config_field(
        FORMAT_VERSION, "On-disk format of the int8 tensors; bumped on incompatible change."
    )
    quant_method: str = config_field(QUANT_METHOD, f"Always {QUANT_METHOD!r}: the key transformers dispatches on.")

    def __post_init__(self):
        if self.quant_method != QUANT_METHOD:
            raise ValueError(f"quant_method={self.quant_method!r} must be {QUANT_METHOD!r}")
        for name in ("modules_to_not_convert", "modules_to_convert"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, str) or not all(isinstance(v, str) and v for v in value)):
                raise ValueError(f"{name}={value!r} must be None or a list of non-empty module names")
            if value is not None:
                setattr(self, name, list(value))
        if not isinstance(self.quantize_embeddings, bool):
            raise ValueError(f"quantize_embeddings={self.quantize_embeddings!r} must be True or False")
        if self.activation_range not in ACTIVATION_RANGES:
            raise ValueError(f"activation_range={self.activation_range!r} must be one of {ACTIVATION_RANGES}")
        if self.weight_granularity not in WEIGHT_GRANULARITIES:
            raise invalid("weight_granularity", self.weight_granularity, " or ".join(map(repr, WEIGHT_GRANULARITIES)))
        from .kinds import MODULE_KINDS  # the kinds' methods import this module

        bad = {k: v for k, v in dict(self.quantized_modules).items() if v not in MODULE_KINDS}
        if bad:
            raise ValueError(f"quantized_modules={bad!r}: each value must be one of {tuple(MODULE_KINDS)}")
        ranks = dict(self.low_rank_ranks)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in ranks.values()):
            raise ValueError(f"low_rank_ranks={ranks!r}: each value must be an integer rank >= 1")
        outliers = dict(self.outlier_channels)
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in outliers.values()):
            raise ValueError(f"outlier_channels={outliers!r} is invalid; allowed: name -> an integer >= 1")
        gs = self.weight_group_size
        if gs is not None and (isinstance(gs, bool) or not isinstance(gs, int) or gs < 1):
            raise ValueError(f"weight_group_size={gs!r} is invalid; allowed: null or an integer >= 1")
        if self.low_bit_compute not in LOW_BIT_COMPUTES:
            raise ValueError(f"low_bit_compute={self.low_bit_compute!r} is invalid; allowed: {LOW_BIT_COMPUTES}")
        if self.format_version != FORMAT_VERSION:
            raise ValueError(
                f"format_version={self.format_version!r}: this hf_compress reads format {FORMAT_VERSION}; "
                "upgrade hf_compress (pip install -U hf_compress) to load this checkpoint"
            )

    def to_dict(self) -> dict[str, Any]:
        """The config.json entry; the low-bit fields only when a low-bit module is listed, so that an int8-only
        checkpoint stays readable by hf_compress versions that predate them."""
        values = super().to_dict()
        if not self.outlier_channels:
            # Only checkpoints that need it name it, so that the others stay readable by older hf_compress versions.
            values.pop("outlier_channels", None)
        if self.weight_granularity == "per-row":
            values.pop("weight_granularity", None)  # the same: per-row checkpoints stay as older versions wrote them
        from .kinds import MODULE_KINDS

        if not any(MODULE_KINDS[kind].method == "low_bit" for kind in self.quantized_modules.values()):
            for name in ("weight_group_size", "low_bit_compute"):
                if values.get(name) == next(f.default for f in fields(self) if f.name == name):
                    values.pop(name, None)
        return values

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], return_unused_kwargs: bool = False, **kwargs):
        """Build from a config.json entry, naming any key this version does not know."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config_dict) - known)
        if unknown:
            raise ValueError(
                f"quantization_config has keys {unknown} that this hf_compress does not know (known: "
                f"{sorted(known)}); upgrade hf_compress (pip install -U hf_compress)"
            )
        return super().from_dict(config_dict, return_unused_kwargs=return_unused_kwargs, **kwargs)


LOW_RANK_METHOD = "hf_compress_low_rank"
LOW_RANK_FORMAT_VERSION = 1


@dataclass
class LowRankConfig(QuantizationConfigMixin):
    """The layout of a factorised checkpoint, as config.json's quantization_config: which Linears are factorised."""

    ranks: dict[str, int] = config_field(
        help="Written by factorize_linear_: module name -> rank of every LowRankLinear of the model.",
        default_factory=dict,
    )
    format_version: int = config_field(
        LOW_RANK_FORMAT_VERSION, "On-disk layout of the factors; bumped on incompatible change."
    )
    quant_method: str = config_field(
        LOW_RANK_METHOD, f"Always {LOW_RANK_METHOD!r}: the key transformers dispatches on."
    )

    def __post_init__(self):
        require(self.quant_method == LOW_RANK_METHOD, "quant_method", self.quant_method, repr(LOW_RANK_METHOD))
        ok = isinstance(self.ranks, dict) and len(self.ranks) > 0
        ok = ok and all(isinstance(k, str) and is_int(v) and v >= 1 for k, v in self.ranks.items())
        require(ok, "ranks", self.ranks, "a non-empty dict of module name -> integer rank >= 1")
        if self.format_version != LOW_RANK_FORMAT_VERSION:
            raise invalid(
                "format_version",
                self.format_version,
                f"{LOW_RANK_FORMAT_VERSION} (this hf_compress's layout); upgrade hf_compress "
                "(pip install -U hf_compress)",
            )

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], return_unused_kwargs: bool = False, **kwargs):
        """Build from a config.json entry, naming any key this version does not know."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(config_dict) - known)
        require(not unknown, "quantization_config keys", unknown, f"{sorted(known)}; upgrade hf_compress")
        return super().from_dict(config_dict, return_unused_kwargs=return_unused_kwargs, **kwargs)


def is_layout_only_config(config) -> bool:
    """Whether a quantization_config (object or dict) records a float layout only, no quantized module (the one
    factorize_linear_ writes): a model with it is not quantized."""
    method = config.get("quant_method") if isinstance(config, dict) else getattr(config, "quant_method", None)
    return method == LOW_RANK_METHOD
