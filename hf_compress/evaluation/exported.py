"""A folder written by `hf-compress export`, run by its runtime and called like the transformers model it came from.

`hf-compress report` takes such folders beside saved models, so one table compares the PyTorch model with its ONNX
Runtime and OpenVINO files: every row's score, agreement and latency are measured by running that row's file in its
runtime on the same inputs, never carried over from the PyTorch model.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from torch import nn
from transformers.utils import ModelOutput

from ..checks import invalid

CONFIG_NAME = "config.json"
# The files of each format (what counts as its bytes on disk): the graph and, for OpenVINO, its weights.
FORMAT_FILES = {"onnx": ("model.onnx", "model.onnx.data"), "openvino": ("openvino_model.xml", "openvino_model.bin")}


def export_record(directory: str) -> dict | None:
    """The `export` record of `directory/config.json` (None for a folder `hf-compress export` did not write)."""
    path = os.path.join(directory, CONFIG_NAME)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        record = json.load(f).get("export")
    return record if isinstance(record, dict) and record.get("format") in FORMAT_FILES else None


class ExportedModel(nn.Module):
    """The exported file of `directory` in its runtime (ONNX Runtime or OpenVINO, CPU), as a module.

    `forward(**inputs)` takes the tokenizer's tensors (batch, sequence) and returns a ModelOutput of the exported
    outputs (`logits`, or `start_logits` / `end_logits`) as float32 tensors, like the PyTorch model. `config` is the
    folder's transformers config (labels, positions, and `export`: the record). `num_parameters()` and `sparsity` are
    the PyTorch model's, recorded at export (0 when an older record lacks them). OpenVINO runs with the inference
    precision the export recorded. `num_threads`: the runtime's intra-op CPU threads (None: the runtime's default,
    every core), as `hf-compress report --threads` sets torch's.
    Raises ValueError for a folder without an export record, ImportError when its runtime is not installed
    (pip install 'hf_compress[export]').
    """

    def __init__(self, directory: str, num_threads: int | None = None):
        super().__init__()
        from transformers import AutoConfig

        record = export_record(directory)
        if record is None:
            raise invalid("model_dir", directory, "a folder written by hf-compress export (config.json with 'export')")
        self.directory, self.record = directory, record
        self.config = AutoConfig.from_pretrained(directory)
        path = os.path.join(directory, record["file"])
        self.input_names = tuple(record["inputs"])
        self.output_names = tuple(record["outputs"])
        self._run = _runner(record["format"], path, self.output_names, record.get("precision", "f32"), num_threads)
        # No weights of its own; a zero-size parameter keeps `next(model.parameters()).device` (CPU) working.
        self._device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, **inputs) -> ModelOutput:
        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise invalid("inputs", sorted(inputs), f"the exported inputs {list(self.input_names)}")
        feeds = {n: np.ascontiguousarray(inputs[n].detach().cpu().numpy().astype(np.int64)) for n in self.input_names}
        outputs = self._run(feeds)
        return ModelOutput({n: torch.from_numpy(np.asarray(outputs[n], dtype=np.float32)) for n in self.output_names})

    @property
    def architecture(self) -> str:
        """The class of the model it was exported from (e.g. BertForSequenceClassification): the head it serves."""
        return (getattr(self.config, "architectures", None) or [type(self).__name__])[0]

    def num_parameters(self, *args, **kwargs) -> int:
        return int(self.record.get("parameters") or 0)

    @property
    def sparsity(self) -> float:
        """The encoder's weight sparsity of the PyTorch model, as recorded at export (0.0 when not recorded)."""
        return float(self.record.get("sparsity") or 0.0)

    def bytes_on_disk(self) -> int:
        """Bytes of the exported files (the graph and its weights)."""
        names = FORMAT_FILES[self.record["format"]]
        paths = [os.path.join(self.directory, n) for n in names]
        return sum(os.path.getsize(p) for p in paths if os.path.isfile(p))


def _runner(format: str, path: str, output_names: tuple[str, ...], precision: str, num_threads: int | None):
    """feeds -> {output name: array}, on CPU with `num_threads` intra-op threads (None: the runtime's default)."""
    if format == "onnx":
        import onnxruntime as ort

        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]
        return lambda feeds: dict(zip(names, session.run(None, feeds)))
    import openvino as ov

    from ..export.verify import OPENVINO_PRECISIONS

    properties = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision]}
    if num_threads is not None:
        properties["INFERENCE_NUM_THREADS"] = num_threads
    compiled = ov.Core().compile_model(path, "CPU", properties)
    # By name: a compiled output also carries the names of the nodes fused into it (see export/verify.py).
    outputs = {name: compiled.output(name) for name in output_names}

    def run(feeds):
        results = compiled(feeds)
        return {name: results[output] for name, output in outputs.items()}

    return run
