"""Post-training int8 quantization; importing this package registers the int8 loader with transformers."""

from .config import QUANT_METHOD, Int8QuantizationConfig
from .hf_quantizer import Int8HfQuantizer
from .low_rank import Int8LowRankLinear
from .modules import Int8Embedding, Int8Linear
from .quantize import quantize_, quantize_pretrained
from .smoothing import smooth_activations_, smoothing_groups

__all__ = [
    "QUANT_METHOD",
    "Int8Embedding",
    "Int8HfQuantizer",
    "Int8Linear",
    "Int8LowRankLinear",
    "Int8QuantizationConfig",
    "quantize_",
    "quantize_pretrained",
    "smooth_activations_",
    "smoothing_groups",
]
