"""A saved model's graph as a file: torch.export with dynamic batch and sequence axes, written as ONNX by torch.onnx's
dynamo exporter (+ onnxscript), or converted to OpenVINO IR by OpenVINO's PyTorch frontend.

Why OpenVINO from the PyTorch program and not from the ONNX graph (as until 2026-12-04): attention stays one
ScaledDotProductAttention node (1.1x faster int8 on the MiniLM teacher), and int8 codes stay one byte each (see
write_openvino_from_torch). Not `convert_model(model, example_input=...)`: it traces with TorchScript and bakes a
padding branch of transformers' mask code into the graph.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import logging
import os
import warnings

import torch
from torch import nn

ONNX_FILE = "model.onnx"
# optimum-intel's file names, so that its loaders (OVModelForSequenceClassification, ...) find the files too
OPENVINO_FILE = "openvino_model.xml"
OPENVINO_WEIGHTS = "openvino_model.bin"
# The tensors each head returns, in the order the graph outputs them.
OUTPUTS = {
    "text-classification": ("logits",),
    "token-classification": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
    # the pooled (and, as the folder's Normalize says, unit-length) sentence vector: sentence-transformers' name
    "sentence-embedding": ("sentence_embedding",),
}
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Above this many bytes of weights the ONNX file keeps them in model.onnx.data (protobuf stops at 2 GB).
EXTERNAL_DATA_BYTES = 1_500_000_000


class HeadOutputs(nn.Module):
    """The model called with the tokenizer's tensors, returning its head's outputs as a tuple in a fixed order."""

    def __init__(self, model: nn.Module, output_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.output_names = output_names

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        outputs = self.model(**inputs)
        return tuple(outputs[name] for name in self.output_names)


class PooledEmbedding(nn.Module):
    """A base model followed by the pooling its sentence-transformers files declare: the graph of an embedding model
    returns {"sentence_embedding": (batch, hidden) float32}, so that serving needs no pooling code of its own."""

    def __init__(self, model: nn.Module, pooling):
        super().__init__()
        self.model = model
        self.pooling = pooling

    def forward(self, **inputs):
        hidden = self.model(**inputs).last_hidden_state
        return {"sentence_embedding": self.pooling(hidden, inputs.get("attention_mask"))}


def graph_model(model: nn.Module, task, model_dir: str) -> nn.Module:
    """What the graph computes: the model itself for a head, the model and its pooling for sentence embeddings (the
    pooling read from `model_dir`'s sentence-transformers files, checked by `check_model_dir`)."""
    if task.name != "sentence-embedding":
        return model
    from ..tasks.sentence_embedding import read_pooling

    return PooledEmbedding(model, read_pooling(model_dir)).eval()


def input_names(model: nn.Module, tokenizer) -> tuple[str, ...]:
    """The graph's inputs: input_ids and attention_mask, and token_type_ids when the tokenizer gives them and the
    model reads them."""
    accepted = inspect.signature(model.forward).parameters
    given = set(tokenizer.model_input_names) | {"input_ids", "attention_mask"}
    return tuple(name for name in INPUTS if name in given and name in accepted)


def max_sequence_length(model: nn.Module, tokenizer) -> int:
    """The longest input the model reads: max_position_embeddings, less RoBERTa-style position offsets (positions
    start after the padding index), and no more than the tokenizer's model_max_length."""
    config = model.config
    length = config.max_position_embeddings
    embeddings = getattr(model.base_model, "embeddings", None)
    offset = getattr(embeddings, "padding_idx", None)
    if offset is not None:
        length -= offset + 1
    tokenizer_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < length:
        length = tokenizer_max
    return length


@contextlib.contextmanager
def quiet():
    """The exporters' progress lines, warnings and log records stay out of the user's terminal."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def parameter_bytes(model: nn.Module) -> int:
    """Bytes of the distinct parameters and buffers (a shared tensor counted once)."""
    seen = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        seen[id(tensor)] = tensor.numel() * tensor.element_size()
    return sum(seen.values())


def write_onnx(
    model: nn.Module,
    example: dict[str, torch.Tensor],
    output_names: tuple[str, ...],
    path: str,
    opset: int | None,
    max_length: int,
) -> tuple[int, int]:
    """Export `model` (eval mode) to `path` with dynamic batch and sequence axes; returns the opset written and the
    number of int8 matmuls written as DynamicQuantizeLinear + MatMulInteger (see int8.py)."""
    import onnx

    from .int8 import TRANSLATIONS, int8_export_forms

    names = tuple(example)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=max_length)
    wrapped = HeadOutputs(model, output_names).eval()
    with int8_export_forms(model) as int8_matmuls, torch.no_grad(), quiet():
        program = torch.onnx.export(
            wrapped,
            (),
            kwargs=dict(example),
            input_names=list(names),
            output_names=list(output_names),
            opset_version=opset,
            dynamic_shapes={name: {0: batch, 1: sequence} for name in names},
            custom_translation_table=TRANSLATIONS,
            dynamo=True,
            verbose=False,
        )
    for node in program.model.graph.all_nodes():
        # the exporter's debug records (stack traces with this machine's paths, ~80% of a tiny model's file)
        node.metadata_props.clear()
    program.save(path, external_data=parameter_bytes(model) > EXTERNAL_DATA_BYTES)
    written = onnx.load(path, load_external_data=False)
    return next(o.version for o in written.opset_import if o.domain in ("", "ai.onnx")), int8_matmuls


def write_openvino_from_torch(
    model: nn.Module,
    example: dict[str, torch.Tensor],
    output_names: tuple[str, ...],
    xml_path: str,
    max_length: int,
) -> int:
    """Convert a model (eval mode) with OpenVINO's PyTorch frontend, from torch.export with dynamic batch and
    sequence axes, and save it as IR (.xml + .bin, float weights kept in fp32), inputs and outputs named as write_onnx
    names them; returns the number of int8 matmuls, written as int8 compressed weights (see
    int8.compressed_weight_matmul).

    Why not the ONNX graph for OpenVINO: from the PyTorch program the frontend keeps attention as one
    ScaledDotProductAttention node, where from ONNX it is MatMul + Softmax + MatMul (measured on the MiniLM tweets
    teacher, one thread, AVX-512 VNNI: its NNCF int8 IR runs 1.10x faster at batch 32 and 1.14x at batch 1, at the
    same agreement), and int8 codes stay one byte each (ONNX's MatMulInteger becomes int32 constants).
    """
    import openvino as ov

    from .int8 import compressed_weight_matmul, int8_export_forms

    names = tuple(example)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence", max=max_length)
    wrapped = HeadOutputs(model, output_names).eval()
    with int8_export_forms(model, compressed_weight_matmul) as int8_matmuls, torch.no_grad(), quiet():
        program = torch.export.export(
            wrapped, (), kwargs=dict(example), dynamic_shapes={name: {0: batch, 1: sequence} for name in names}
        )
        converted = ov.convert_model(program)
    # The frontend names inputs after the program's placeholders (the forward's argument names) and outputs after
    # internal nodes: each port gets the tokenizer's or the head's name, by that name only.
    for port in converted.inputs:
        (name,) = [n for n in names if n in port.get_names() or port.get_any_name().startswith(n)]
        port.get_tensor().set_names({name})
    for port, name in zip(converted.outputs, output_names):
        port.get_tensor().set_names({name})
    ov.save_model(converted, xml_path, compress_to_fp16=False)
    return int8_matmuls


def graph_file(directory: str, format: str) -> str:
    """The file a format's export writes in `directory`."""
    return os.path.join(directory, ONNX_FILE if format == "onnx" else OPENVINO_FILE)
