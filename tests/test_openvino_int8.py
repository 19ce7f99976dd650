"""OpenVINO's own int8 (NNCF post-training quantization) of a saved model: `export_openvino_int8` and
`hf-compress quantize --runtime openvino`."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification, DataCollatorWithPadding

from hf_compress.cli import main
from hf_compress.export import export_openvino_int8
from hf_compress.export.openvino_int8 import calibration_sequences
from tests.family_models import family_model, family_tokenizer
from tests.test_families import FAMILIES
from tests.testing_utils import tiny_bert_config, tiny_checkpoint, tiny_text_csv, tiny_tokenizer

pytest.importorskip("nncf")
pytest.importorskip("openvino")


def _calibration(tokenizer, n: int = 48, batch: int = 16, max_length: int | None = None) -> list[dict]:
    rng = np.random.default_rng(0)
    # In id order: a fast tokenizer's get_vocab() is a Rust hash map whose order changes from process to process, and
    # with it the calibration text (one run in many flipped a clear decision of the tiny DistilBERT).
    vocab = sorted((i, w) for w, i in tokenizer.get_vocab().items())
    words = [w for _, w in vocab if not w.startswith(("[", "<"))]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(3, 20)))) for _ in range(n)]
    collator = DataCollatorWithPadding(tokenizer)
    encode = dict(truncation=True, max_length=max_length) if max_length else {}
    return [collator([tokenizer(t, **encode) for t in texts[i : i + batch]]) for i in range(0, n, batch)]


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fp32")
    torch.manual_seed(0)
    BertForSequenceClassification(tiny_bert_config(initializer_range=0.2, num_labels=3)).save_pretrained(directory)
    tiny_tokenizer(directory).save_pretrained(directory)
    return str(directory)


def _fake_quantize_inputs(xml: str) -> dict[str, int]:
    """MatMul node -> how many of its inputs come from a FakeQuantize (through a Convert/Reshape/Transpose)."""
    import openvino as ov

    counts = {}
    for op in ov.Core().read_model(xml).get_ordered_ops():
        if op.get_type_name() != "MatMul":
            continue
        hits = 0
        for port in range(op.get_input_size()):
            source = op.input_value(port).get_node()
            while source.get_type_name() in ("Convert", "Reshape", "Transpose") and source.get_input_size():
                source = source.input_value(0).get_node()
            hits += source.get_type_name() == "FakeQuantize"
        counts[op.get_friendly_name()] = hits
    return counts


def test_the_ir_runs_int8_matmuls_and_keeps_the_decisions(tmp_path, float_model):
    """Every Linear's MatMul gets quantized inputs (NNCF's FakeQuantize: what OpenVINO's CPU plugin runs in int8),
    the IR is smaller than the float IR, and in OpenVINO it agrees with the PyTorch model on fresh inputs."""
    import openvino as ov

    from hf_compress.evaluation.exported import ExportedModel
    from hf_compress.export import export_openvino

    tokenizer = AutoTokenizer.from_pretrained(float_model)
    record = export_openvino_int8(float_model, tmp_path / "int8", _calibration(tokenizer))
    assert record["quantization"]["calibration_sequences"] == 48
    assert record["quantization"]["checked_on"] == "random vocabulary words" and record["check"]["sequences"] == 67
    assert record["check"]["clear_agreement"] >= 0.995 and record["check"]["sqnr_db"] >= 15
    stored = json.loads((tmp_path / "int8" / "config.json").read_text())["export"]
    assert stored["quantization"]["method"].startswith("nncf")
    counts = _fake_quantize_inputs(str(tmp_path / "int8" / "openvino_model.xml"))
    linear_matmuls = {name: hits for name, hits in counts.items() if hits}
    # 2 layers x (q, k, v, attention output, FFN up, FFN down) + pooler + classifier, each with quantized inputs
    assert len(linear_matmuls) >= 14, counts
    export_openvino(float_model, tmp_path / "fp32")
    size = {k: os.path.getsize(tmp_path / k / "openvino_model.bin") for k in ("int8", "fp32")}
    assert size["int8"] < 0.6 * size["fp32"], size
    ops = {op.get_type_name() for op in ov.Core().read_model(str(tmp_path / "int8" / "openvino_model.xml")).get_ops()}
    # Converted from the PyTorch program, attention is one node (from an ONNX graph it is MatMul + Softmax + MatMul,
    # measured 1.10x slower in int8 on the MiniLM teacher).
    assert "ScaledDotProductAttention" in ops and "Softmax" not in ops, sorted(ops)

    served = ExportedModel(str(tmp_path / "int8"))
    model = BertForSequenceClassification.from_pretrained(float_model).eval()
    texts = [f"w{i} w{i + 7} w{3 * i} w{i + 40}" for i in range(1, 60)]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = model(**encoded).logits
    got = served(**encoded).logits
    top2 = want.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > 4 * (got - want).pow(2).mean().sqrt()
    assert clear.sum() > 20
    assert torch.equal(got.argmax(-1)[clear], want.argmax(-1)[clear])


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_converts_and_quantizes_within_the_bound(tmp_path, family):
    """Each family's graph goes through OpenVINO's PyTorch frontend and NNCF: every encoder Linear's MatMul gets
    quantized inputs and the IR keeps the decisions (the export's own check, on the export's sample)."""
    tokenizer = family_tokenizer(family, tmp_path / "tokenizer")
    model = family_model(family, tokenizer, perturb=True)
    model.save_pretrained(tmp_path / "fp32")
    tokenizer.save_pretrained(tmp_path / "fp32")
    record = export_openvino_int8(str(tmp_path / "fp32"), tmp_path / "int8", _calibration(tokenizer, max_length=32))
    assert record["check"]["clear_agreement"] >= 0.995 and record["check"]["sqnr_db"] >= 15
    counts = _fake_quantize_inputs(str(tmp_path / "int8" / "openvino_model.xml"))
    assert sum(hits > 0 for hits in counts.values()) >= 2 * 6, counts  # 2 layers x (q, k, v, output, up, down)


def test_a_calibration_sequence_longer_than_the_positions_is_refused_before_any_work(tmp_path, float_model):
    """A sequence past the model's positions would fail inside the runtime (RoBERTa: its position gather), after
    the graph work: refused first, in calibration and in the held-out check batches."""
    tokenizer = AutoTokenizer.from_pretrained(float_model)
    positions = AutoConfig.from_pretrained(float_model).max_position_embeddings
    long = {"input_ids": torch.ones(1, positions + 1, dtype=torch.long)}
    long["attention_mask"] = torch.ones_like(long["input_ids"])
    long["token_type_ids"] = torch.zeros_like(long["input_ids"])
    message = f"a sequence of {positions + 1} tokens' is invalid; allowed: sequences of at most {positions} tokens"
    for fields in ({"calibration_batches": [long]}, {"check_batches": [long]}):
        arguments = {"calibration_batches": _calibration(tokenizer, n=16), **fields}
        with pytest.raises(ValueError, match=message):
            export_openvino_int8(float_model, tmp_path / "out", **arguments)
        assert not (tmp_path / "out").exists()


def test_a_sentence_embedding_model_gets_int8_matmuls_and_its_pooling_in_the_ir(tmp_path):
    """A sentence-transformers base model: NNCF quantizes every Linear's MatMul, the IR returns the pooled, normalised
    `sentence_embedding`, and on texts the check never saw it is the PyTorch embedding (cosine)."""
    from transformers import BertModel

    from hf_compress.tasks.sentence_embedding import Pooling, write_sentence_transformers_files
    from tests.test_export import _run_file

    source = tmp_path / "embedder"
    torch.manual_seed(0)
    model = BertModel(tiny_bert_config(initializer_range=0.2), add_pooling_layer=False).eval()
    model.save_pretrained(source)
    tokenizer = tiny_tokenizer(source)
    tokenizer.save_pretrained(source)
    pooling = Pooling("mean", normalize=True)
    write_sentence_transformers_files(str(source), pooling, model.config.hidden_size, 64)
    record = export_openvino_int8(source, tmp_path / "int8", _calibration(tokenizer))
    assert record["outputs"] == ["sentence_embedding"] and record["check"]["clear_agreement"] >= 0.995
    counts = _fake_quantize_inputs(str(tmp_path / "int8" / "openvino_model.xml"))
    assert sum(1 for hits in counts.values() if hits) >= 12, counts  # 2 layers x 6 Linears, no head
    texts = [f"w{i} w{i + 7} w{3 * i} w{i + 40}" + " w9" * (i % 5) for i in range(1, 40)]
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    feeds = {k: v.numpy() for k, v in encoded.items()}
    got = _run_file(tmp_path / "int8", record, feeds)["sentence_embedding"]
    with torch.no_grad():
        want = pooling(model(**encoded).last_hidden_state, encoded["attention_mask"]).numpy()
    assert got.shape == want.shape == (39, model.config.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # the Normalize module is in the graph

    # Centred on the texts' mean embedding, so that what all texts share does not inflate the cosine (static int8 of
    # a random tiny model). The float graph's pooling is exact (tests/test_export.py).
    centred = [v - v.mean(0) for v in (got, want)]
    cosine = (centred[0] * centred[1]).sum(1) / np.linalg.norm(centred[0], axis=1) / np.linalg.norm(centred[1], axis=1)
    assert cosine.mean() > 0.98 and cosine.min() > 0.9, cosine


def test_modules_to_not_convert_stay_float(tmp_path, float_model):
    tokenizer = AutoTokenizer.from_pretrained(float_model)
    calibration = _calibration(tokenizer)
    export_openvino_int8(float_model, tmp_path / "all", calibration)
    export_openvino_int8(float_model, tmp_path / "kept", calibration, modules_to_not_convert=["classifier"])
    every = _fake_quantize_inputs(str(tmp_path / "all" / "openvino_model.xml"))
    kept = _fake_quantize_inputs(str(tmp_path / "kept" / "openvino_model.xml"))
    assert sum(h > 0 for h in kept.values()) == sum(h > 0 for h in every.values()) - 1


def test_an_int8_artifact_is_quantized_from_the_weights_it_computes_with(tmp_path):
    """An hf_compress int8 checkpoint has no float weights: NNCF gets its dequantized ones, and the IR keeps the int8
    model's decisions."""
    from hf_compress import quantize_

    source = tmp_path / "fp32"
    torch.manual_seed(1)
    model = BertForSequenceClassification(tiny_bert_config(initializer_range=0.2, num_labels=3)).eval()
    tokenizer = tiny_tokenizer(tmp_path / "vocab")
    quantize_(model)
    model.save_pretrained(source)
    tokenizer.save_pretrained(source)
    record = export_openvino_int8(str(source), tmp_path / "ov", _calibration(tokenizer))
    assert record["check"]["clear_agreement"] >= 0.995


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"smoothquant_alpha": 1.5}, "smoothquant_alpha=1.5 is invalid; allowed: null or a number in [0, 1]"),
        ({"modules_to_not_convert": ["classifer"]}, "quantization_modules_to_not_convert=['classifer'] is invalid"),
        ({"calibration_batches": []}, "calibration_batches=0 is invalid"),
        ({"precision": "fp8"}, "precision='fp8' is invalid"),
    ],
)
def test_bad_arguments_are_refused_and_nothing_is_written(tmp_path, float_model, fields, message):
    tokenizer = AutoTokenizer.from_pretrained(float_model)
    arguments = {"calibration_batches": _calibration(tokenizer, n=16), **fields}
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        export_openvino_int8(float_model, tmp_path / "out", **arguments)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "bound,value,message",
    [
        ("INT8_AGREEMENT", 1.01, r"argmax agreement >= 101.0% on the decisions whose margin"),  # none can reach it
        ("INT8_SQNR_DB", 200.0, r"logits SQNR >= 200 dB and"),
    ],
)
def test_an_ir_beyond_the_bound_leaves_nothing(tmp_path, float_model, monkeypatch, bound, value, message):
    """NNCF's IR is checked against PyTorch like every export: beyond the int8 bound it is an error, and neither the
    output folder nor the staging folder is left behind."""
    from hf_compress.export import verify

    tokenizer = AutoTokenizer.from_pretrained(float_model)
    monkeypatch.setattr(verify, bound, value)
    expected = rf"keeps its decisions under NNCF int8 \(.*{message}.*sample sequences\): nothing was written"
    with pytest.raises(ValueError, match=expected):
        export_openvino_int8(float_model, tmp_path / "out", _calibration(tokenizer, n=16))
    assert os.listdir(tmp_path) == []


def test_held_out_batches_replace_the_random_word_sample(tmp_path, float_model):
    tokenizer = AutoTokenizer.from_pretrained(float_model)
    calibration, held_out = _calibration(tokenizer, n=32), _calibration(tokenizer, n=48)[2:]
    record = export_openvino_int8(float_model, tmp_path / "ov", calibration, check_batches=held_out)
    assert record["quantization"]["checked_on"] == "held-out text" and record["check"]["sequences"] == 16


def test_calibration_sequences_cut_the_padding():
    batch = {
        "input_ids": torch.tensor([[101, 7, 8, 102], [101, 9, 102, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
    }
    items = calibration_sequences([batch], ("input_ids", "attention_mask"))
    assert [item["input_ids"].tolist() for item in items] == [[[101, 7, 8, 102]], [[101, 9, 102]]]
    assert all(item["input_ids"].dtype == np.int64 for item in items)


def test_the_cli_quantizes_for_openvino_on_the_recipe_calibration_batches(tmp_path, capsys):
    path = tiny_checkpoint(tmp_path / "fp32")
    data = tiny_text_csv(tmp_path / "data.csv", n=40)
    out = tmp_path / "ov"
    argv = ["quantize", path, str(out), "--runtime", "openvino", "--dataset_name", data]
    assert main([*argv, "--calibration_batches", "2", "--calibration_batch_size", "8"]) == 0
    record = json.loads((out / "config.json").read_text())["export"]
    assert record["quantization"]["calibration_sequences"] == 16
    # checked on the next 16 examples of the train split (held out from calibration), not on random words
    assert record["quantization"]["checked_on"] == "held-out text" and record["check"]["sequences"] == 16
    assert "OpenVINO int8 model (NNCF, 16 calibration sequences)" in capsys.readouterr().out


def test_the_cli_records_bf16_for_serving_after_checking_it(tmp_path, capsys):
    path = tiny_checkpoint(tmp_path / "fp32")
    data = tiny_text_csv(tmp_path / "data.csv", n=40)
    out = tmp_path / "ov"
    argv = ["quantize", path, str(out), "--runtime", "openvino", "--dataset_name", data, "--precision", "bf16"]
    assert main([*argv, "--calibration_batches", "2", "--calibration_batch_size", "8"]) == 0
    record = json.loads((out / "config.json").read_text())["export"]
    assert record["precision"] == "bf16"
    assert record["check"]["bf16"]["sequences"] == 16  # the IR compiled in bf16, checked on the held-out text


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--precision", "f16"], "precision='f16' is invalid; allowed: 'f32', 'bf16'"),
        (["--runtime", "pytorch", "--precision", "bf16"], "precision='bf16' is invalid; allowed: 'f32' with runtime="),
        (["--gptq", "true"], "gptq=True is invalid; allowed: False with runtime='openvino'"),
        (["--num_outlier_channels", "1"], "num_outlier_channels=1 is invalid; allowed: 0 with runtime='openvino'"),
        (["--activation_range", "per_token"], "activation_range='per_token' is invalid; allowed: 'per_batch' with"),
        (["--runtime", "onnx"], "runtime='onnx' is invalid; allowed: 'pytorch', 'openvino'"),
    ],
)
def test_the_cli_refuses_our_pytorch_only_steps_for_openvino(tmp_path, capsys, flags, message):
    path = tiny_checkpoint(tmp_path / "fp32")
    runtime = [] if "--runtime" in flags else ["--runtime", "openvino"]
    assert main(["quantize", path, str(tmp_path / "ov"), *runtime, *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "ov").exists()
