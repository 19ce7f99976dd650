"""Low-bit quantization-aware training: 8/4/2/1-bit weights (straight-through), packed into uint8 at finalization."""

from __future__ import annotations

from ..method import Method, ModuleKind
from .config import BITS, LowBitArguments, check_low_bit_arguments


def fake_quantize(trainer) -> None:
    """fake_quantize_ on the student: one weight_bits, or widths chosen by choose_bit_widths for bit_budget_mb."""
    from torch import nn

    from ...checks import invalid
    from .bit_widths import choose_bit_widths
    from .fake_quant import fake_quantize_, select_low_bit_modules

    args = trainer.args
    modules = args.weight_quantization_modules
    if args.bit_budget_mb is not None:
        if trainer.train_dataset is None:
            raise invalid("train_dataset", None, f"a labelled dataset for bit_budget_mb={args.bit_budget_mb}")
        batches = trainer.calibration_batches(args.bit_calibration_batches, "bit-width calibration")
        bits = choose_bit_widths(
            trainer.model,
            batches,
            args.bit_budget_mb,
            num_batches=args.bit_calibration_batches,
            group_size=args.weight_group_size,
            modules=modules,
            sensitivity=args.bit_sensitivity,
        )
    else:
        chosen = select_low_bit_modules(trainer.model, modules)
        embedding_bits = args.embedding_weight_bits or args.weight_bits
        bits = {n: embedding_bits if isinstance(m, nn.Embedding) else args.weight_bits for n, m in chosen.items()}
    fake_quantize_(trainer.model, bits, args.weight_group_size)
    trainer.low_bit_widths = bits


def pack(trainer) -> None:
    """The trained master weights packed as the forward pass saw them; the int8 kernel computes with them."""
    if getattr(trainer.model.config, "quantization_config", None) is not None:
        return  # already packed (a resumed or re-finalized run)
    from ...format.config import Int8QuantizationConfig
    from ...provenance import applied, record
    from .modules import bake_low_bit_

    bake_low_bit_(trainer.model, Int8QuantizationConfig())
    args = trainer.args
    qat = {"weight_bits": args.weight_bits, "bit_budget_mb": args.bit_budget_mb}
    if args.bit_budget_mb is not None:
        qat["bit_sensitivity"] = args.bit_sensitivity
    qat.update(group_size=args.weight_group_size, modules=args.weight_quantization_modules)
    record(trainer.model.config, "quantization", {**applied(trainer.model.config)["quantization"], **qat})


METHOD = Method(
    name="low_bit",
    record="quantization",
    variant="low_bit",
    label="low-bit quantization-aware training (8/4/2/1-bit weights, packed)",
    tags=("quantization", "low-bit"),
    arguments=LowBitArguments,
    stages=("convert", "finalize"),
    enabled=lambda args: args.low_bit,
    check=check_low_bit_arguments,
    after_trainer=fake_quantize,
    finalize=pack,
)


def _empty_packed(module, config, saved_name):
    """A LowBitLinear / LowBitEmbedding of the recorded width, codes packed into uint8 (see its module)."""
    from .modules import LowBitEmbedding, LowBitLinear

    kind = config.quantized_modules[saved_name]
    bits, group_size, device = (
        int(kind.split("_")[1].removesuffix("bit")),
        config.weight_group_size,
        module.weight.device,
    )
    if kind.startswith("linear"):
        per_token = config.activation_range == "per_token"
        bias = module.bias is not None
        return LowBitLinear(
            module.in_features, module.out_features, bits, group_size, bias, per_token, config.low_bit_compute, device
        )
    return LowBitEmbedding(module.num_embeddings, module.embedding_dim, bits, group_size, module.padding_idx, device)


# "linear_4bit", "embedding_2bit", ...: codes of that many bits packed into uint8 with fp32 scales per row or per group
# of weight_group_size columns.
KINDS = tuple(ModuleKind(f"{m}_{b}bit", "low_bit", _empty_packed) for m in ("linear", "embedding") for b in BITS)
