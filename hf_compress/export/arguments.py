"""What `export` accepts, checked before any model is loaded: the fields, the two directories, the runtime installed.

Every refusal is one ValueError in the project's format, ``field=value is invalid; allowed: ...``, named by the
Python argument (the CLI's flag of the same name: --format, --opset, --precision, --overwrite; MODEL_DIR and
OUTPUT_DIR are model_dir and output_dir).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from ..checks import check_choice, invalid, is_int, require

FORMATS = ("onnx", "openvino", "compressed-tensors")
# OpenVINO's inference precision on CPU (INFERENCE_PRECISION_HINT): what serving should compile with. f32 is what the
# export is checked in; bf16 halves activation traffic on CPUs with AVX-512 BF16 or AMX and is checked by agreement.
PRECISIONS = ("f32", "bf16")
# torch.onnx's dynamo exporter translates through onnxscript's torchlib, written for opset 18; later opsets go
# through the ONNX version converter.
MIN_OPSET = 18
MAX_OPSET = 23  # the newest opset onnxruntime 1.2x and OpenVINO's ONNX frontend both read
# What each format needs installed (the `export` extra: pip install 'hf_compress[export]').
RUNTIMES = {
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "openvino": ("onnx", "onnxscript", "openvino"),
    "compressed-tensors": ("compressed_tensors",),
}
# What a saved tokenizer writes (any one of them; tokenizer.json for fast tokenizers).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")
HEAD_SUFFIXES = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")


@dataclass(frozen=True)
class ExportPlan:
    """The checked arguments: absolute directories, and the tokenizer and config read from the model directory."""

    model_dir: str
    output_dir: str
    format: str
    opset: int | None
    precision: str
    tokenizer: object
    config: object


def check_fields(format: str, opset, precision: str, overwrite) -> None:
    """The flags alone: known format and precision, an opset (ONNX only) the exporter and ONNX Runtime read, a bool."""
    check_choice("format", format, FORMATS)
    check_choice("precision", precision, PRECISIONS)
    require(
        precision == "f32" or format == "openvino",
        "precision",
        precision,
        "'f32' with format='onnx' (bf16 is an OpenVINO inference precision: format='openvino')",
    )
    require(
        opset is None or format == "onnx",
        "opset",
        opset,
        f"null with format={format!r} (the ONNX opset applies to format='onnx' only: a compressed-tensors "
        "checkpoint is no graph, and OpenVINO's IR is converted from the PyTorch program)",
    )
    if opset is not None:
        ok = is_int(opset) and MIN_OPSET <= opset <= MAX_OPSET
        require(
            ok,
            "opset",
            opset,
            f"null (the exporter's default, {MIN_OPSET}) or an integer in [{MIN_OPSET}, {MAX_OPSET}]",
        )
    require(isinstance(overwrite, bool), "overwrite", overwrite, "True or False")


def check_runtime(format: str) -> None:
    """The packages `format` needs are installed (found without importing them)."""
    missing = [name for name in RUNTIMES[format] if importlib.util.find_spec(name) is None]
    if missing:
        raise invalid(
            "format",
            format,
            f"a format whose packages are installed ({', '.join(missing)} missing: pip install 'hf_compress[export]')",
        )


def check_output_dir(output_dir, model_dir: str, overwrite: bool) -> str:
    """A new or empty directory, or any directory with overwrite; never the model's own directory or inside it."""
    if not isinstance(output_dir, (str, os.PathLike)) or not str(output_dir):
        raise invalid("output_dir", output_dir, "a directory path")
    target = os.path.realpath(output_dir)
    source = os.path.realpath(model_dir)
    if target == source or target.startswith(source + os.sep):
        raise invalid("output_dir", output_dir, f"a directory outside model_dir={model_dir!r} (it would replace it)")
    if os.path.exists(target) and not os.path.isdir(target):
        raise invalid("output_dir", output_dir, "a directory path (a file is there)")
    if os.path.isdir(target) and os.listdir(target) and not overwrite:
        what = "a model" if any(f.endswith((".onnx", ".xml", "config.json")) for f in os.listdir(target)) else "files"
        raise invalid(
            "output_dir",
            output_dir,
            f"a new or empty directory (this one holds {what}), or overwrite=True (--overwrite)",
        )
    return os.path.abspath(output_dir)


def _is_sentence_transformer(model_dir: str, architectures: list[str]) -> bool:
    """A base model (`BertModel`, ...) whose folder declares its pooling (raises ValueError for a pooling mode
    hf_compress does not compute)."""
    from ..tasks.sentence_embedding import read_pooling

    return any(a.endswith("Model") for a in architectures) and read_pooling(model_dir) is not None


def check_model_dir(model_dir):
    """A local directory that save_pretrained wrote, with a task head export supports and its tokenizer beside it;
    returns (absolute path, config, tokenizer)."""
    from transformers import AutoConfig, AutoTokenizer

    if not isinstance(model_dir, (str, os.PathLike)) or not os.path.isdir(model_dir):
        raise invalid("model_dir", model_dir, "a local directory that save_pretrained wrote (nothing is there)")
    model_dir = os.path.abspath(model_dir)
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise invalid("model_dir", model_dir, "a directory that save_pretrained wrote (this one has no config.json)")
    config = AutoConfig.from_pretrained(model_dir)
    architectures = getattr(config, "architectures", None) or []
    if not any(a.endswith(HEAD_SUFFIXES) for a in architectures) and not _is_sentence_transformer(
        model_dir, architectures
    ):
        raise invalid(
            "model_dir",
            model_dir,
            f"a model with a {', '.join(s.removeprefix('For') for s in HEAD_SUFFIXES)} head, or a "
            "sentence-transformers base model (modules.json with a Pooling module) (config.json names "
            f"{architectures or 'no architecture'})",
        )
    if not any(os.path.isfile(os.path.join(model_dir, name)) for name in TOKENIZER_FILES):
        # transformers 5 would build an empty tokenizer of the config's class here
        raise invalid(
            "model_dir",
            model_dir,
            "a model saved with its tokenizer (tokenizer.save_pretrained(model_dir); none of "
            f"{', '.join(TOKENIZER_FILES)} is there)",
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError, TypeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise invalid(
            "model_dir",
            model_dir,
            f"a model saved with its tokenizer (tokenizer.save_pretrained(model_dir)): {reason}",
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise invalid("model_dir", model_dir, "a model whose tokenizer loads as a fast tokenizer (tokenizer.json)")
    if len(tokenizer) > config.vocab_size:
        raise invalid(
            "model_dir",
            model_dir,
            f"a model whose tokenizer's ids fit its embedding ({len(tokenizer)} tokens, vocab_size "
            f"{config.vocab_size})",
        )
    return model_dir, config, tokenizer


def check_export(model_dir, output_dir, format: str, opset, precision: str, overwrite) -> ExportPlan:
    """Everything `export` refuses, before any model is loaded: fields first, then the runtime, then directories."""
    check_fields(format, opset, precision, overwrite)
    check_runtime(format)
    model_dir, output_dir = (os.fspath(p) if isinstance(p, os.PathLike) else p for p in (model_dir, output_dir))
    model_dir, config, tokenizer = check_model_dir(model_dir)
    output_dir = check_output_dir(output_dir, model_dir, overwrite)
    return ExportPlan(model_dir, output_dir, format, opset, precision, tokenizer, config)
