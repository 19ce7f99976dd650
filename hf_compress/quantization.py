"""Importing this registers hf_compress's saved formats (int8, low-bit, low-rank layout) with `from_pretrained`.

The light import for serving: `import hf_compress.quantization` then `AutoModel*.from_pretrained(path)`, without the
trainers. `import hf_compress` does it too.
"""

from .format import quantizer  # noqa: F401  (registration happens on import)
