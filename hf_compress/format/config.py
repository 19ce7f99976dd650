"""Int8QuantizationConfig: what `quantize_` converts, and what `from_pretrained` reads back from config.json."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from transformers.utils.quantization_config import QuantizationConfigMixin

from ..config_fields import config_field

QUANT_METHOD = "hf_compress_int8"
FORMAT_VERSION = 1
# A one-byte tensor saved beside the int8 weights. Without hf_compress, transformers ignores our quantization_config,
# fails on the int8 shapes and points to its load report; this key is the report row that says what to do.
LOAD_NOTICE_KEY = "hf_compress_int8.requires_hf_compress:pip_install_hf-compress_then_import_hf_compress"
# "smoothed_linear": an Int8Linear that multiplies its input by a saved per-channel `input_scale` (SmoothQuant's 1/s).
# "low_rank_linear": an Int8LowRankLinear, both factors of a LowRankLinear in int8 (ranks in low_rank_ranks).
# "linear_4bit", "embedding_2bit", ...: a LowBitLinear / LowBitEmbedding (low_bit_modules.py), codes of that many bits
# packed into uint8 with fp32 scales per row or per group of weight_group_size columns (quantization-aware training).
LOW_BIT_KINDS = tuple(f"{m}_{b}bit" for m in ("linear", "embedding") for b in (8, 4, 2))
KINDS = ("linear", "smoothed_linear", "low_rank_linear", "embedding", *LOW_BIT_KINDS)
LOW_BIT_COMPUTES = ("int8", "float")
# Non-persistent buffer that smooth_activations_ leaves on a float nn.Linear: the s that quantize_ applies at run time.
SMOOTHING_BUFFER = "smoothquant_scale"
# Non-persistent buffers that keep_outlier_channels_ and calibrate_gptq_ leave on a float nn.Linear for quantize_.
OUTLIER_BUFFER = "int8_outlier_channels"
GPTQ_BUFFER = "gptq_hessian"
ACTIVATION_RANGES = ("per_token", "per_batch")


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
        bad = {k: v for k, v in dict(self.quantized_modules).items() if v not in KINDS}
        if bad:
            raise ValueError(f"quantized_modules={bad!r}: each value must be one of {KINDS}")
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
        if not any(kind in LOW_BIT_KINDS for kind in self.quantized_modules.values()):
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
