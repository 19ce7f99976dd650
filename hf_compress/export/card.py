"""What lies beside an exported file: config.json (labels, lengths and the export's record) and a README card."""

from __future__ import annotations

import json
import os

CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
SERVING_DOCS = "docs/serving.md"


def write_config(directory: str, config, record: dict) -> None:
    """The model's config.json (labels, max_position_embeddings, provenance) without its quantization_config (the
    graph holds what it described; transformers would look for weights of that format), plus `export`: `record`.
    A compressed-tensors checkpoint keeps the config.json its compressor wrote (its quantization_config is what
    transformers loads it by), with `export` added."""
    path = os.path.join(directory, CONFIG_NAME)
    if record["format"] == "compressed-tensors":
        with open(path) as f:
            data = json.load(f)
        data["export"] = record
        with open(path, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")
        return
    data = config.to_diff_dict()  # what save_pretrained writes: the values that differ from the defaults
    data.pop("quantization_config", None)
    data.pop("_name_or_path", None)  # a path of this machine
    data["export"] = record
    with open(path, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def _usage(record: dict, task: str) -> str:
    """The shortest serving snippet for the format and head."""
    names = repr(tuple(record["inputs"]))
    if record["format"] == "compressed-tensors" and task == "sentence-embedding":
        return (
            "```python\n# pip install sentence-transformers compressed-tensors  (hf_compress is not needed)\n"
            "from sentence_transformers import SentenceTransformer\n\n"
            'model = SentenceTransformer(".")\n'
            'embeddings = model.encode(["..."])  # pooled (and normalised) as the source model was\n```'
        )
    if record["format"] == "compressed-tensors":
        read = {
            "text-classification": "label = model.config.id2label[int(outputs.logits[0].argmax())]",
            "token-classification": "tags = [model.config.id2label[int(i)] for i in outputs.logits[0].argmax(-1)]",
            "question-answering": "start, end = outputs.start_logits[0].argmax(), outputs.end_logits[0].argmax()",
        }[task]
        return (
            "```python\n# pip install transformers compressed-tensors  (hf_compress is not needed)\n"
            f"from transformers import AutoTokenizer, {record['architecture']}\n\n"
            'tokenizer = AutoTokenizer.from_pretrained(".")\n'
            f'model = {record["architecture"]}.from_pretrained(".")\n'
            'outputs = model(**tokenizer(["..."], return_tensors="pt"))\n'
            f"{read}\n```"
        )
    if record["format"] == "onnx":
        load = (
            "import onnxruntime as ort\n"
            f'session = ort.InferenceSession("{record["file"]}", providers=["CPUExecutionProvider"])\n'
            "outputs = session.run(None, feeds)"
        )
    else:
        hint = record["precision"]
        load = (
            "import openvino as ov\n"
            f'properties = {{"INFERENCE_PRECISION_HINT": "{hint}"}}\n'
            f'compiled = ov.Core().compile_model("{record["file"]}", "CPU", properties)\n'
            "outputs = list(compiled(feeds).values())"
        )
    read = {
        "text-classification": "label = config.id2label[int(outputs[0][0].argmax())]",
        "token-classification": "tags = [config.id2label[int(i)] for i in outputs[0][0].argmax(-1)]  # one per token",
        "question-answering": "start, end = int(outputs[0][0].argmax()), int(outputs[1][0].argmax())  # token span",
        "sentence-embedding": "embeddings = outputs[0]  # (batch, hidden), pooled; unit length if it normalises",
    }[task]
    return (
        "```python\nfrom transformers import AutoConfig, AutoTokenizer\n\n"
        'tokenizer = AutoTokenizer.from_pretrained(".")\n'
        'config = AutoConfig.from_pretrained(".")\n'
        'inputs = tokenizer(["..."], return_tensors="np")\n'
        f"feeds = {{name: inputs[name] for name in {names}}}\n"
        f"{load}\n{read}\n```"
    )


def write_card(directory: str, config, record: dict, task, source_name: str) -> None:
    """A README stating the source model, what compression applied, the file, its inputs and outputs, the check's
    numbers and how to serve it (docs/serving.md has post-processing for every head)."""
    from huggingface_hub import ModelCard, ModelCardData

    from ..hub import LIBRARY_TAG, method_tags
    from ..provenance import applied, step_label
    from . import verify

    check = record["check"]
    steps = [
        step_label(step, details)[0] for step, details in applied(config).items() if step != "hf_compress_version"
    ]
    library = {"onnx": "onnx", "openvino": "openvino"}.get(record["format"], "transformers")
    data = ModelCardData(
        library_name=library,
        tags=[LIBRARY_TAG, library, *method_tags(config)],
        pipeline_tag=task.pipeline_tag,
    )
    measured = verify.measured(check)
    runtime = check["runtime"] + (f" (INFERENCE_PRECISION_HINT {check['precision']})" if "precision" in check else "")
    lines = [
        f"# {source_name} ({record['format']})",
        "",
        f"`{source_name}` exported by hf_compress {record['hf_compress_version']} for {task.name}: "
        f"`{record['file']}`, {'opset ' + str(record['opset']) + ', ' if record['opset'] else ''}"
        "dynamic batch and sequence axes, sequences up to "
        f"{record['max_sequence_length']} tokens, with its tokenizer and config.json"
        + (
            ": the graph pools (and normalises, as the model's sentence-transformers files say) the token states into "
            "`sentence_embedding`. In the check below, 'logits' are those embeddings and a decision is each "
            "sequence's nearest neighbour (cosine) among the other sequences of its batch."
            if task.name == "sentence-embedding"
            else " (labels in `id2label`)."
        )
        + (
            f" Stored as compressed-tensors ({', '.join(record['quantization']['formats'])}): stock transformers "
            "loads it with the `compressed-tensors` package installed."
            if record["format"] == "compressed-tensors"
            else ""
        ),
        "",
        "Compression applied: " + ("; ".join(steps) if steps else "none recorded") + ".",
        "",
        f"Inputs: {', '.join('`' + n + '`' for n in record['inputs'])} (int64, batch × sequence). "
        f"Outputs: {', '.join('`' + n + '`' for n in record['outputs'])}."
        + (
            f" {record['int8_matmuls']} int8 matmuls (DynamicQuantizeLinear + MatMulInteger)."
            if record.get("int8_matmuls")
            else ""
        ),
        "",
        "## Check at export",
        "",
        f"Run in {runtime} on {check['sequences']} sample sequences and compared with the PyTorch model: {measured} "
        f"(bound: {check['bound']}).",
    ]
    if "bf16" in check:
        bf16 = check["bf16"]
        lines += [
            "",
            f"With INFERENCE_PRECISION_HINT bf16 (compiled as {bf16['precision']}): {verify.measured(bf16)} "
            f"(bound: {bf16['bound']}).",
        ]
    lines += [
        "",
        "## How to use",
        "",
        _usage(record, task.name),
        "",
        f"Post-processing for every head (NER word tags, QA answer spans): hf_compress's {SERVING_DOCS}.",
    ]
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")
    card.save(os.path.join(directory, CARD_NAME))
