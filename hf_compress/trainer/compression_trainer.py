"""CompressionTrainer: distil from a teacher while pruning, as movement pruning reaches its published numbers."""

from __future__ import annotations

import itertools

from torch import nn
from torch.utils.data import DataLoader

from ..checks import invalid
from ..families import ATTENTION_PARTS, distinct_layers
from ..provenance import applied, record
from ..transforms.albert import to_albert, token_frequencies
from ..transforms.low_rank import factorize_linear_
from ..transforms.low_rank_loading import is_low_rank_config
from .compression_args import CompressionTrainingArguments
from .distillation_trainer import DistillationTrainer
from .pruning_trainer import PruningMixin


def attention_projections(model):
    """filter_fn of factorize_linear_ keeping the q/k/v/output projections of every distinct layer."""
    names = {parts.module_name(part) for parts in distinct_layers(model) for part in ATTENTION_PARTS}
    return lambda module, name: name in names


class CompressionTrainer(PruningMixin, DistillationTrainer):
    """DistillationTrainer plus PruningTrainer's masks and schedule, in one loop; an ALBERT-style and/or low-rank
    factorised student if asked; low-bit quantization-aware training (packed at finalization) or int8 at
    finalization if asked."""

    _tag_names = ["hf_compress", "distillation", "pruning"]
    low_bit_widths: dict[str, int] | None = None  # module name -> bits of the fake-quantized student, if any

    def __init__(self, model=None, args: CompressionTrainingArguments | None = None, teacher_model=None, **kwargs):
        if not isinstance(args, CompressionTrainingArguments):
            raise ValueError(f"args must be a CompressionTrainingArguments, got {type(args).__name__}")
        if args.albert_conversion and model is not None and model.config.model_type != "albert":
            # Converted before Trainer sees it, so the optimizer holds the shared, factorised parameters.
            weights = self._token_weights(args, model, kwargs.get("train_dataset"))
            model = to_albert(model, args.embedding_size, args.num_hidden_groups, args.sharing_init, weights)
        replaced = "factorised" if args.low_rank_ratio is not None else "fake-quantized" if args.low_bit else None
        if replaced and (kwargs.get("optimizers") or (None,))[0] is not None:
            raise invalid(
                "optimizers",
                "(an optimizer, ...)",
                f"(None, ...) with low_rank_ratio={args.low_rank_ratio} / weight_bits={args.weight_bits} / "
                f"bit_budget_mb={args.bit_budget_mb}: the student is {replaced} in __init__, an optimizer built "
                "before holds the replaced modules",
            )
        super().__init__(model=model, args=args, teacher_model=teacher_model, **kwargs)
        if args.low_rank_ratio is not None:
            # After Trainer's __init__ (its collator and column rules exist), before any optimizer does.
            self._factorize_student()
        if args.low_bit:
            self._fake_quantize_student()
        self._setup_pruning()  # after: the pruners hold the same Parameters the fake-quantized modules train

    def _calibration_batches(self, count: int, purpose: str) -> list[dict]:
        """The first `count` train batches (in order, unsharded: every process computes the same result), with the
        student's inputs only (the teacher's extra columns dropped)."""
        dataset = self._remove_unused_columns(self.train_dataset, description=purpose)
        loader = DataLoader(dataset, batch_size=self.args.per_device_train_batch_size, collate_fn=self.data_collator)
        student_inputs = self._inputs_of["student"]
        return [{k: v for k, v in b.items() if k in student_inputs} for b in itertools.islice(loader, count)]

    def _fake_quantize_student(self) -> None:
        """fake_quantize_ on the student: one weight_bits, or widths chosen by choose_bit_widths for bit_budget_mb."""
        from ..quantization import choose_bit_widths, fake_quantize_
        from ..quantization.low_bit import select_low_bit_modules

        args = self.args
        modules = args.weight_quantization_modules
        if args.bit_budget_mb is not None:
            if self.train_dataset is None:
                raise invalid("train_dataset", None, f"a labelled dataset for bit_budget_mb={args.bit_budget_mb}")
            batches = self._calibration_batches(args.bit_calibration_batches, "bit-width calibration")
            bits = choose_bit_widths(
                self.model,
                batches,
                args.bit_budget_mb,
                num_batches=args.bit_calibration_batches,
                group_size=args.weight_group_size,
                modules=modules,
                sensitivity=args.bit_sensitivity,
            )
        else:
            chosen = select_low_bit_modules(self.model, modules)
            embedding_bits = args.embedding_weight_bits or args.weight_bits
            bits = {n: embedding_bits if isinstance(m, nn.Embedding) else args.weight_bits for n, m in chosen.items()}
        fake_quantize_(self.model, bits, args.weight_group_size)
        self.low_bit_widths = bits

    def _factorize_student(self) -> None:
        """factorize_linear_ on the student, calibrated on its first train batches when the method needs data."""
        args = self.args
        rule = {"budget" if args.low_rank_allocation == "budget" else "rank_ratio": args.low_rank_ratio}
        batches = None
        if args.low_rank_method != "svd" or args.low_rank_allocation == "budget":
            if self.train_dataset is None:
                raise invalid(
                    "train_dataset",
                    None,
                    f"a labelled dataset for low_rank_method={args.low_rank_method!r} / low_rank_allocation="
                    f"{args.low_rank_allocation!r} (or low_rank_method='svd' with 'per_module')",
                )
            batches = self._calibration_batches(args.low_rank_calibration_batches, "low-rank calibration")
        factorize_linear_(
            self.model,
            method=args.low_rank_method,
            dataloader=batches,
            num_batches=args.low_rank_calibration_batches,
            filter_fn=attention_projections(self.model) if args.low_rank_modules == "attention" else None,
            **rule,
        )

    @staticmethod
    def _token_weights(args: CompressionTrainingArguments, model, train_dataset):
        """Vocabulary row weights for the factorisation, counted over the training data's input_ids."""
        if args.embedding_weighting == "uniform" or args.embedding_size is None:
            return None
        if train_dataset is None or "input_ids" not in getattr(train_dataset, "column_names", ()):
            raise ValueError(
                f"embedding_weighting={args.embedding_weighting!r} is invalid without a tokenised train_dataset; "
                "allowed: 'uniform', or give the trainer a train_dataset with input_ids"
            )
        counts = token_frequencies(train_dataset["input_ids"], model.config.vocab_size)
        return counts if args.embedding_weighting == "frequency" else (counts > 0).double()

    def _finalize_model(self) -> None:
        """Quantize after pruning has been baked and sliced (the rest of finalization runs first)."""
        super()._finalize_model()
        existing = getattr(self.model.config, "quantization_config", None)
        if self.args.low_bit and existing is None:
            from ..quantization import Int8QuantizationConfig, bake_low_bit_

            # The trained master weights are packed as the forward pass saw them; the int8 kernel computes with them.
            bake_low_bit_(self.model, Int8QuantizationConfig())
            args = self.args
            qat = {"weight_bits": args.weight_bits, "bit_budget_mb": args.bit_budget_mb}
            if args.bit_budget_mb is not None:
                qat["bit_sensitivity"] = args.bit_sensitivity
            qat.update(group_size=args.weight_group_size, modules=args.weight_quantization_modules)
            record(self.model.config, "quantization", {**applied(self.model.config)["quantization"], **qat})
            return
        if self.args.quantization == "none" or (existing is not None and not is_low_rank_config(existing)):
            return  # already int8 (a resumed or re-finalized run); a low-rank layout is quantized with its factors
        from ..quantization import Int8QuantizationConfig, quantize_

        config = Int8QuantizationConfig(modules_to_not_convert=self.args.quantization_modules_to_not_convert)
        quantize_(self.model, config)
