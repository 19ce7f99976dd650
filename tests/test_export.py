"""hf_compress.export: every artifact kind and head as ONNX and OpenVINO files that compute what PyTorch computes.

One matrix over artifact kind x head x format (every kind once with the sequence head for both formats, every head
once for the plain student; one OpenVINO case goes through the CLI). Each exported folder is checked here
independently of the export's own check (new batch size and length, new padding), served by a fresh interpreter that
imports only the runtime and `tokenizers`, and the ALBERT-style model's shared layer is looked for in the file. Bad
input is refused before any model loads; a file beyond its bound leaves nothing behind.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from transformers import (
    AutoTokenizer,
    BertForSequenceClassification,
    BertModel,
)

import hf_compress
from hf_compress.cli.main import main
from hf_compress.export import export, export_onnx, export_openvino, graph, verify
from hf_compress.loading import load_saved_model
from hf_compress.tasks.sentence_embedding import Pooling, write_sentence_transformers_files
from tests.testing_utils import HEADS, OUTPUTS, VOCAB, run_python, tiny_bert_config, tiny_tokenizer

FORMATS = ("onnx", "openvino")
TASKS = ("text-classification", "token-classification", "question-answering", "sentence-embedding")
OUTPUTS = {**OUTPUTS, "sentence-embedding": ("sentence_embedding",)}
# a sentence-transformers folder's pooling, as all-MiniLM-L6-v2 declares it
POOLING = Pooling("mean", normalize=True)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def _ffn_sliced(model, tokenizer):
    return hf_compress.prune_ffn_(model, None, sparsity=0.5, method="magnitude"), tokenizer


def _albert(model, tokenizer):
    return hf_compress.to_albert(model, embedding_size=16, num_hidden_groups=1), tokenizer


def _vocabulary(model, tokenizer):
    kept = [list(range(5, VOCAB, 3))]  # a third of the words
    return model, hf_compress.prune_vocabulary_(model, tokenizer, kept)


def _low_rank(model, tokenizer):
    return hf_compress.factorize_linear_(model, rank_ratio=0.5, method="svd"), tokenizer


def _int8(model, tokenizer):
    return hf_compress.quantize_(model), tokenizer


def _low_bit(model, tokenizer):
    # the headline recipe's layout: every Linear and the word embeddings at 4 bits (packed two codes per byte)
    return hf_compress.bake_low_bit_(hf_compress.fake_quantize_(model, 4, modules="all")), tokenizer


# artifact kind -> transform of (tiny BERT with a head, its tokenizer)
KINDS = {
    "student": lambda model, tokenizer: (model, tokenizer),
    "ffn-sliced": _ffn_sliced,
    "albert": _albert,
    "vocabulary": _vocabulary,
    "low-rank": _low_rank,
    "int8": _int8,
    "low-bit": _low_bit,
}
INT8_KINDS = ("int8", "low-bit")
CASES = [(kind, "text-classification", f) for kind in KINDS for f in FORMATS]
CASES += [("student", task, f) for task in TASKS[1:] for f in FORMATS]
CASES += [("int8", "sentence-embedding", "onnx")]  # an int8 embedding model, its pooling in the graph
# One case goes through the CLI, with the bf16 precision (checked in f32, then by agreement in bf16).
VIA_CLI = {("student", "text-classification", "openvino"): ["--precision", "bf16"]}


class Exports:
    """The artifacts and their exports, each made once per test session, when a test first asks for it."""

    def __init__(self, root: Path):
        self.root = root
        self.models: dict[tuple[str, str], Path] = {}
        self.exports: dict[tuple[str, str, str], tuple[Path, dict]] = {}

    def model_dir(self, kind: str, task: str) -> Path:
        if (kind, task) not in self.models:
            directory = self.root / "models" / f"{kind}-{task}"
            torch.manual_seed(0)
            # initializer_range 0.2: logits of order 1, so that a wrong graph shows and argmax decisions are clear
            labels = 2 if task == "question-answering" else 3  # QA: start and end
            config = tiny_bert_config(initializer_range=0.2, num_labels=labels)
            base = task == "sentence-embedding"
            model = (BertModel(config, add_pooling_layer=False) if base else HEADS[task](config)).eval()
            if task == "token-classification":  # IOB tags, as NER models have them
                model.config.id2label = dict(enumerate(["O", "B-PER", "I-PER"]))
                model.config.label2id = {tag: i for i, tag in model.config.id2label.items()}
            tokenizer = tiny_tokenizer(directory / "vocab")
            model, tokenizer = KINDS[kind](model, tokenizer)
            model.save_pretrained(directory)
            tokenizer.save_pretrained(directory)
            if task == "sentence-embedding":
                write_sentence_transformers_files(str(directory), POOLING, model.config.hidden_size, 64)
            self.models[(kind, task)] = directory
        return self.models[(kind, task)]

    def get(self, kind: str, task: str, format: str) -> tuple[Path, dict]:
        if (kind, task, format) not in self.exports:
            source = self.model_dir(kind, task)
            out = self.root / "exports" / f"{kind}-{task}-{format}"
            flags = VIA_CLI.get((kind, task, format))
            if flags is not None:
                assert main(["export", str(source), str(out), "--format", format, *flags]) == 0
                record = json.loads((out / "config.json").read_text())["export"]
            else:
                record = export(source, out, format=format)
            self.exports[(kind, task, format)] = (out, record)
        return self.exports[(kind, task, format)]


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> Exports:
    return Exports(tmp_path_factory.mktemp("export"))


def _inputs(tokenizer, names, texts) -> dict[str, np.ndarray]:
    encoded = tokenizer(texts, padding=True, return_tensors="np")
    return {name: encoded[name].astype(np.int64) for name in names}


def _run_file(out: Path, record: dict, feeds: dict) -> dict[str, np.ndarray]:
    if record["format"] == "onnx":
        return verify.onnxruntime_runner(str(out / graph.ONNX_FILE))(feeds)
    return verify.openvino_runner(str(out / graph.OPENVINO_FILE), tuple(record["outputs"]))[0](feeds)


def _pytorch(source: Path, feeds: dict, task: str) -> dict[str, np.ndarray]:
    model = load_saved_model(str(source))
    with torch.inference_mode():
        outputs = model(**{name: torch.from_numpy(array) for name, array in feeds.items()})
    if task == "sentence-embedding":  # the pooling the folder declares, as sentence-transformers applies it
        mask = torch.from_numpy(feeds["attention_mask"])
        return {"sentence_embedding": POOLING(outputs.last_hidden_state, mask).numpy()}
    return {name: outputs[name].numpy() for name in OUTPUTS[task]}


def _decisions(logits: np.ndarray, mask: np.ndarray, task: str) -> np.ndarray:
    if task == "text-classification":
        return logits.argmax(-1)
    if task == "sentence-embedding":  # each sequence's nearest other sequence by cosine
        unit = logits / np.linalg.norm(logits, axis=-1, keepdims=True)
        similarity = unit @ unit.T
        np.fill_diagonal(similarity, -np.inf)
        return similarity.argmax(-1)
    if task == "token-classification":
        return logits.argmax(-1)[mask]
    return np.where(mask, logits, -np.inf).argmax(-1)  # the answer's start (end) among the real tokens


def _assert_within_bound(got: dict, want: dict, mask: np.ndarray, task: str, int8: bool) -> None:
    """Float files: max |difference| <= 1e-4 where serving reads; int8 files: the same decisions, logits close."""
    for name, expected in want.items():
        actual = got[name]
        assert actual.shape == expected.shape
        per_sequence = task in ("text-classification", "sentence-embedding")
        diff = np.abs(actual - expected)[slice(None) if per_sequence else mask].max()
        if int8:
            agreement = (_decisions(actual, mask, task) == _decisions(expected, mask, task)).mean()
            assert agreement >= 0.995 and diff < 0.1, f"{name}: argmax agreement {agreement:.3f}, max diff {diff:.2e}"
        else:
            assert diff <= 1e-4, f"{name}: max |difference| {diff:.2e}"


@pytest.mark.parametrize("kind,task,format", CASES)
def test_export_computes_what_pytorch_computes(exports, kind, task, format):
    out, record = exports.get(kind, task, format)
    source = exports.model_dir(kind, task)
    int8 = kind in INT8_KINDS
    # The folder: the file, the tokenizer, config.json with labels and the record, a card; nothing else.
    files = {graph.ONNX_FILE} if format == "onnx" else {graph.OPENVINO_FILE, graph.OPENVINO_WEIGHTS}
    assert set(os.listdir(out)) == files | {"config.json", "README.md", "tokenizer.json", "tokenizer_config.json"}
    config = json.loads((out / "config.json").read_text())
    assert config["export"] == record and "quantization_config" not in config
    if task in ("text-classification", "token-classification"):  # (QA's two outputs are the default: not written)
        assert len(config["id2label"]) == 3
    assert record["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert record["outputs"] == list(OUTPUTS[task]) and record["max_sequence_length"] == 64
    assert (record["int8_matmuls"] > 0) == int8
    # The export's own check, within its bound.
    check = record["check"]
    assert check["sequences"] == 67
    if int8 and format == "onnx":  # the same int8 math as PyTorch's, up to roundings on the other side of a boundary
        sqnr = check["sqnr_db"]  # None: identical logits (every rounding landed on the same side)
        assert (sqnr is None or sqnr >= 30) and check["clear_agreement"] == 1.0 and check["argmax_agreement"] >= 0.98
    elif int8:  # OpenVINO: our weight codes, activations rounded by the runtime (its dynamic quantization)
        assert check["sqnr_db"] >= 25 and check["clear_agreement"] == 1.0
    else:
        assert check["max_abs_diff"] <= 1e-4
    card = (out / "README.md").read_text()
    assert f"library_name: {'onnx' if format == 'onnx' else 'openvino'}" in card and f"{check['sequences']}" in card
    # Checked again here on what the check never saw: batch 3, 20 tokens and padding, with the saved tokenizer.
    tokenizer = AutoTokenizer.from_pretrained(out)
    words = [f"w{i}" for i in range(5, VOCAB - 5, 7)]
    texts = [" ".join(words[:18]), " ".join(words[30:35]), " ".join(words[60:71])]
    feeds = _inputs(tokenizer, record["inputs"], texts)
    assert feeds["input_ids"].shape == (3, 20)
    got = _run_file(out, record, feeds)
    want = _pytorch(source, feeds, task)
    _assert_within_bound(got, want, feeds["attention_mask"].astype(bool), task, int8)


@pytest.mark.parametrize("kind", ["student", "int8"])
def test_an_mpnet_model_exports_without_token_types(tmp_path, kind):
    """MPNet (all-mpnet-base-v2's family): no segment input, positions after the padding id, a relative-position
    bias in the encoder; the file computes what PyTorch computes on inputs the export's check never saw."""
    from tests.family_models import SEQUENCE, family_model, family_tokenizer

    tokenizer = family_tokenizer("mpnet", tmp_path / "tokenizer")
    model = family_model("mpnet", tokenizer, SEQUENCE, perturb=True)
    if kind == "int8":
        hf_compress.quantize_(model)
    source, out = tmp_path / "model", tmp_path / "onnx"
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    record = export(source, out, format="onnx")
    assert record["inputs"] == ["input_ids", "attention_mask"] and (record["int8_matmuls"] > 0) == (kind == "int8")
    assert record["max_sequence_length"] == 62  # 64 positions, two reserved by the padding offset
    texts = ["the dog sleeps by the river", "birds migrate south in autumn and return north in spring", "hello"]
    feeds = _inputs(AutoTokenizer.from_pretrained(out), record["inputs"], texts)
    mask = feeds["attention_mask"].astype(bool)
    _assert_within_bound(_run_file(out, record, feeds), _pytorch(source, feeds, "text-classification"), mask,
                         "text-classification", kind == "int8")  # fmt: skip


def test_int8_codes_are_in_the_graph(exports):
    """The int8 model's file holds its int8 codes and computes with DynamicQuantizeLinear + MatMulInteger."""
    out, record = exports.get("int8", "text-classification", "onnx")
    model = onnx.load(str(out / graph.ONNX_FILE))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("MatMulInteger") == record["int8_matmuls"] == 14  # 2 layers x 6, pooler, classifier
    assert "DynamicQuantizeLinear" in ops
    int8_bytes = sum(len(i.raw_data) for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8)
    float_bytes = sum(len(i.raw_data) for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT)
    assert int8_bytes > 2 * float_bytes  # codes, not dequantized float weights
    float_out, _ = exports.get("student", "text-classification", "onnx")
    assert (out / graph.ONNX_FILE).stat().st_size < 0.5 * (float_out / graph.ONNX_FILE).stat().st_size


def _int8_weight_matmuls(xml: Path) -> int:
    """MatMuls of an IR whose weight input is an int8 constant dequantized in the graph (Convert, Multiply)."""
    import openvino as ov

    count = 0
    for op in ov.Core().read_model(str(xml)).get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        source = op.input_value(1).get_node()
        while source.get_type_name() in ("Multiply", "Convert", "Reshape", "Transpose") and source.get_input_size():
            source = source.input_value(0).get_node()
        count += source.get_type_name() == "Constant" and source.get_output_element_type(0).get_type_name() == "i8"
    return count


@pytest.mark.parametrize("kind", INT8_KINDS)
def test_int8_codes_stay_one_byte_in_the_openvino_file(exports, kind):
    """In OpenVINO the codes are int8 constants dequantized in front of each MatMul (compressed weights, which the CPU
    plugin runs with its own dynamic activation quantization), not int32 constants: the IR is a third of the float
    IR or less."""
    out, record = exports.get(kind, "text-classification", "openvino")
    assert _int8_weight_matmuls(out / graph.OPENVINO_FILE) == record["int8_matmuls"] == 14  # 2 x 6, pooler, classifier
    float_out, _ = exports.get("student", "text-classification", "openvino")
    size = {k: (o / graph.OPENVINO_WEIGHTS).stat().st_size for k, o in (("int8", out), ("float", float_out))}
    assert size["int8"] < 0.4 * size["float"], size


@pytest.mark.parametrize("format", FORMATS)
def test_albert_shared_layer_is_stored_once(exports, format):
    out, _ = exports.get("albert", "text-classification", format)
    model = load_saved_model(str(exports.model_dir("albert", "text-classification")))
    distinct = {id(p): p.numel() * 4 for p in model.parameters()}
    layer = sum(p.numel() * 4 for p in model.albert.encoder.albert_layer_groups[0].parameters())
    assert model.config.num_hidden_layers == 2 and model.config.num_hidden_groups == 1
    if format == "onnx":
        stored = sum(len(i.raw_data) for i in onnx.load(str(out / graph.ONNX_FILE)).graph.initializer)
    else:
        stored = (out / graph.OPENVINO_WEIGHTS).stat().st_size
    # Each layer's copy would add a whole layer's bytes; the file holds the distinct parameters, give or take buffers.
    assert abs(stored - sum(distinct.values())) < layer / 2, (stored, sum(distinct.values()), layer)


FRESH_SERVER = """
import json, sys
import numpy as np
from tokenizers import Tokenizer

folders, texts = json.loads(sys.argv[1]), json.loads(sys.argv[2])
results = {}
for folder in folders:
    config = json.load(open(f"{folder}/config.json"))
    export = config["export"]
    pad = json.load(open(f"{folder}/tokenizer_config.json"))["pad_token"]
    tokenizer = Tokenizer.from_file(f"{folder}/tokenizer.json")
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id(pad), pad_token=pad)
    tokenizer.enable_truncation(export["max_sequence_length"])
    encodings = tokenizer.encode_batch(texts)
    columns = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    feeds = {n: np.array([getattr(e, columns[n]) for e in encodings], dtype=np.int64) for n in export["inputs"]}
    if export["format"] == "onnx":
        import onnxruntime as ort
        session = ort.InferenceSession(f"{folder}/{export['file']}", providers=["CPUExecutionProvider"])
        outputs = dict(zip(export["outputs"], session.run(None, feeds)))
    else:
        import openvino as ov
        compiled = ov.Core().compile_model(f"{folder}/{export['file']}", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        result = compiled(feeds)
        outputs = {name: result[compiled.output(name)] for name in export["outputs"]}
    listed = lambda arrays: {k: v.tolist() for k, v in arrays.items()}
    results[folder] = {"feeds": listed(feeds), "outputs": listed(outputs)}
imported = sorted(m for m in ("torch", "hf_compress", "transformers") if m in sys.modules)
print(json.dumps({"results": results, "imported": imported}))
"""


@pytest.mark.parametrize("format", FORMATS)
def test_a_fresh_process_serves_every_export_with_the_runtime_and_tokenizers_only(exports, format, tmp_path):
    cases = [case for case in CASES if case[2] == format]
    folders = [str(exports.get(*case)[0]) for case in cases]
    texts = ["w1 w2 w3", " ".join(f"w{i}" for i in range(100, 140)), "w7 w900 w33 w5 w6"]
    proc = run_python(
        f"import sys; sys.argv[1:] = {[json.dumps(folders), json.dumps(texts)]!r}\n" + FRESH_SERVER, cwd=str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert answer["imported"] == []  # neither torch nor transformers nor hf_compress
    for (kind, task, _), folder in zip(cases, folders):
        served = answer["results"][folder]
        feeds = {name: np.array(value, dtype=np.int64) for name, value in served["feeds"].items()}
        assert feeds["input_ids"].shape[1] == 42  # 40 words + [CLS] + [SEP]: no truncation left in tokenizer.json
        got = {name: np.array(value, dtype=np.float32) for name, value in served["outputs"].items()}
        want = _pytorch(exports.model_dir(kind, task), feeds, task)
        _assert_within_bound(got, want, feeds["attention_mask"].astype(bool), task, kind in INT8_KINDS)


def test_cli_records_the_precision(exports):
    out, record = exports.get("student", "text-classification", "openvino")
    assert record["precision"] == "bf16"
    assert record["check"]["precision"] == "f32"  # the bound is checked in f32
    bf16 = record["check"]["bf16"]  # then in bf16 (a CPU without bf16 compiles it as f32)
    assert bf16["precision"] in ("bf16", "f32") and bf16["clear_agreement"] >= 0.995
    assert '"INFERENCE_PRECISION_HINT": "bf16"' in (out / "README.md").read_text()


# ---------------------------------------------------------------- refused before any work


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if export gets as far as loading a model."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were refused")

    monkeypatch.setattr("hf_compress.loading.load_saved_model", refuse)


def _headless(directory: Path) -> Path:
    BertModel(tiny_bert_config()).save_pretrained(directory)
    tiny_tokenizer(directory).save_pretrained(directory)
    return directory


def _no_tokenizer(directory: Path) -> Path:
    BertForSequenceClassification(tiny_bert_config()).save_pretrained(directory)
    return directory


def _small_embedding(directory: Path) -> Path:
    """The tokenizer's ids run past the embedding: the file would index outside its table at run time."""
    BertForSequenceClassification(tiny_bert_config(vocab_size=VOCAB // 2)).save_pretrained(directory)
    tiny_tokenizer(directory).save_pretrained(directory)
    return directory


def _a_file(path: Path) -> Path:
    path.write_text("not a directory")
    return path


# (what is wrong, the arguments that differ from a good call, given (tmp_path, source model dir), the message)
BAD = [
    (
        "missing model",
        lambda t, s: {"model_dir": t / "missing"},
        r"model_dir='.*missing' is invalid; allowed: a local",
    ),
    ("format", lambda t, s: {"format": "tflite"}, r"format='tflite' is invalid; allowed: 'onnx', 'openvino'"),
    (
        "precision for onnx",
        lambda t, s: {"format": "onnx", "precision": "bf16"},
        r"precision='bf16' is invalid; allowed: 'f32' with format='onnx'",
    ),
    ("precision", lambda t, s: {"precision": "fp16"}, r"precision='fp16' is invalid; allowed: 'f32', 'bf16'"),
    (
        "opset",
        lambda t, s: {"format": "onnx", "opset": 17},
        r"opset=17 is invalid; allowed: null .* or an integer in \[18, 23\]",
    ),
    ("opset for openvino", lambda t, s: {"opset": 18}, r"opset=18 is invalid; allowed: null with format='openvino'"),
    ("overwrite", lambda t, s: {"overwrite": "yes"}, r"overwrite='yes' is invalid; allowed: True or False"),
    (
        "output holds a model",
        lambda t, s: {"output_dir": t / "taken"},
        r"output_dir='.*taken' is invalid; allowed: a new or empty directory \(this one holds a model\), or overwrite",
    ),
    (
        "output is the model",
        lambda t, s: {"output_dir": s, "overwrite": True},
        r"output_dir='.*' is invalid; allowed: a directory outside model_dir",
    ),
    (
        "no head",
        lambda t, s: {"model_dir": _headless(t / "headless")},
        r"model_dir='.*headless' is invalid; allowed: a model with a SequenceClassification",
    ),
    (
        "no tokenizer",
        lambda t, s: {"model_dir": _no_tokenizer(t / "bare")},
        r"model_dir='.*bare' is invalid; allowed: a model saved with its tokenizer",
    ),
    (
        "no config",
        lambda t, s: {"model_dir": t / "taken"},
        r"model_dir='.*taken' is invalid; allowed: a directory that save_pretrained wrote \(this one has no config",
    ),
    (
        "tokenizer beyond the embedding",
        lambda t, s: {"model_dir": _small_embedding(t / "small")},
        rf"model_dir='.*small' is invalid; allowed: a model whose tokenizer's ids fit its embedding \({VOCAB} tokens, "
        rf"vocab_size {VOCAB // 2}\)",
    ),
    ("output empty", lambda t, s: {"output_dir": ""}, r"output_dir='' is invalid; allowed: a directory path$"),
    (
        "output is a file",
        lambda t, s: {"output_dir": _a_file(t / "file.onnx")},
        r"output_dir='.*file.onnx' is invalid; allowed: a directory path \(a file is there\)",
    ),
    (
        "output holds files",
        lambda t, s: {"output_dir": t / "notes"},
        r"output_dir='.*notes' is invalid; allowed: a new or empty directory \(this one holds files\)",
    ),
]


@pytest.mark.parametrize("what,fields,message", BAD, ids=[what for what, _, _ in BAD])
def test_bad_input_is_refused_before_any_work(exports, tmp_path, no_loading, what, fields, message):
    source = exports.model_dir("student", "text-classification")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "model.onnx").write_bytes(b"an earlier export")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("the user's")
    arguments = {"model_dir": source, "output_dir": tmp_path / "out", "format": "openvino", **fields(tmp_path, source)}
    with pytest.raises(ValueError, match=message):
        export(**arguments)
    assert not (tmp_path / "out").exists()
    assert (taken / "model.onnx").read_bytes() == b"an earlier export"
    assert (tmp_path / "notes" / "notes.txt").read_text() == "the user's"
    assert not [p for p in os.listdir(tmp_path) if ".staging-" in p]
    assert not [p for p in os.listdir(source.parent) if ".staging-" in p]


def test_a_format_whose_runtime_is_not_installed_is_refused_naming_the_install(exports, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else find_spec(name, *a)
    )
    with pytest.raises(ValueError, match=r"format='openvino' is invalid; .*\(openvino missing: pip install 'hf_compr"):
        export(exports.model_dir("student", "text-classification"), tmp_path / "out", format="openvino")
    assert not (tmp_path / "out").exists()


def test_cli_refuses_in_one_line(exports, tmp_path, capsys, no_loading):
    source = exports.model_dir("student", "text-classification")
    capsys.readouterr()  # building the fixture's model may print progress bars
    assert main(["export", str(source), str(tmp_path / "out"), "--format", "tflite"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    allowed = "'onnx', 'openvino', 'compressed-tensors'"
    assert err == [f"hf-compress export: error: format='tflite' is invalid; allowed: {allowed}"]
    assert main(["export", str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "model_dir=" in capsys.readouterr().err and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- beyond the bound: nothing is left


def _write_copy(exported: Path, int8_matmuls: int, corrupt: bool):
    """A stand-in for graph.write_onnx: an earlier export's ONNX file, as it was or with the classifier's weight 0.1%
    larger."""

    def write_onnx(model, example, output_names, path, opset, max_length):
        written = onnx.load(str(exported / graph.ONNX_FILE))
        if corrupt:
            (weight,) = [i for i in written.graph.initializer if i.name.endswith("classifier.weight")]
            values = onnx.numpy_helper.to_array(weight) * np.float32(1.001)
            weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
        onnx.save(written, path)
        return next(o.version for o in written.opset_import if o.domain in ("", "ai.onnx")), int8_matmuls

    return write_onnx


def _write_openvino_corrupt(model, example, output_names, xml_path, max_length):
    """A stand-in for graph.write_openvino_from_torch: the IR of the model with the classifier's weight 0.1% larger."""
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.classifier.weight.mul_(1.001)
    return _WRITE_OPENVINO(changed, example, output_names, xml_path, max_length)


_WRITE_OPENVINO = graph.write_openvino_from_torch


@pytest.mark.parametrize("format", FORMATS)
def test_a_file_beyond_the_bound_leaves_nothing(exports, tmp_path, monkeypatch, format):
    source = exports.model_dir("student", "text-classification")
    if format == "onnx":
        exported, _ = exports.get("student", "text-classification", "onnx")
        monkeypatch.setattr(graph, "write_onnx", _write_copy(exported, 0, corrupt=True))
    else:
        monkeypatch.setattr(graph, "write_openvino_from_torch", _write_openvino_corrupt)
    with pytest.raises(
        ValueError, match=r"max \|logit difference\| <= 1e-04; measured max \|logit difference\| \d\.\d\de-0[23], "
    ):
        export(source, tmp_path / "out", format=format)
    assert os.listdir(tmp_path) == []  # no output folder, no staging folder
    # With overwrite, the folder that was there stays as it was.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.onnx").write_bytes(b"an earlier export")
    with pytest.raises(ValueError, match="nothing was written"):
        export(source, tmp_path / "out", format=format, overwrite=True)
    assert os.listdir(tmp_path) == ["out"] and os.listdir(tmp_path / "out") == ["model.onnx"]
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"an earlier export"


@pytest.mark.parametrize(
    "bound,value,message",
    [
        ("INT8_AGREEMENT", 1.01, r"argmax agreement >= 101.0% on the decisions whose margin"),  # none can reach it
        ("INT8_SQNR_DB", 200.0, r"logits SQNR >= 200 dB and"),
    ],
)
def test_int8_file_beyond_the_bound_leaves_nothing(exports, tmp_path, monkeypatch, bound, value, message):
    source = exports.model_dir("int8", "text-classification")
    exported, record = exports.get("int8", "text-classification", "onnx")
    monkeypatch.setattr(graph, "write_onnx", _write_copy(exported, record["int8_matmuls"], corrupt=False))
    monkeypatch.setattr(verify, bound, value)
    with pytest.raises(ValueError, match=message + r".*measured .* on 67 sample sequences\): nothing was written"):
        export_onnx(source, tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_flips_within_int8_rounding_are_ties_and_others_count():
    """A decision whose margin is below TIE_NOISE x the RMS difference is left to int8 rounding; one above counts."""
    mask = np.ones((4, 3), dtype=bool)
    batch = {"input_ids": np.zeros((4, 3), dtype=np.int64), "attention_mask": mask.astype(np.int64)}
    want = np.array([[1.0, 0.0, -1.0], [0.5, 0.49, 0.0], [2.0, -2.0, 0.0], [0.0, 3.0, 1.0]], dtype=np.float32)
    noise = np.float32(0.02) * np.array([[1, -1, 1], [0, 0, 0], [-1, 1, -1], [1, 1, -1]], dtype=np.float32)
    tie_flip = want + noise
    tie_flip[1] = [0.49, 0.5, 0.0]  # margin 0.01, below 4 x the RMS difference (4 x 0.0178): a tie
    stats = verify.compare([{"logits": want}], [{"logits": tie_flip}], [batch], "text-classification")
    assert stats["argmax_agreement"] == 0.75 and stats["ties"] == 1 and stats["clear_agreement"] == 1.0
    assert stats["sqnr_db"] == pytest.approx(10 * np.log10((want**2).sum() / (9 * 0.02**2 + 2 * 0.01**2)), abs=1e-3)
    assert verify.within_bound(stats, int8=True)[0]
    clear_flip = tie_flip.copy()
    clear_flip[3] = [0.0, 1.9, 2.1]  # margin 2, above 4 x the RMS difference (4 x 0.449): a real disagreement
    stats = verify.compare([{"logits": want}], [{"logits": clear_flip}], [batch], "text-classification")
    # Rows 0-2 are judged against the other rows' differences, row 3's large one included: ties. Row 3, judged
    # against the others' (RMS 0.017), is clear, and disagrees.
    assert stats["ties"] == 3 and stats["clear_agreement"] == 0.0
    assert not verify.within_bound(stats, int8=True)[0]
    # A wrong graph inflates the RMS difference until every decision looks like a tie: the SQNR floor refuses it.
    wrong = -want
    stats = verify.compare([{"logits": want}], [{"logits": wrong}], [batch], "text-classification")
    assert stats["ties"] == 4 and stats["clear_agreement"] == 1.0 and stats["sqnr_db"] < 0
    assert not verify.within_bound(stats, int8=True)[0]


def test_a_rare_rounding_event_is_judged_by_the_sequences_it_moves():
    """Most sequences identical, one moved by a rounding event: its flip is judged against the size of an event, not
    diluted by the identical sequences; a flip with a margin far above the other events' size counts."""
    rows = 40
    mask = np.ones((rows, 3), dtype=bool)
    batch = {"input_ids": np.zeros((rows, 3), dtype=np.int64), "attention_mask": mask.astype(np.int64)}
    want = np.tile(np.array([[1.0, 0.0, -1.0]], dtype=np.float32), (rows, 1))
    want[0] = [0.5, 0.44, 0.0]  # margin 0.06
    got = want.copy()
    got[0] = [0.47, 0.5, 0.01]  # one event: RMS difference 0.04 in this row, 0.04 / sqrt(40) = 0.0063 over the sample
    stats = verify.compare([{"logits": want}], [{"logits": got}], [batch], "text-classification")
    assert 0.06 > 4 * 0.04 / np.sqrt(rows)  # over the whole sample, this flip would count as a disagreement
    assert stats["ties"] == 1 and stats["clear_agreement"] == 1.0 and verify.within_bound(stats, int8=True)[0]
    got[1] = [-1.0, 0.5, 1.0]  # row 1 (margin 1) flips by far more than the event's size: refused
    stats = verify.compare([{"logits": want}], [{"logits": got}], [batch], "text-classification")
    assert stats["clear_agreement"] < 1.0 and not verify.within_bound(stats, int8=True)[0]


def test_overwrite_replaces_the_folder(exports, tmp_path):
    source = exports.model_dir("student", "text-classification")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.txt").write_text("from before")
    record = export_openvino(source, tmp_path / "out", overwrite=True)
    assert record["format"] == "openvino" and record["check"]["max_abs_diff"] <= 1e-4
    assert "stale.txt" not in os.listdir(tmp_path / "out") and graph.OPENVINO_FILE in os.listdir(tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_the_export_module_is_importable_without_the_runtimes():
    """Building the CLI parser or importing hf_compress.export imports neither runtime (they load on use)."""
    proc = run_python(
        "import sys, hf_compress.export, hf_compress.cli.main\n"
        "print(sorted(m for m in ('onnxruntime', 'openvino', 'onnx', 'onnxscript') if m in sys.modules))",
        cwd=str(Path(__file__).parent.parent),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------- docs/serving.md's code serves the exports

SERVING = Path(__file__).resolve().parent.parent / "docs" / "serving.md"
# the first line of each runnable block of docs/serving.md -> the variable holding what it serves
SNIPPETS = {
    "text classification": "labels",
    "token classification (NER)": "entities",
    "question answering": "answers",
    "sentence embeddings": "nearest",
}
SESSIONS = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}
DOC_RUNNER = """
import json, sys
blocks, folders, results = json.loads(sys.argv[1]), json.loads(sys.argv[2]), {}
for head, (folder, session, variable) in folders.items():
    namespace = {"folder": folder}
    exec(blocks[session], namespace)
    exec(blocks[head], namespace)
    results[head] = namespace[variable]
print(json.dumps(results))
"""


def serving_blocks() -> dict[str, str]:
    """docs/serving.md's python blocks, by their first line (a comment naming them)."""
    blocks = re.findall(r"^```python\n(.*?)^```", SERVING.read_text(), re.S | re.M)
    return {block.splitlines()[0].removeprefix("#").strip(): block for block in blocks}


@pytest.mark.parametrize("format", FORMATS)
def test_the_serving_guide_serves_every_head(exports, format, tmp_path):
    """Each head's snippet, run on the exported file in a fresh process, serves what the same snippet serves with the
    PyTorch model in place of the file."""
    blocks = serving_blocks()
    assert set(SNIPPETS) | set(SESSIONS.values()) <= set(blocks)
    heads = dict(zip(SNIPPETS, TASKS))
    folders = {head: (str(exports.get("student", task, format)[0]), SESSIONS[format], SNIPPETS[head])
               for head, task in heads.items()}  # fmt: skip
    proc = run_python(
        f"import sys; sys.argv[1:] = {[json.dumps(blocks), json.dumps(folders)]!r}\n" + DOC_RUNNER, cwd=str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    served = json.loads(proc.stdout.strip().splitlines()[-1])
    for head, task in heads.items():

        def run(encoded, task=task):
            feeds = {k: np.asarray(v, dtype=np.int64) for k, v in encoded.items() if k in INPUT_NAMES}
            return _pytorch(exports.model_dir("student", task), feeds, task)

        namespace = {"folder": folders[head][0]}
        exec(blocks[SESSIONS[format]], namespace)
        namespace["run"] = run  # the same snippet, with the PyTorch model in place of the file
        exec(blocks[head], namespace)
        expected = json.loads(json.dumps(namespace[SNIPPETS[head]]))
        assert served[head] == expected, head
    assert len(served["text classification"]) == 2 and len(served["token classification (NER)"]) == 2
    assert len(served["sentence embeddings"]) == 3
    assert served["question answering"][0] in "George Washington visited Paris in the spring and stayed for a week."
