"""OpenVINO's own int8: a saved model as an OpenVINO IR quantized by NNCF post-training quantization.

`export_openvino_int8(model_dir, output_dir, calibration_batches)` (the CLI: `hf-compress quantize RECIPE.yaml
--runtime openvino`) writes the float graph of the model (an int8 or low-bit model: the weights it computes with,
dequantized, see format/compressed_tensors.stock_model), converts it with OpenVINO's PyTorch frontend
(`openvino.convert_model` of its torch.export program: attention stays one ScaledDotProductAttention node), and
quantizes it with `nncf.quantize` (NNCF's transformer preset: SmoothQuant, then int8 weights per output channel and
int8 activations with static ranges measured on the calibration sequences, then fast bias correction). OpenVINO's CPU
plugin runs the result with its int8 kernels (VNNI where the CPU has it).

Why a second int8 path beside our codes in the graph (export/int8.py): OpenVINO runs ONNX's dynamic
MatMulInteger by converting the codes to int32 constants (the IR stores 4 bytes per weight) and does not reach its
int8 kernels with it; NNCF's static int8 does. Measured on an AVX-512 VNNI CPU, one thread (benchmarks/RESULTS.md,
"Where a model runs fastest"). The same recipe fields drive both paths: `calibration_batches` batches of the recipe's
train split, `smoothquant_alpha` (NNCF's SmoothQuant alpha for matmuls; NNCF's default 0.95 when unset),
`quantization_modules_to_not_convert` (kept float through NNCF's ignored scope). Outlier channels, GPTQ rounding and
per-token ranges are our PyTorch int8's and have no NNCF counterpart: they are refused by the caller.

Source: NNCF post-training quantization (https://github.com/openvinotoolkit/nncf), SmoothQuant (Xiao et al. 2023,
arXiv:2211.10438).
"""

from __future__ import annotations

import os

import numpy as np

from .arguments import check_export

__all__ = ["calibration_sequences", "export_openvino_int8"]


def calibration_sequences(
    calibration_batches: list[dict],
    names: tuple[str, ...],
    max_length: int | None = None,
    field: str = "calibration_batches",
) -> list[dict[str, np.ndarray]]:
    """Padded batches (dicts of (batch, sequence) tensors or arrays) as NNCF's calibration items: one sequence per
    item with its padding cut (statistics per real token, not per pad), int64 arrays of shape (1, length).

    Raises ValueError when the batches hold no sequence, lack one of the model's inputs, or hold a sequence longer
    than `max_length` tokens (the positions the model reads: such a sequence fails inside the runtime, e.g. RoBERTa's
    position gather, after minutes of work). `field` names the argument in the message."""
    from ..checks import invalid

    items = []
    for batch in calibration_batches or []:
        missing = [name for name in names if name not in batch]
        if missing:
            raise invalid(field, f"a batch with {sorted(batch)}", f"batches holding {list(names)}")
        arrays = {name: np.asarray(batch[name], dtype=np.int64) for name in names}
        longest = int(arrays["attention_mask"].sum(-1).max(initial=0))
        if max_length is not None and longest > max_length:
            raise invalid(
                field,
                f"a batch with a sequence of {longest} tokens",
                f"sequences of at most {max_length} tokens, the positions the model reads (truncate them)",
            )
        for row in range(arrays["input_ids"].shape[0]):
            length = int(arrays["attention_mask"][row].sum())
            items.append({name: array[row : row + 1, :length].copy() for name, array in arrays.items()})
    if not items:
        raise invalid(field, len(calibration_batches or []), "at least one batch of tokenized text")
    return items


def _float_model(model):
    """The model with stock float modules: as it is when float, else the weights its int8/low-bit modules compute
    with, dequantized (so NNCF quantizes what the artifact computes, not the float model it came from)."""
    from ..format.compressed_tensors import stock_model

    try:
        return stock_model(model)[0]
    except ValueError:
        return model  # float already


def _linears_named(model, modules: list[str]) -> list[str]:
    """The full names of the model's Linears that `modules` names (exactly, or as a name suffix, as transformers'
    modules_to_not_convert), checked before any graph work: a name that matches no Linear is an error."""
    import torch

    from ..checks import invalid

    linears = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    unknown = [m for m in modules if not any(n == m or n.endswith("." + m) for n in linears)]
    if unknown:
        raise invalid(
            "quantization_modules_to_not_convert",
            modules,
            f"names of Linear modules of the model (no Linear is named {unknown}; e.g. {linears[-1]!r})",
        )
    return [n for n in linears if any(n == m or n.endswith("." + m) for m in modules)]


def _matmuls_of(ov_model, linears: list[str]) -> list[str]:
    """The OpenVINO MatMul nodes whose weight constant is the weight of one of `linears` (full module names): NNCF's
    ignored scope names nodes, not modules. The PyTorch frontend names a parameter's constant after its path in the
    exported module with "_" for ".", e.g. `model_classifier_weight:0` (the model is wrapped as `model`)."""
    if not linears:
        return []
    wanted = tuple("_" + name.replace(".", "_") + "_weight" for name in linears)
    names = []
    for op in ov_model.get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        source = op.input_value(1).get_node()
        while source.get_type_name() in ("Convert", "Transpose", "Reshape") and source.get_input_size():
            source = source.input_value(0).get_node()
        if source.get_type_name() != "Constant":
            continue
        tensors = {name.split(":")[0] for name in source.output(0).get_names()}
        if any(tensor.endswith(wanted) for tensor in tensors):
            names.append(op.get_friendly_name())
    return names


def _count(ov_model, type_name: str) -> int:
    return sum(op.get_type_name() == type_name for op in ov_model.get_ordered_ops())


def export_openvino_int8(
    model_dir: str,
    output_dir: str,
    calibration_batches: list[dict],
    smoothquant_alpha: float | None = None,
    modules_to_not_convert: list[str] | None = None,
    precision: str = "f32",
    overwrite: bool = False,
    check_batches: list[dict] | None = None,
) -> dict:
    """Write the model saved in `model_dir` to `output_dir` as an OpenVINO IR quantized to int8 by NNCF
    post-training quantization on `calibration_batches` (padded tokenized batches, e.g. `hf-compress quantize`'s
    calibration data); return the export record (also in output_dir/config.json under "export").

    `smoothquant_alpha`: NNCF's SmoothQuant strength for matmuls in [0, 1] (None: NNCF's default for transformers,
    0.95). `modules_to_not_convert`: modules (names or name suffixes, e.g. ["classifier"]) kept float.
    `precision`: OpenVINO's inference precision recorded for serving (the non-int8 operations), "f32" or "bf16".
    `check_batches`: padded batches of held-out text of the calibration's kind (e.g. the recipe's train split after
    the calibration batches), on which the IR is checked against the PyTorch model with the int8 bound of export();
    None: the export's sample of random vocabulary words. Why real text when there is some: static activation ranges
    are measured on the calibration text, and random words fall outside them where real text does not (measured on a
    CoNLL-2003 student: 98.9% of clear token decisions kept on random words). The IR is written only within the bound.
    Raises ValueError before any work for a bad argument, ImportError without nncf, and
    ValueError after quantization when the file is beyond its bound (nothing is written then).
    """
    import importlib.util

    from ..checks import check_choice, invalid, require

    plan = check_export(model_dir, output_dir, "openvino", None, precision, overwrite)
    if importlib.util.find_spec("nncf") is None:
        raise invalid(
            "runtime",
            "openvino",
            "a runtime whose packages are installed (nncf missing: pip install 'hf_compress[export]')",
        )
    if smoothquant_alpha is not None:
        ok = isinstance(smoothquant_alpha, (int, float)) and 0.0 <= float(smoothquant_alpha) <= 1.0
        require(ok, "smoothquant_alpha", smoothquant_alpha, "null or a number in [0, 1]")
    check_choice("precision", precision, ("f32", "bf16"))
    from .. import __version__
    from ..evaluation.measure import linear_sparsity
    from ..loading import load_saved_model
    from ..tasks import task_for_model
    from ..trainer.saving import staged_directory
    from . import _version, _write_beside, graph, verify

    model = load_saved_model(plan.model_dir)
    task = task_for_model(model.config)
    outputs = graph.OUTPUTS[task.name]
    names = graph.input_names(model, plan.tokenizer)
    max_length = graph.max_sequence_length(model, plan.tokenizer)
    items = calibration_sequences(calibration_batches, names, max_length)  # refused before any graph is written
    if check_batches:
        calibration_sequences(check_batches, names, max_length, field="check_batches")
    vocab_size = min(model.config.vocab_size, len(plan.tokenizer))
    sample = verify.sample_batches(plan.tokenizer, names, max_length, vocab_size)
    if check_batches:
        batches = [{name: np.asarray(batch[name], dtype=np.int64) for name in names} for batch in check_batches]
    else:
        batches = sample
    reference = verify.torch_outputs(graph.graph_model(model, task, plan.model_dir), batches, outputs)
    float_model = _float_model(model).eval()
    kept = _linears_named(float_model, list(modules_to_not_convert or []))
    import shutil

    import nncf
    import openvino as ov
    import torch
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    example = {name: torch.from_numpy(array[:2, :8].copy()) for name, array in sample[2].items()}
    with staged_directory(plan.output_dir) as staging:
        work = os.path.join(staging, "_float")
        os.makedirs(work)
        xml_path = os.path.join(staging, graph.OPENVINO_FILE)
        # The float IR stays in the work folder: read_model maps its .bin, which must not be overwritten under it.
        float_xml = os.path.join(work, "float.xml")
        graph.write_openvino_from_torch(
            graph.graph_model(float_model, task, plan.model_dir), example, outputs, float_xml, max_length
        )
        float_ir = ov.Core().read_model(float_xml)
        ignored = _matmuls_of(float_ir, kept)
        if modules_to_not_convert and not ignored:
            raise invalid(
                "quantization_modules_to_not_convert",
                modules_to_not_convert,
                "names of Linear modules of the model (none of these computes a MatMul in its graph)",
            )
        advanced = None
        if smoothquant_alpha is not None:
            advanced = AdvancedQuantizationParameters(
                smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=float(smoothquant_alpha))
            )
        with graph.quiet():
            quantized = nncf.quantize(
                float_ir,
                nncf.Dataset(items),
                model_type=nncf.ModelType.TRANSFORMER,
                subset_size=len(items),
                ignored_scope=nncf.IgnoredScope(names=ignored) if ignored else None,
                advanced_parameters=advanced,
            )
        ov.save_model(quantized, xml_path, compress_to_fp16=False)
        fake_quantize_nodes = _count(quantized, "FakeQuantize")
        del float_ir, quantized
        shutil.rmtree(work)
        run, compiled_precision = verify.openvino_runner(xml_path, outputs)
        stats = verify.compare(reference, [run(batch) for batch in batches], batches, task.name)
        ok, bound = verify.within_bound(stats, int8=True)
        check = {"runtime": _version("openvino"), **stats, "bound": bound, "precision": compiled_precision}
        if not ok:
            raise invalid(
                "model_dir",
                plan.model_dir,
                f"a model that keeps its decisions under NNCF int8 ({bound}; measured {verify.measured(stats)} on "
                f"{stats['sequences']} sample sequences): nothing was written",
            )
        if precision == "bf16":
            check["bf16"] = verify.check_bf16(xml_path, outputs, reference, batches, task.name)
        record = {
            "format": "openvino",
            "file": graph.OPENVINO_FILE,
            "opset": None,  # converted from the PyTorch program: no ONNX graph in between
            "inputs": list(names),
            "outputs": list(outputs),
            "dynamic_axes": {"batch": 0, "sequence": 1},
            "max_sequence_length": max_length,
            "int8_matmuls": 0,  # no dynamic int8 matmul: NNCF's int8 is FakeQuantize on static ranges
            "quantization": {
                "method": "nncf post-training int8 (static activation ranges)",
                "nncf": nncf.__version__,
                "calibration_sequences": len(items),
                "smoothquant_alpha": smoothquant_alpha,
                "modules_to_not_convert": list(modules_to_not_convert or []),
                "fake_quantize_nodes": fake_quantize_nodes,
                "checked_on": "held-out text" if check_batches else "random vocabulary words",
            },
            "parameters": model.num_parameters(),
            "sparsity": linear_sparsity(model),
            "precision": precision,
            "check": check,
            "hf_compress_version": __version__,
        }
        _write_beside(staging, plan, model, record, task)
    return record
