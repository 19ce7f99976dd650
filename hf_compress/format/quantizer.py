"""Int8HfQuantizer: lets `from_pretrained` load (or quantize on load) hf_compress int8 checkpoints.

Importing this module registers the quantizer and its config with transformers under quant_method
"hf_compress_int8"; `import hf_compress` imports it.
"""

from __future__ import annotations

import re

import torch
from transformers.quantizers import register_quantization_config, register_quantizer
from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING

from ..format.trainable import TrainableQuantizer
from ..methods.low_rank.transform import restore_low_rank_layout
from .config import FORMAT_VERSION, LOAD_NOTICE_KEY, QUANT_METHOD, Int8QuantizationConfig
from .low_bit_modules import LowBitEmbedding, LowBitLinear, parse_kind
from .low_rank import Int8LowRankLinear
from .modules import Int8Embedding, Int8Linear, PackedInt8Module
from .quantize import apply_quantization, check_not_quantized


class Int8HfQuantizer(TrainableQuantizer):
    """Swaps the listed nn.Linear / nn.Embedding for their int8 versions before the checkpoint's tensors load."""

    requires_calibration = False
    quantization_config: Int8QuantizationConfig

    def _process_model_before_weight_loading(self, model, **kwargs):
        ignored = set(model._keys_to_ignore_on_load_unexpected or ())
        model._keys_to_ignore_on_load_unexpected = ignored | {re.escape(LOAD_NOTICE_KEY)}
        if not self.pre_quantized:
            return model  # quantized after loading, from the float weights
        modules = self.quantization_config.quantized_modules
        if not modules:
            raise ValueError(
                f"quantization_config of {QUANT_METHOD!r} lists no quantized_modules: corrupt config.json"
            )
        per_token = self.quantization_config.activation_range == "per_token"
        if self.quantization_config.low_rank_ranks:
            # A factorised model: LowRankLinear first (float ones stay so), then the int8 swap names the factorised
            # modules like any other.
            restore_low_rank_layout(model, self.quantization_config.low_rank_ranks)
        for saved_name, kind in modules.items():
            name = resolve_name(model, saved_name)
            module = model.get_submodule(name)
            device = module.weight.device  # meta: the tensors are allocated when the checkpoint loads
            low_bit = parse_kind(kind)
            group_size = self.quantization_config.weight_group_size
            if low_bit is not None and low_bit[0] == "linear":
                compute = self.quantization_config.low_bit_compute
                new = LowBitLinear(
                    module.in_features,
                    module.out_features,
                    low_bit[1],
                    group_size,
                    module.bias is not None,
                    per_token,
                    compute,
                    device=device,
                )
            elif low_bit is not None:
                new = LowBitEmbedding(
                    module.num_embeddings, module.embedding_dim, low_bit[1], group_size, module.padding_idx, device
                )
            elif kind == "low_rank_linear":
                if not hasattr(module, "rank"):
                    raise ValueError(f"quantization_config lists {saved_name!r} as low_rank_linear without its rank")
                new = Int8LowRankLinear(
                    module.in_features, module.out_features, module.rank, module.bias is not None, per_token, device
                )
            elif kind in ("linear", "smoothed_linear"):
                new = Int8Linear(
                    module.in_features,
                    module.out_features,
                    module.bias is not None,
                    per_token,
                    device=device,
                    smoothed=kind == "smoothed_linear",
                    num_outliers=self.quantization_config.outlier_channels.get(saved_name, 0),
                )
            else:
                new = Int8Embedding(module.num_embeddings, module.embedding_dim, module.padding_idx, device=device)
            model.set_submodule(name, new)
        return model

    def _process_model_after_weight_loading(self, model, **kwargs):
        if not self.pre_quantized:
            # from_pretrained has just set our own quantization_config on the config: only the modules tell.
            check_not_quantized(model, check_config=False)
            apply_quantization(model, self.quantization_config, filter_fn=None)
            self.quantization_config = model.config.quantization_config
        else:
            for module in model.modules():
                if isinstance(module, PackedInt8Module):
                    # Loaded tensors, prepared once, now: packed for fbgemm (low-bit codes first unpacked to int8).
                    module.prepare()
        return model

    def get_state_dict_and_metadata(self, model):
        """The module's own state dict is the on-disk format, plus the notice key; the safetensors header names it."""
        state_dict = dict(model.state_dict())
        state_dict[LOAD_NOTICE_KEY] = torch.zeros(1, dtype=torch.int8)
        return state_dict, {"quant_method": QUANT_METHOD, "format_version": str(FORMAT_VERSION)}


def resolve_name(model, saved_name: str) -> str:
    """The module's name in `model`, adding or dropping the base-model prefix (a base model from a task checkpoint)."""
    names = dict(model.named_modules())
    prefix = f"{model.base_model_prefix}."
    for name in (saved_name, saved_name.removeprefix(prefix), prefix + saved_name):
        if name in names:
            return name
    raise ValueError(f"quantization_config lists {saved_name!r}, which is not a module of {type(model).__name__}")


# Registration happens once per process; re-importing (e.g. importlib.reload) must not raise "already registered".
if QUANT_METHOD not in AUTO_QUANTIZATION_CONFIG_MAPPING:
    register_quantization_config(QUANT_METHOD)(Int8QuantizationConfig)
if QUANT_METHOD not in AUTO_QUANTIZER_MAPPING:
    register_quantizer(QUANT_METHOD)(Int8HfQuantizer)
