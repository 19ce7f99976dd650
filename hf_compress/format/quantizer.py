"""The one HfQuantizer of hf_compress: `from_pretrained` loads every saved kind (int8, low-bit, factorised layouts).

Importing this module registers the quantizer under both quant_methods hf_compress writes ("hf_compress_int8",
"hf_compress_low_rank"), and extends transformers' "compressed-tensors" quantizer so that checkpoints hf-compress
exported in that format load with our int8 kernels (others load as stock); `import hf_compress` and
`import hf_compress.quantization` import it. Loading is one loop
over the table of module kinds (`format/kinds.py`): each module config.json names is replaced by the empty module of
its kind before the checkpoint's tensors fill it, then prepared once for its kernel.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch
from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING

from .config import (
    FORMAT_VERSION,
    LOAD_NOTICE_KEY,
    LOW_RANK_METHOD,
    QUANT_METHOD,
    Int8QuantizationConfig,
    LowRankConfig,
    is_layout_only_config,
)
from .kinds import float_parameter_first, module_kind

if TYPE_CHECKING:  # an annotation only: importing it loads transformers' model-loading internals (and scipy)
    from transformers import PreTrainedModel


class HfCompressQuantizer(HfQuantizer):
    """Swaps the modules config.json lists for those of their kind before `from_pretrained` loads the tensors.

    Models it loads save with `save_pretrained` and train with Trainer (which refuses a quantized model unless its
    quantizer says it can train, even to only evaluate): the float parameters (factors, biases, LayerNorms, modules
    kept in float) train, int8 codes and scales stay frozen, and gradients flow through the int8 modules to earlier
    layers (`PackedInt8Module.int8_value_float_gradient`).
    """

    quantization_config: Int8QuantizationConfig | LowRankConfig

    @property
    def requires_calibration(self) -> bool:
        # A dense checkpoint cannot be "factorised on load" (use factorize_linear_); int8 can quantize on load.
        return is_layout_only_config(self.quantization_config)

    def is_serializable(self):
        return True

    @property
    def is_trainable(self) -> bool:
        return True

    @property
    def is_qat_trainable(self) -> bool:
        return True

    def _process_model_before_weight_loading(self, model, **kwargs):
        from ..methods.low_rank.transform import restore_low_rank_layout

        config = self.quantization_config
        if is_layout_only_config(config):
            return restore_low_rank_layout(model, config.ranks)
        ignored = set(model._keys_to_ignore_on_load_unexpected or ())
        model._keys_to_ignore_on_load_unexpected = ignored | {re.escape(LOAD_NOTICE_KEY)}
        if not self.pre_quantized:
            return model  # quantized after loading, from the float weights
        if not config.quantized_modules:
            raise ValueError(
                f"quantization_config of {QUANT_METHOD!r} lists no quantized_modules: corrupt config.json"
            )
        if config.low_rank_ranks:
            # A factorised model: LowRankLinear first (float ones stay so), then its int8 modules like any other.
            restore_low_rank_layout(model, config.low_rank_ranks)
        for saved_name, kind in config.quantized_modules.items():
            name = resolve_name(model, saved_name)
            # On the meta device: the tensors are allocated when the checkpoint loads.
            model.set_submodule(name, module_kind(kind).empty(model.get_submodule(name), config, saved_name))
        float_parameter_first(model)
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        if is_layout_only_config(self.quantization_config):
            return model
        if not self.pre_quantized:
            from ..methods.int8.transform import apply_quantization, check_not_quantized

            # from_pretrained has just set our own quantization_config on the config: only the modules tell.
            check_not_quantized(model, check_config=False)
            apply_quantization(model, self.quantization_config, filter_fn=None)
            self.quantization_config = model.config.quantization_config
            return model
        from ..methods.int8.modules import PackedInt8Module

        for module in model.modules():
            if isinstance(module, PackedInt8Module):
                # Loaded tensors, prepared once, now: packed for the kernel (low-bit codes first unpacked to int8).
                module.prepare()
        return model

    def get_state_dict_and_metadata(self, model):
        """The modules' own state dict is the on-disk format; int8 adds the notice key, which the header names."""
        if is_layout_only_config(self.quantization_config):
            return None, {}
        state_dict = dict(model.state_dict())
        state_dict[LOAD_NOTICE_KEY] = torch.zeros(1, dtype=torch.int8)
        return state_dict, {"quant_method": QUANT_METHOD, "format_version": str(FORMAT_VERSION)}


def attach(model: PreTrainedModel, config: Int8QuantizationConfig | LowRankConfig) -> None:
    """Mark `model` as `from_pretrained` leaves a checkpoint with `config`, so that save_pretrained records it (and
    put a float parameter first, as loading does: see `float_parameter_first`)."""
    float_parameter_first(model)
    model.config.quantization_config = config
    model.hf_quantizer = HfCompressQuantizer(config, pre_quantized=True)
    model.is_quantized = True
    model.quantization_method = config.quant_method


def resolve_name(model, saved_name: str) -> str:
    """The module's name in `model`, adding or dropping the base-model prefix (a base model from a task checkpoint)."""
    names = dict(model.named_modules())
    prefix = f"{model.base_model_prefix}."
    for name in (saved_name, saved_name.removeprefix(prefix), prefix + saved_name):
        if name in names:
            return name
    raise ValueError(f"quantization_config lists {saved_name!r}, which is not a module of {type(model).__name__}")


def _compressed_tensors_quantizer():
    """transformers' compressed-tensors quantizer, then hf_compress's int8 kernels for checkpoints we exported."""
    from transformers.quantizers.quantizer_compressed_tensors import CompressedTensorsHfQuantizer

    class CompressedTensorsWithInt8Kernels(CompressedTensorsHfQuantizer):
        """Stock compressed-tensors loading for every checkpoint; for one `hf-compress export --format
        compressed-tensors` wrote (config.json's `export` record says so), our modules and int8 kernels replace
        compressed-tensors' float simulation once the tensors are loaded (`use_int8_kernels_`)."""

        def _process_model_after_weight_loading(self, model, **kwargs):
            from .compressed_tensors import use_int8_kernels_, written_by_hf_compress

            model = super()._process_model_after_weight_loading(model, **kwargs) or model
            dequantize = getattr(self.quantization_config, "dequantize", False)
            if self.pre_quantized and not dequantize and written_by_hf_compress(model.config):
                use_int8_kernels_(model)
            return model

    return CompressedTensorsWithInt8Kernels


# compressed-tensors checkpoints we wrote load with our kernels when hf_compress is imported; every other
# compressed-tensors checkpoint loads exactly as stock (the subclass changes nothing for it).
if AUTO_QUANTIZER_MAPPING.get("compressed-tensors") is not None:
    if AUTO_QUANTIZER_MAPPING["compressed-tensors"].__name__ != "CompressedTensorsWithInt8Kernels":
        AUTO_QUANTIZER_MAPPING["compressed-tensors"] = _compressed_tensors_quantizer()

# Registration happens once per process; re-importing (e.g. importlib.reload) must not raise "already registered".
for _method, _config in ((QUANT_METHOD, Int8QuantizationConfig), (LOW_RANK_METHOD, LowRankConfig)):
    if _method not in AUTO_QUANTIZATION_CONFIG_MAPPING:
        register_quantization_config(_method)(_config)
    if _method not in AUTO_QUANTIZER_MAPPING:
        register_quantizer(_method)(HfCompressQuantizer)
