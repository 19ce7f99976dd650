"""Int8 and low-bit (8/4/2) quantization; importing this package registers the loader with transformers."""

from .bit_widths import allocate_bits, choose_bit_widths
from .config import QUANT_METHOD, Int8QuantizationConfig
from .gptq import calibrate_gptq_
from .hf_quantizer import Int8HfQuantizer
from .low_bit import FakeQuantEmbedding, FakeQuantLinear, fake_quantize_, pack_codes, unpack_codes
from .low_bit_modules import LowBitEmbedding, LowBitLinear, bake_low_bit_, set_low_bit_compute_
from .low_rank import Int8LowRankLinear
from .modules import Int8Embedding, Int8Linear
from .outliers import keep_outlier_channels_
from .quantize import quantize_, quantize_pretrained
from .smoothing import smooth_activations_, smoothing_groups

__all__ = [
    "QUANT_METHOD",
    "FakeQuantEmbedding",
    "FakeQuantLinear",
    "Int8Embedding",
    "Int8HfQuantizer",
    "Int8Linear",
    "Int8LowRankLinear",
    "Int8QuantizationConfig",
    "LowBitEmbedding",
    "LowBitLinear",
    "allocate_bits",
    "bake_low_bit_",
    "calibrate_gptq_",
    "choose_bit_widths",
    "fake_quantize_",
    "keep_outlier_channels_",
    "pack_codes",
    "quantize_",
    "quantize_pretrained",
    "set_low_bit_compute_",
    "smooth_activations_",
    "smoothing_groups",
    "unpack_codes",
]
