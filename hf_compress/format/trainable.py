"""What hf_compress's registered quantizers (int8, low-rank layout) share: savable, and accepted by Trainer."""

from __future__ import annotations

from transformers.quantizers import HfQuantizer


class TrainableQuantizer(HfQuantizer):
    """An HfQuantizer whose models save with `save_pretrained` and train with Trainer.

    Trainer refuses a quantized model unless its quantizer says it can train, even to only evaluate or predict. Ours
    can: the float parameters (factors, biases, LayerNorms, modules kept in float) train, int8 codes and scales stay
    frozen (they are not float, so autograd and optimizers skip them), and gradients flow through the int8 modules to
    earlier layers (`PackedInt8Module.int8_value_float_gradient`). Tested in tests/test_quantization.py and
    tests/test_low_rank.py.
    """

    def is_serializable(self):
        return True

    @property
    def is_trainable(self) -> bool:
        return True

    @property
    def is_qat_trainable(self) -> bool:
        return True
