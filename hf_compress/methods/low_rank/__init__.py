"""Low-rank factorisation of Linear layers (SVD, Fisher-weighted or activation-aware), trained back by distilling."""

from __future__ import annotations

from ..method import Method, ModuleKind
from .config import LowRankArguments, check_low_rank_arguments


def attention_projections(model):
    """filter_fn of factorize_linear_ keeping the q/k/v/output projections of every distinct layer."""
    from ...families import ATTENTION_PARTS, distinct_layers

    names = {parts.module_name(part) for parts in distinct_layers(model) for part in ATTENTION_PARTS}
    return lambda module, name: name in names


def factorize(trainer) -> None:
    """factorize_linear_ on the student after Trainer.__init__ (its collator and column rules exist), before any
    optimizer does; calibrated on the first train batches when the method needs data."""
    from ...checks import invalid
    from .transform import factorize_linear_

    args = trainer.args
    rule = {"budget" if args.low_rank_allocation == "budget" else "rank_ratio": args.low_rank_ratio}
    batches = None
    if args.low_rank_method != "svd" or args.low_rank_allocation == "budget":
        if trainer.train_dataset is None:
            raise invalid(
                "train_dataset",
                None,
                f"a labelled dataset for low_rank_method={args.low_rank_method!r} / low_rank_allocation="
                f"{args.low_rank_allocation!r} (or low_rank_method='svd' with 'per_module')",
            )
        batches = trainer.calibration_batches(args.low_rank_calibration_batches, "low-rank calibration")
    factorize_linear_(
        trainer.model,
        method=args.low_rank_method,
        dataloader=batches,
        num_batches=args.low_rank_calibration_batches,
        filter_fn=attention_projections(trainer.model) if args.low_rank_modules == "attention" else None,
        **rule,
    )


def ranks(model) -> dict:
    """The layout field of an int8 config: the rank of every LowRankLinear, int8 or kept float."""
    from .transform import LowRankLinear

    return {"low_rank_ranks": {n: m.rank for n, m in model.named_modules() if isinstance(m, LowRankLinear)}}


METHOD = Method(
    name="low_rank",
    label="low-rank factorisation of Linear layers (SVD, Fisher-weighted or activation-aware)",
    tags=("low-rank",),
    arguments=LowRankArguments,
    stages=("convert",),
    enabled=lambda args: args.low_rank_ratio is not None,
    check=check_low_rank_arguments,
    after_trainer=factorize,
    layout=ranks,
)


def _empty_int8_factors(module, config, saved_name):
    """Both factors of a LowRankLinear in int8 (the layout was restored first, so `module` knows its rank)."""
    from .int8 import Int8LowRankLinear

    if not hasattr(module, "rank"):
        raise ValueError(f"quantization_config lists {saved_name!r} as low_rank_linear without its rank")
    per_token = config.activation_range == "per_token"
    bias, device = module.bias is not None, module.weight.device
    return Int8LowRankLinear(module.in_features, module.out_features, module.rank, bias, per_token, device)


def _is_factorised(module) -> bool:
    from .transform import LowRankLinear

    return isinstance(module, LowRankLinear)


def _int8_factors(module, per_token: bool, per_tensor: bool):
    """Both factors of a LowRankLinear in int8: two int8 matmuls."""
    from .int8 import Int8LowRankLinear

    return Int8LowRankLinear.from_low_rank(module, per_token, per_tensor)


KINDS = (
    ModuleKind("low_rank_linear", "low_rank", _empty_int8_factors, converts=_is_factorised, from_float=_int8_factors),
)
