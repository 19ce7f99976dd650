"""`hf-compress quantize [RECIPE.yaml | MODEL_DIR OUTPUT_DIR] [--field value ...]`: int8 of a saved model.

The fields are those of the int8 method in a training recipe (`Int8Arguments`: activation_range, smoothquant_alpha,
num_outlier_channels, gptq, calibration_batches, quantization_modules_to_not_convert), with the same names, plus where
the model comes from and goes to. The calibrated steps measure the first `calibration_batches` batches of
`calibration_batch_size` examples of the recipe's train split (after a seeded shuffle), read by the recipe's task
fields (task, dataset_name, text_column, max_length, ...), as a training recipe reads them.

`--runtime openvino` writes an OpenVINO IR instead, quantized by NNCF post-training quantization on the same
calibration batches (hf_compress.export.export_openvino_int8), checked against the PyTorch model like an export.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from ..checks import check_choice, check_positive_int, invalid
from ..config_fields import config_field
from ..export.arguments import PRECISIONS
from ..methods.int8.config import Int8Arguments, check_int8_arguments
from .recipe import RecipeArguments, RecipeParser, parse_recipe


@dataclass
class QuantizeArguments(Int8Arguments):
    """The int8 method's fields, on by default, and where the int8 model goes."""

    quantization: str = config_field("dynamic-int8", "Always 'dynamic-int8' for this command.")
    output_dir: str | None = config_field(None, "Where the int8 model and its tokenizer go (OUTPUT_DIR).")
    calibration_batch_size: int = config_field(32, "Examples per calibration batch (calibrated steps only).")
    runtime: str = config_field(
        "pytorch",
        "Where the int8 model runs: 'pytorch' (hf_compress's int8 modules, activation ranges at run time; a "
        "checkpoint that from_pretrained loads) or 'openvino' (an OpenVINO IR quantized by NNCF post-training "
        "quantization on the same calibration batches, static activation ranges; the fastest CPU path measured on "
        "AVX-512 VNNI). With 'openvino', smoothquant_alpha is NNCF's and quantization_modules_to_not_convert its "
        "ignored scope.",
    )
    precision: str = config_field(
        "f32",
        "With runtime='openvino': OpenVINO's inference precision for the operations left in float, recorded for "
        "serving, 'f32' or 'bf16' (as hf-compress export --precision; bf16 is checked too before anything is "
        "written, and ran 7-9% faster than f32 at the same agreement on an AVX-512 BF16 CPU). 'f32' otherwise.",
    )

    def __post_init__(self):
        if self.quantization != "dynamic-int8":
            raise invalid("quantization", self.quantization, "'dynamic-int8' for hf-compress quantize")
        check_int8_arguments(self)
        check_positive_int("calibration_batch_size", self.calibration_batch_size)
        check_choice("runtime", self.runtime, RUNTIMES)
        check_choice("precision", self.precision, PRECISIONS)
        if self.runtime != "openvino" and self.precision != "f32":
            raise invalid("precision", self.precision, "'f32' with runtime='pytorch' (an OpenVINO setting)")
        if self.runtime == "openvino":
            # our PyTorch int8's own steps: NNCF's static int8 has no counterpart to them
            steps = (("num_outlier_channels", 0), ("gptq", False), ("activation_range", "per_batch"))
            for name, off in (*steps, ("weight_granularity", "per-row")):
                if getattr(self, name) != off:
                    raise invalid(name, getattr(self, name), f"{off!r} with runtime='openvino' (NNCF's static int8)")

    @property
    def needs_calibration(self) -> bool:
        """NNCF always measures its activation ranges; our int8 only for its calibrated steps."""
        return self.runtime == "openvino" or self.calibrated


RUNTIMES = ("pytorch", "openvino")
CLASSES = (RecipeArguments, QuantizeArguments)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of `hf-compress quantize`: the recipe or the two folders, then any field as a flag."""
    parser.add_argument(
        "source", nargs="?", metavar="RECIPE.yaml | MODEL_DIR", help="a YAML recipe, or a saved model directory"
    )
    parser.add_argument("target", nargs="?", metavar="OUTPUT_DIR", help="with MODEL_DIR: where the int8 model goes")
    parser.add_argument("--keep", nargs="*", default=None, help="quantization_modules_to_not_convert, for short")
    parser.add_argument("--overwrite", action="store_true", help="overwrite_output, for short")


def build_parser(prog: str = "hf-compress quantize") -> RecipeParser:
    """Every field of RecipeArguments and QuantizeArguments as a flag (recipe keys have the same names)."""
    parser = RecipeParser(CLASSES, prog=prog, description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    return parser


def parse(argv: list[str]) -> tuple[RecipeArguments, QuantizeArguments]:
    """The two dataclasses from a recipe and/or flags; MODEL_DIR / OUTPUT_DIR fill model_name_or_path / output_dir."""
    parser = build_parser()
    first = argv[0] if argv and not argv[0].startswith("-") else None
    is_recipe = first is not None and first.endswith((".yaml", ".yml"))
    rest = argv[1:] if is_recipe else argv
    recipe, args, extra = parse_recipe(first if is_recipe else None, rest, *CLASSES, parser=parser, extra=True)
    if not is_recipe and extra.source is not None:
        recipe = dataclasses.replace(recipe, model_name_or_path=extra.source)
    if extra.target is not None:
        args = dataclasses.replace(args, output_dir=extra.target)
    if extra.keep is not None:
        args = dataclasses.replace(args, quantization_modules_to_not_convert=extra.keep)
    if extra.overwrite:
        recipe = dataclasses.replace(recipe, overwrite_output=True)
    if recipe.model_name_or_path is None:
        raise invalid("MODEL_DIR", None, "a saved model directory (or model_name_or_path in the recipe)")
    if args.output_dir is None:
        raise invalid("OUTPUT_DIR", None, "a directory for the int8 model (or output_dir in the recipe)")
    return recipe, args


def calibration_data(recipe: RecipeArguments, args: QuantizeArguments, tokenizer, start: int = 0) -> list[dict]:
    """The first `calibration_batches` batches of the recipe's train split after a seeded shuffle, padded (from
    example `start` on: the batches after them are held-out text of the same kind)."""
    from itertools import islice

    from torch.utils.data import DataLoader

    from ..data import ensure_splits
    from ..tasks import get_task

    task = get_task(recipe.task)
    raw, _ = task.load(recipe)
    raw, _ = ensure_splits(raw, recipe.validation_size, recipe.test_size, recipe.split_seed)
    needed = args.calibration_batches * args.calibration_batch_size
    train = raw["train"].shuffle(seed=recipe.split_seed)
    train = train.select(range(min(start, len(train)), min(start + needed, len(train))))
    prepared = task.prepare_splits({"train": train}, tokenizer, recipe)["train"]
    inputs = [c for c in prepared.column_names if c in ("input_ids", "attention_mask", "token_type_ids")]
    loader = DataLoader(
        prepared.select_columns(inputs), batch_size=args.calibration_batch_size, collate_fn=task.collator(tokenizer)
    )
    return list(islice(loader, args.calibration_batches))


def run(namespace_or_argv) -> None:
    """Check both directories (and the calibration data), quantize, and write the result atomically."""
    from transformers import AutoTokenizer

    from ..loading import check_path_or_id, load_saved_model
    from ..methods.int8 import quantize_calibrated_
    from ..tasks.sentence_embedding import keep_sentence_transformers_files
    from ..trainer.saving import staged_directory
    from .train import check_output_dir

    recipe, args = parse(namespace_or_argv)
    source = check_path_or_id("MODEL_DIR", recipe.model_name_or_path)
    check_output_dir(args.output_dir, recipe.overwrite_output, flag="--overwrite")
    if args.runtime == "openvino":
        from ..export.arguments import check_export

        check_export(source, args.output_dir, "openvino", None, args.precision, recipe.overwrite_output)
    if args.needs_calibration:  # calibration batches are max_length tokens long: within the model's position table
        from transformers import AutoConfig

        from ..loading import check_max_length

        config = AutoConfig.from_pretrained(source)
        check_max_length("max_length", recipe.max_length, config, "MODEL_DIR", recipe.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(source) if args.needs_calibration else None
    batches = calibration_data(recipe, args, tokenizer) if args.needs_calibration else None
    if args.runtime == "openvino":
        held_out = args.calibration_batches * args.calibration_batch_size  # the next as many examples, if any
        check = calibration_data(recipe, args, tokenizer, start=held_out)
        from ..export.openvino_int8 import export_openvino_int8
        from ..export.verify import measured

        record = export_openvino_int8(
            source,
            args.output_dir,
            batches,
            smoothquant_alpha=args.smoothquant_alpha,
            modules_to_not_convert=args.quantization_modules_to_not_convert,
            precision=args.precision,
            overwrite=recipe.overwrite_output,
            check_batches=check or None,
        )
        check = record["check"]
        print(
            f"OpenVINO int8 model (NNCF, {record['quantization']['calibration_sequences']} calibration sequences) "
            f"saved to {args.output_dir}; checked on {check['sequences']} sequences of "
            f"{record['quantization']['checked_on']}: {measured(check)}"
        )
        return
    model = load_saved_model(source)
    quantize_calibrated_(model, args, batches)
    with staged_directory(args.output_dir) as staging:
        model.save_pretrained(staging)
        try:
            AutoTokenizer.from_pretrained(source).save_pretrained(staging)
        except (OSError, ValueError):
            pass  # a model saved without its tokenizer stays so
        keep_sentence_transformers_files(source, staging, model.config.hidden_size)
    print(f"int8 model saved to {args.output_dir}")
