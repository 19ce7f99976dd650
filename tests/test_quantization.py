"""Post-training int8: quality (SQNR), bytes on disk, save/load through from_pretrained, loud failures."""

from __future__ import annotations

import copy
import json
import os

import evaluate
import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, List, Value
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from transformers import (
    AlbertConfig,
    AlbertForSequenceClassification,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    Trainer,
    TrainingArguments,
    pipeline,
)

from hf_compress.format.config import QUANT_METHOD, Int8QuantizationConfig
from hf_compress.methods.int8 import kernel as fbgemm
from hf_compress.methods.int8.modules import Int8Embedding, Int8Linear, quantize_rows
from hf_compress.methods.int8.rounding import linear_codes
from hf_compress.methods.int8.transform import quantize_, quantize_pretrained
from hf_compress.metrics import metric_path
from tests.testing_utils import (
    VOCAB,
    load_in_stock_transformers,
    run_python,
    tiny_batch,
    tiny_bert,
    tiny_bert_config,
    tiny_dataset,
    tiny_tokenizer,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sqnr_db(ref: torch.Tensor, approx: torch.Tensor) -> float:
    """10*log10(|ref|^2 / |ref - approx|^2)."""
    return (10 * torch.log10(ref.pow(2).sum() / (ref - approx).pow(2).sum())).item()


def inputs(batch_size: int = 4, seq_len: int = 12, seed: int = 0) -> dict:
    batch = tiny_batch(batch_size, seq_len, seed)
    batch.pop("labels")
    return batch


@torch.no_grad()
def logits(model, batch: dict | None = None) -> torch.Tensor:
    return model.eval()(**(batch or inputs())).logits


def tiny_albert(seed: int = 0) -> AlbertForSequenceClassification:
    """ALBERT with one shared layer group and embedding_size (16) smaller than hidden_size (32)."""
    torch.manual_seed(seed)
    config = AlbertConfig(
        vocab_size=VOCAB,
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=3,
        num_hidden_groups=1,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        classifier_dropout_prob=0.0,
    )
    return AlbertForSequenceClassification(config).eval()


def pruned_bert(seed: int = 0, sparsity: float = 0.9) -> nn.Module:
    """A tiny BERT whose Linear weights are 90% zeros (smallest magnitudes), with some rows entirely zero."""
    model = tiny_bert(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                w = module.weight
                threshold = w.abs().flatten().kthvalue(int(sparsity * w.numel())).values
                w[w.abs() <= threshold] = 0
                w[:2] = 0  # pruned rows: their scale must not divide by zero
    return model


MODELS = {
    "bert": lambda: tiny_bert(0),
    "bert_pruned": pruned_bert,
    "bert_small_intermediate": lambda: tiny_bert(0, intermediate_size=16),
    "albert_shared": tiny_albert,
}


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "kwargs, field_name",
    [
        ({"quant_method": "torchao"}, "quant_method"),
        ({"modules_to_not_convert": "classifier"}, "modules_to_not_convert"),
        ({"modules_to_convert": ["bert.pooler.dense", ""]}, "modules_to_convert"),
        ({"quantize_embeddings": "yes"}, "quantize_embeddings"),
        ({"activation_range": "per_channel"}, "activation_range"),
        ({"weight_granularity": "per-channel"}, "weight_granularity"),
        ({"quantized_modules": {"classifier": "conv"}}, "quantized_modules"),
        ({"format_version": 2}, "format_version"),
    ],
)
def test_config_validation_names_the_field(kwargs, field_name):
    with pytest.raises(ValueError, match=field_name):
        Int8QuantizationConfig(**kwargs)


def test_config_from_dict_rejects_unknown_keys_and_round_trips():
    config = Int8QuantizationConfig(modules_to_not_convert=["classifier"])
    assert Int8QuantizationConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="group_size"):
        Int8QuantizationConfig.from_dict({**config.to_dict(), "group_size": 128})


# ---------------------------------------------------------------- quantize_


@pytest.mark.parametrize("name", list(MODELS))
def test_int8_logits_close_to_fp32(name):
    model = MODELS[name]()
    reference = logits(model)
    assert quantize_(model) is model
    assert sqnr_db(reference, logits(model)) >= 20
    assert isinstance(model.get_input_embeddings(), Int8Embedding)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())


def test_every_linear_and_the_word_embeddings_are_converted():
    model = tiny_bert()
    linear_names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    quantize_(model)
    modules = dict(model.named_modules())
    assert all(isinstance(modules[n], Int8Linear) for n in linear_names)
    assert isinstance(modules["bert.embeddings.word_embeddings"], Int8Embedding)
    # position and token-type tables are small: left in fp32 by default
    assert isinstance(modules["bert.embeddings.position_embeddings"], nn.Embedding)
    expected = {n: "linear" for n in linear_names} | {"bert.embeddings.word_embeddings": "embedding"}
    assert model.config.quantization_config.quantized_modules == expected
    assert model.config.compression["quantization"]["linear"] == len(linear_names)


def test_weights_are_int8_per_row_with_rounding_error_below_half_a_step():
    torch.manual_seed(0)
    weight = torch.randn(16, 40) * torch.logspace(-3, 0, 16)[:, None]  # rows of very different ranges
    codes, scale = quantize_rows(weight)
    assert codes.dtype == torch.int8 and codes.abs().max() <= 127
    assert torch.equal(codes.abs().amax(dim=1), torch.full((16,), 127, dtype=torch.int8))  # full range per row
    error = (codes.float() * scale[:, None] - weight).abs()
    assert (error <= scale[:, None] / 2 + 1e-7).all()


def test_pruned_zeros_stay_exactly_zero():
    model = pruned_bert()
    zero_masks = {n: m.weight == 0 for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    quantize_(model)
    modules = dict(model.named_modules())
    for name, mask in zero_masks.items():
        assert mask.float().mean() >= 0.9
        assert (modules[name].int8_weight()[mask] == 0).all()
        assert torch.isfinite(modules[name].weight_scale).all()


def test_albert_shared_layer_and_embedding_projection_are_quantized():
    model = tiny_albert()
    quantize_(model)
    assert isinstance(model.albert.encoder.embedding_hidden_mapping_in, Int8Linear)
    shared = model.albert.encoder.albert_layer_groups[0].albert_layers[0]
    assert isinstance(shared.attention.query, Int8Linear) and isinstance(shared.ffn, Int8Linear)
    # One shared group: each int8 weight is stored once, however many layers apply it
    # word embeddings, mapping, the shared layer's 6 Linears, pooler, classifier
    assert len(model.config.quantization_config.quantized_modules) == 1 + 1 + 6 + 1 + 1
    assert model.get_input_embeddings().int8_weight().shape == (VOCAB, 16)


def test_classifier_excluded_by_config_or_filter_fn_stays_fp32():
    for kwargs in (
        {"config": Int8QuantizationConfig(modules_to_not_convert=["classifier"])},
        {"filter_fn": lambda module, name: name != "classifier"},
    ):
        model = tiny_bert()
        weight = model.classifier.weight.detach().clone()
        quantize_(model, **kwargs)
        assert type(model.classifier) is nn.Linear and model.classifier.weight.dtype == torch.float32
        assert torch.equal(model.classifier.weight, weight)
        assert isinstance(model.bert.pooler.dense, Int8Linear)
        assert "classifier" not in model.config.quantization_config.quantized_modules


def test_quantize_embeddings_false_keeps_word_embeddings_fp32():
    model = quantize_(tiny_bert(), Int8QuantizationConfig(quantize_embeddings=False))
    assert type(model.bert.embeddings.word_embeddings) is nn.Embedding


def test_quantizing_twice_raises():
    model = quantize_(tiny_bert())
    with pytest.raises(ValueError, match="already quantized"):
        quantize_(model)


@pytest.mark.parametrize(
    "config, message",
    [
        (Int8QuantizationConfig(modules_to_convert=["bert.embeddings.LayerNorm"]), "LayerNorm"),
        (Int8QuantizationConfig(modules_to_convert=["bert.encoder.layer.0.attention"]), "BertAttention"),
        (Int8QuantizationConfig(modules_to_convert=["bert.no_such_module"]), "no_such_module"),
        (Int8QuantizationConfig(modules_to_not_convert=["clasifier"]), "clasifier"),
        (Int8QuantizationConfig(quantized_modules={"classifier": "linear"}), "quantized_modules"),
    ],
)
def test_bad_selection_raises_before_touching_the_model(config, message):
    model = tiny_bert()
    with pytest.raises(ValueError, match=message):
        quantize_(model, config)
    assert not any(isinstance(m, (Int8Linear, Int8Embedding)) for m in model.modules())


def test_explicit_modules_to_convert_accepts_linear_and_embedding():
    names = ["bert.pooler.dense", "bert.embeddings.position_embeddings"]
    model = quantize_(tiny_bert(), Int8QuantizationConfig(modules_to_convert=names))
    assert isinstance(model.bert.pooler.dense, Int8Linear)
    assert isinstance(model.bert.embeddings.position_embeddings, Int8Embedding)
    assert type(model.bert.encoder.layer[0].attention.self.query) is nn.Linear


def test_tied_word_embeddings_stay_fp32_and_tied():
    torch.manual_seed(0)
    model = BertForMaskedLM(tiny_bert_config()).eval()
    quantize_(model)
    assert type(model.bert.embeddings.word_embeddings) is nn.Embedding
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert isinstance(model.bert.encoder.layer[0].intermediate.dense, Int8Linear)


def test_fbgemm_kernel_matches_the_reference_path():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    module = Int8Linear.from_linear(linear)
    x = torch.randn(5, 7, 64)
    reference = nn.functional.linear(x, module.dequantized_weight(), module.bias)  # what a torch without fbgemm runs
    assert sqnr_db(reference, module(x)) >= 30
    assert sqnr_db(linear(x), module(x)) >= 25


def test_activation_ranges_are_per_token_unless_per_batch_is_asked():
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    x = torch.randn(8, 64)
    x[0] *= 1000  # one outlier token: with one range per batch it leaves the others ~1 bit
    per_token, per_batch = Int8Linear.from_linear(linear), Int8Linear.from_linear(linear, per_token=False)
    reference = nn.functional.linear(x, per_token.dequantized_weight(), linear.bias)
    assert sqnr_db(reference[1:], per_token(x)[1:]) >= 30
    assert sqnr_db(reference[1:], per_batch(x)[1:]) < 10
    assert sqnr_db(reference[0], per_batch(x)[0]) >= 30


def test_per_batch_bias_fused_into_the_kernel_follows_every_bias_change():
    torch.manual_seed(0)
    module = Int8Linear.from_linear(nn.Linear(64, 48), per_token=False)
    x = torch.randn(5, 7, 64)
    packed, _ = module._packed_weight()
    unfused = torch.ops.quantized.linear_dynamic(x, packed.plain(), False) + module.bias.detach()
    with torch.no_grad():
        torch.testing.assert_close(module(x), unfused, rtol=0, atol=1e-5)
        # An edit that leaves the version counter alone (.data, or a fused optimizer's kernel) still reaches the
        # output: the fused copy is checked against the bias's values.
        version = module.bias._version
        module.bias.data.add_(1.0)
        assert module.bias._version == version
        torch.testing.assert_close(module(x), unfused + 1.0, rtol=0, atol=1e-5)
    # A training call (the bias changes every step) adds the bias after the kernel instead of repacking it.
    fused_bias = packed._fused_bias.clone()
    with torch.no_grad():
        module.bias.add_(1.0)
    y = module(x.requires_grad_(True))
    torch.testing.assert_close(y.detach(), unfused + 2.0, rtol=0, atol=1e-5)
    assert torch.equal(packed._fused_bias, fused_bias)
    assert isinstance(packed, fbgemm.PackedWeight)


def test_per_batch_activation_range_round_trips(tmp_path):
    model = tiny_bert()
    reference = logits(model)
    quantize_(model, Int8QuantizationConfig(activation_range="per_batch"))
    assert sqnr_db(reference, logits(model)) >= 20
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert loaded.bert.pooler.dense.per_token is False
    assert torch.equal(logits(loaded), logits(model))


@pytest.mark.skipif(not fbgemm.available(), reason="needs torch's fbgemm kernels")
@pytest.mark.parametrize("per_token", [False, True], ids=["per_batch", "per_token"])
def test_per_tensor_weights_run_fbgemms_per_tensor_kernel_with_the_same_numbers(per_token):
    """One scale for every row: packed per-tensor (quantize_dynamic's faster output stage), and the output equals
    the per-channel packing of the same codes and scales bit for bit."""
    torch.manual_seed(0)
    module = Int8Linear.from_linear(nn.Linear(64, 48), per_token=per_token, per_tensor=True)
    codes, scale = module.int8_weight(), module.weight_scale
    assert torch.all(scale == scale[0])
    packed, _ = module._packed_weight()
    assert torch.ops.quantized.linear_unpack(packed.plain())[0].qscheme() == torch.per_tensor_affine
    per_channel = torch._make_per_channel_quantized_tensor(codes, scale.double(), torch.zeros(48, dtype=torch.long), 0)
    reference = torch.ops.quantized.linear_prepack(per_channel, None)
    x = torch.randn(5, 7, 64)
    assert torch.equal(
        torch.ops.quantized.linear_dynamic(x, packed.plain(), False),
        torch.ops.quantized.linear_dynamic(x, reference, False),
    )
    row = Int8Linear.from_linear(nn.Linear(64, 48), per_token=per_token)
    assert torch.ops.quantized.linear_unpack(row._packed_weight()[0].plain())[0].qscheme() == torch.per_channel_affine


def test_per_tensor_weight_granularity_round_trips_and_is_recorded(tmp_path):
    model = tiny_bert()
    reference = logits(model)
    quantize_(model, Int8QuantizationConfig(weight_granularity="per-tensor"))
    linears = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert linears and all(torch.all(m.weight_scale == m.weight_scale[0]) for m in linears)
    assert sqnr_db(reference, logits(model)) >= 20
    model.save_pretrained(tmp_path / "per-tensor")
    saved = json.loads((tmp_path / "per-tensor" / "config.json").read_text())["quantization_config"]
    assert saved["weight_granularity"] == "per-tensor"
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "per-tensor")
    assert torch.equal(logits(loaded), logits(model))
    # per-row (the default) writes config.json as versions before the field did
    per_row = quantize_(tiny_bert(), Int8QuantizationConfig())
    per_row.save_pretrained(tmp_path / "per-row")
    assert (
        "weight_granularity"
        not in json.loads((tmp_path / "per-row" / "config.json").read_text())["quantization_config"]
    )


def test_reference_path_without_fbgemm_is_weight_only_int8(monkeypatch):
    torch.manual_seed(0)
    linear = nn.Linear(64, 48)
    module = Int8Linear.from_linear(linear)
    monkeypatch.setattr(fbgemm, "available", lambda: False)
    x = torch.randn(5, 64)
    assert torch.allclose(module(x), nn.functional.linear(x, module.dequantized_weight(), linear.bias), atol=1e-6)
    assert sqnr_db(linear(x), module(x)) >= 30


def test_deepcopy_gives_an_independent_working_copy():
    model = quantize_(tiny_bert())
    clone = copy.deepcopy(model)
    assert torch.equal(logits(clone), logits(model))
    with torch.no_grad():
        clone.bert.pooler.dense.weight_scale.mul_(2)  # the packed-weight cache must notice
    assert not torch.equal(logits(clone), logits(model))


# ---------------------------------------------------------------- save / load


def weight_bytes(path: str) -> int:
    return os.path.getsize(os.path.join(path, "model.safetensors"))


@pytest.mark.parametrize("name", list(MODELS))
def test_save_and_from_pretrained_give_identical_logits(name, tmp_path):
    model = quantize_(MODELS[name](), Int8QuantizationConfig(modules_to_not_convert=["classifier"]))
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]  # safetensors only: no pickle
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["quantization_config"]["quant_method"] == QUANT_METHOD
    assert saved["quantization_config"]["quantized_modules"] == model.config.quantization_config.quantized_modules
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert f.metadata()["quant_method"] == QUANT_METHOD
        for module_name in saved["quantization_config"]["quantized_modules"]:
            assert f.get_slice(f"{module_name}.weight").get_dtype() == "I8"
            assert f.get_slice(f"{module_name}.weight_scale").get_dtype() == "F32"

    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert torch.equal(logits(loaded), logits(model))
    assert type(loaded.classifier) is nn.Linear
    assert isinstance(loaded.get_input_embeddings(), Int8Embedding)
    assert loaded.config.quantization_config.quantized_modules == model.config.quantization_config.quantized_modules


def test_bytes_on_disk_at_most_30_percent_of_fp32(tmp_path):
    # hidden 128 / intermediate 512: big enough that headers and LayerNorms weigh what they do in real models
    model = tiny_bert(0, hidden_size=128, intermediate_size=512)
    model.save_pretrained(tmp_path / "fp32")
    quantize_(model).save_pretrained(tmp_path / "int8")
    ratio = weight_bytes(tmp_path / "int8") / weight_bytes(tmp_path / "fp32")
    assert ratio <= 0.30


def test_checkpoint_without_quantization_config_loads_as_fp32_unchanged(tmp_path):
    model = tiny_bert()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert not any(isinstance(m, (Int8Linear, Int8Embedding)) for m in loaded.modules())
    assert getattr(loaded.config, "quantization_config", None) is None
    assert torch.equal(logits(loaded), logits(model))


def test_from_pretrained_with_quantization_config_quantizes_on_load(tmp_path):
    tiny_bert().save_pretrained(tmp_path)
    config = Int8QuantizationConfig(modules_to_not_convert=["classifier"])
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, quantization_config=config)
    expected = quantize_(tiny_bert(), Int8QuantizationConfig(modules_to_not_convert=["classifier"]))
    assert isinstance(loaded.bert.pooler.dense, Int8Linear) and type(loaded.classifier) is nn.Linear
    assert torch.equal(logits(loaded), logits(expected))
    loaded.save_pretrained(tmp_path / "int8")
    assert torch.equal(logits(AutoModelForSequenceClassification.from_pretrained(tmp_path / "int8")), logits(expected))


def test_tied_masked_lm_round_trips(tmp_path):
    torch.manual_seed(0)
    model = quantize_(BertForMaskedLM(tiny_bert_config()).eval())
    model.save_pretrained(tmp_path)
    loaded = AutoModelForMaskedLM.from_pretrained(tmp_path)
    ids = inputs()["input_ids"]
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)


def test_quantize_pretrained_writes_a_loadable_int8_checkpoint(tmp_path):
    model = tiny_bert()
    model.save_pretrained(tmp_path / "fp32")
    out = quantize_pretrained(str(tmp_path / "fp32"), str(tmp_path / "int8"))
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert isinstance(loaded.bert.pooler.dense, Int8Linear)
    assert sqnr_db(logits(model), logits(loaded)) >= 20


def test_fresh_process_that_imports_hf_compress_loads_identical_logits(tmp_path):
    model = quantize_(tiny_albert())
    model.save_pretrained(tmp_path / "int8")
    batch = inputs()
    save_file({**batch, "logits": logits(model, batch).contiguous()}, tmp_path / "expected.safetensors")
    result = run_python(
        f"""
        import torch, hf_compress
        from safetensors.torch import load_file
        from transformers import AutoModelForSequenceClassification
        expected = load_file({str(tmp_path / "expected.safetensors")!r})
        want = expected.pop("logits")
        model = AutoModelForSequenceClassification.from_pretrained({str(tmp_path / "int8")!r})
        with torch.no_grad():
            got = model(**expected).logits
        print("MAXDIFF", (got - want).abs().max().item(), type(model.albert.pooler).__name__)
        """,
        cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MAXDIFF 0.0 Int8Linear" in result.stdout


def test_loading_without_hf_compress_fails_loudly(tmp_path):
    quantize_(tiny_bert()).save_pretrained(tmp_path / "int8")
    result = load_in_stock_transformers(tmp_path / "int8")
    assert result.returncode != 0, result.stdout
    assert "FAILED AutoModelForSequenceClassification RuntimeError" in result.stdout
    assert "FAILED BertForSequenceClassification RuntimeError" in result.stdout
    assert "LOADED" not in result.stdout and "hf_compress imported: False" in result.stdout
    assert QUANT_METHOD in result.stderr  # transformers' "Unknown quantization type, got hf_compress_int8"
    assert "size mismatch" in result.stderr
    # The load report that transformers' error points to names the fix.
    assert "requires_hf_compress:pip_install_hf-compress_then_import_hf_compress" in result.stderr


# ---------------------------------------------------------------- MiniLM


@pytest.fixture(scope="module")
def minilm():
    from transformers import AutoTokenizer

    from hf_compress.data import minilm_path

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=3).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    texts = [
        "the self driving car stopped at the light",
        "i love this phone, the battery lasts forever",
        "worst service ever, never again",
        "meeting moved to 3pm tomorrow",
    ] * 4
    batch = dict(tokenizer(texts, padding=True, return_tensors="pt"))
    return model, batch


@pytest.mark.slow
def test_minilm_quantizes_small_and_accurate(minilm, tmp_path):
    model, batch = minilm
    model = copy.deepcopy(model)
    reference = logits(model, batch)
    # the [CLS] pooled sentence embedding too: a random 3-label head alone says little
    with torch.no_grad():
        pooled_reference = model.bert(**batch).pooler_output
    model.save_pretrained(tmp_path / "fp32")
    # On MiniLM with a random head, the default per-batch activation range reaches only ~10 dB (activation outliers);
    # per-token ranges keep >= 20 dB. The default's SQNR on the fine-tuned teacher (27.5 dB) is in benchmarks/.
    # Its time (<= 5 s asked) is measured in benchmarks/quantization.py, not asserted here.
    quantize_(model, Int8QuantizationConfig(activation_range="per_token"))
    assert sqnr_db(reference, logits(model, batch)) >= 20
    with torch.no_grad():
        assert sqnr_db(pooled_reference, model.bert(**batch).pooler_output) >= 20
    model.save_pretrained(tmp_path / "int8")
    assert weight_bytes(tmp_path / "int8") <= 0.30 * weight_bytes(tmp_path / "fp32")
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "int8")
    assert torch.equal(logits(loaded, batch), logits(model, batch))


# ---------------------------------------------------------------- Trainer, pipeline, evaluate

# transformers 5 has no question-answering pipeline (so evaluate has no QA evaluator that runs): QA goes through
# Trainer only.
HEADS = {
    "sequence": (BertForSequenceClassification, AutoModelForSequenceClassification, "text-classification"),
    "token": (BertForTokenClassification, AutoModelForTokenClassification, "token-classification"),
    "qa": (BertForQuestionAnswering, AutoModelForQuestionAnswering, None),
}
ENTRY_POINTS = ("predict", "evaluate", "pipeline", "evaluator")
EVAL_CASES = [
    (head, where, entry)
    for head, (_, _, task) in HEADS.items()
    for where in ("in_memory", "reloaded")
    for entry in ENTRY_POINTS
    if task is not None or entry in ("predict", "evaluate")
]
TEXTS = [" ".join(f"w{(7 * i + 13 * j) % 900}" for j in range(3 + i % 5)) for i in range(12)]


def int8_head_model(head: str, where: str, directory) -> tuple[nn.Module, object, object]:
    """(int8 model, what pipeline/evaluator take as the model, tokenizer) for a tiny BERT with the given head."""
    model_class, auto_class, _ = HEADS[head]
    torch.manual_seed(0)
    # With BERT's 0.02 init, a random sequence head predicts one class for every text; larger weights spread it.
    init = 0.5 if head == "sequence" else 0.02
    config = tiny_bert_config(num_labels=2 if head == "qa" else 3, initializer_range=init)
    model = quantize_(model_class(config).eval())
    tokenizer = tiny_tokenizer(directory / "tokenizer")
    if where == "in_memory":
        return model, model, tokenizer
    model.save_pretrained(directory / "int8")
    tokenizer.save_pretrained(directory / "int8")
    return auto_class.from_pretrained(directory / "int8"), str(directory / "int8"), tokenizer


def trainer_for(model, directory, **kwargs) -> Trainer:
    args = TrainingArguments(
        output_dir=str(directory / "trainer"), per_device_eval_batch_size=64, report_to="none", disable_tqdm=True
    )
    return Trainer(model=model, args=args, **kwargs)


def head_outputs(head: str, model, batch: dict) -> tuple[np.ndarray, ...]:
    """The model's own forward on one batch: the arrays Trainer gathers as predictions."""
    with torch.no_grad():
        out = model.eval()(**batch)
    arrays = (out.start_logits, out.end_logits) if head == "qa" else (out.logits,)
    return tuple(a.numpy() for a in arrays)


def head_labels(head: str, outputs: tuple[np.ndarray, ...]) -> dict:
    """Labels for each head (the model's own argmax): Trainer.evaluate then reports a loss we recompute here."""
    if head == "qa":
        return {"start_positions": outputs[0].argmax(-1), "end_positions": outputs[1].argmax(-1)}
    return {"labels": outputs[0].argmax(-1)}


@pytest.mark.parametrize("head, where, entry", EVAL_CASES)
def test_int8_models_evaluate_like_any_model(head, where, entry, tmp_path):
    model, model_arg, tokenizer = int8_head_model(head, where, tmp_path)
    if entry in ("predict", "evaluate"):
        # One batch without padding: with one activation range per batch, a different batching would change logits.
        batch = tiny_batch(batch_size=16, seq_len=10, seed=1)
        batch = {"input_ids": batch["input_ids"], "attention_mask": torch.ones_like(batch["input_ids"])}
        expected = head_outputs(head, model, batch)
        labels = head_labels(head, expected)
        dataset = Dataset.from_dict({**{k: v.tolist() for k, v in batch.items()}, **labels})
        if entry == "predict":
            predictions = trainer_for(model, tmp_path).predict(dataset.remove_columns(list(labels))).predictions
        else:
            seen = []
            trainer = trainer_for(model, tmp_path, compute_metrics=lambda p: seen.append(p.predictions) or {})
            metrics = trainer.evaluate(dataset)
            predictions = seen[0]
            with torch.no_grad():
                loss = model(**batch, **{k: torch.as_tensor(v) for k, v in labels.items()}).loss.item()
            assert metrics["eval_loss"] == pytest.approx(loss, rel=1e-6)
        predictions = predictions if isinstance(predictions, tuple) else (predictions,)
        assert len(predictions) == len(expected)
        for got, want in zip(predictions, expected):
            np.testing.assert_array_equal(got, want)
        return

    # pipeline and evaluator run one text per forward, as we do here.
    task = HEADS[head][2]
    expected = []
    for text in TEXTS:
        enc = tokenizer(text, return_tensors="pt")
        probs = head_outputs(head, model, dict(enc))[0][0]
        probs = torch.softmax(torch.from_numpy(probs), -1)
        expected.append(probs if head == "sequence" else probs[1:-1])  # the token pipeline drops [CLS] and [SEP]
    id2label = model.config.id2label
    if entry == "pipeline":
        pipe = pipeline(task, model=model_arg, tokenizer=tokenizer)
        for text, want in zip(TEXTS, expected):
            if head == "sequence":
                got = {r["label"]: r["score"] for r in pipe(text, top_k=None)}
                np.testing.assert_allclose([got[id2label[i]] for i in range(len(want))], want.numpy(), atol=1e-6)
            else:
                got = pipe(text, ignore_labels=[])
                assert [r["entity"] for r in got] == [id2label[i] for i in want.argmax(-1).tolist()]
                np.testing.assert_allclose([r["score"] for r in got], want.amax(-1).numpy(), atol=1e-6)
        return

    evaluator = evaluate.evaluator(task)
    if head == "sequence":
        predicted = [int(p.argmax()) for p in expected]
        assert len(set(predicted)) > 1  # a constant predictor could not pass by chance
        data = Dataset.from_dict({"text": TEXTS, "label": predicted})
        result = evaluator.compute(
            model_or_pipeline=model_arg,
            tokenizer=tokenizer,
            data=data,
            metric=evaluate.load(metric_path("accuracy")),
            label_mapping=model.config.label2id,
        )
        assert result["accuracy"] == 1.0
    else:
        tags = [[id2label[i] for i in p.argmax(-1).tolist()] for p in expected]
        assert len({t for row in tags for t in row}) > 1
        features = Features({"tokens": List(Value("string")), "tags": List(ClassLabel(names=list(id2label.values())))})
        data = Dataset.from_dict({"tokens": [t.split() for t in TEXTS], "tags": tags}, features=features)
        result = evaluator.compute(
            model_or_pipeline=model_arg,
            tokenizer=tokenizer,
            data=data,
            metric=SequenceMatch(),
            input_column="tokens",
            label_column="tags",
        )
        assert result["exact_match"] == 1.0


class SequenceMatch(evaluate.Metric):
    """Fraction of tag sequences predicted exactly (seqeval is a Hub script: not loadable offline)."""

    def _info(self):
        features = Features({"predictions": List(Value("string")), "references": List(Value("string"))})
        return evaluate.MetricInfo(description=self.__doc__, citation="", features=features)

    def _compute(self, predictions, references):
        return {"exact_match": float(np.mean([p == r for p, r in zip(predictions, references)]))}


# ---------------------------------------------------------------- training an int8 model


def test_int8_linear_runs_the_kernel_forward_and_the_float_matmul_backward():
    torch.manual_seed(0)
    module = Int8Linear.from_linear(nn.Linear(64, 48), per_token=False)
    x = torch.randn(5, 7, 64)
    x[0, 0] *= 50  # an outlier: int8 and float outputs differ visibly
    with torch.no_grad():
        kernel = module(x)
    reference = nn.functional.linear(x, module.dequantized_weight(), module.bias.detach())
    assert (kernel - reference).abs().max() > 1e-3
    x.requires_grad_(True)
    y = module(x)
    torch.testing.assert_close(y.detach(), kernel, rtol=0, atol=1e-5)  # what inference computes
    g = torch.randn_like(y)
    y.backward(g)
    torch.testing.assert_close(x.grad, g @ module.dequantized_weight())  # straight through the rounding
    torch.testing.assert_close(module.bias.grad, g.sum(dim=(0, 1)))
    assert module.weight.grad is None and not module.weight.requires_grad


@pytest.mark.parametrize("where", ["in_memory", "reloaded"])
def test_trainer_trains_the_float_parameters_and_freezes_the_int8_codes(where, tmp_path):
    model = quantize_(tiny_bert())
    if where == "reloaded":
        model.save_pretrained(tmp_path / "int8")
        model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "int8")
    int8 = {n: t.clone() for n, t in model.state_dict().items() if t.dtype == torch.int8 or "weight_scale" in n}
    floats = {n: p.detach().clone() for n, p in model.named_parameters() if p.is_floating_point()}
    data = tiny_dataset(n=64)
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        num_train_epochs=4,
        learning_rate=1e-2,
        per_device_train_batch_size=16,
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    loss_before = trainer.evaluate(data)["eval_loss"]
    trainer.train()
    assert trainer.evaluate(data)["eval_loss"] < loss_before - 0.01

    state = model.state_dict()
    assert all(torch.equal(state[n], t) for n, t in int8.items())
    # Every float parameter moved, down to the embeddings: gradients flowed back through every Int8Linear.
    unchanged = [n for n, p in model.named_parameters() if n in floats and torch.equal(p, floats[n])]
    assert unchanged == []
    assert "bert.embeddings.LayerNorm.weight" in floats and "bert.encoder.layer.0.attention.self.query.bias" in floats
    trainer.save_model(str(tmp_path / "trained"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "trained")
    assert torch.equal(logits(reloaded), logits(model))


# ---------------------------------------------------------------- no_grad and inference_mode

CONTEXTS = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


@pytest.mark.parametrize("context", list(CONTEXTS))
@pytest.mark.parametrize("step", ["quantize_", "quantize_pretrained", "from_pretrained"])
def test_quantize_and_load_under_no_grad_and_inference_mode(step, context, tmp_path):
    expected = logits(quantize_(tiny_bert()))
    quantize_(tiny_bert()).save_pretrained(tmp_path / "saved")
    batch = inputs()
    with CONTEXTS[context]():
        if step == "quantize_":
            model = quantize_(tiny_bert())  # built and quantized inside the context
        elif step == "quantize_pretrained":
            tiny_bert().save_pretrained(tmp_path / "fp32")
            quantize_pretrained(str(tmp_path / "fp32"), str(tmp_path / "int8"))
            model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "int8")
        else:
            model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved")
        inside = model(**batch).logits
    assert torch.equal(inside, expected)
    assert torch.equal(logits(model, batch), expected)  # used outside the context
    with torch.no_grad():
        model.bert.pooler.dense.weight_scale.mul_(2)  # an in-place edit outside: the packed-weight cache notices
    assert not torch.equal(logits(model, batch), expected)


def test_int8_linear_built_from_inference_tensors_runs_in_and_out_of_inference_mode():
    torch.manual_seed(0)
    with torch.inference_mode():
        linear = nn.Linear(64, 48)
        x = torch.randn(5, 64)
        module = Int8Linear.from_linear(linear)
        inside = module(x)
        assert not module.weight.is_inference() and not module.weight_scale.is_inference()
    with torch.no_grad():
        assert torch.equal(module(x), inside)
    # A module whose tensors are inference tensors (assigned by a user in inference mode) still runs.
    with torch.inference_mode():
        module.weight_scale = module.weight_scale.clone()
        assert module.weight_scale.is_inference()
        assert torch.equal(module(x), inside)
    with torch.no_grad():
        assert torch.equal(module(x), inside)


# ---------------------------------------------------------------- factorised (low-rank) models


def factorised(name: str = "bert", seed: int = 0) -> nn.Module:
    """A tiny model whose encoder Linears are LowRankLinear keeping half of their parameters."""
    from hf_compress import factorize_linear_

    return factorize_linear_(MODELS[name]() if name != "bert" else tiny_bert(seed), rank_ratio=0.5).eval()


@pytest.mark.parametrize("activation_range", ["per_batch", "per_token"])
@pytest.mark.parametrize("name", ["bert", "albert_shared"])
def test_factorised_linears_quantize_to_int8_factors_close_to_the_float_factorised_model(name, activation_range):
    from hf_compress import LowRankLinear, recorded_ranks
    from hf_compress.methods.low_rank.int8 import Int8LowRankLinear

    model = factorised(name)
    ranks = recorded_ranks(model.config)
    expected, batch = logits(model), inputs()
    quantize_(model, Int8QuantizationConfig(activation_range=activation_range))
    # Measured 29.8-35.5 dB on tiny BERTs (seeds 0-2, both ranges), as dense int8 of the same models (30.3-35.1).
    assert sqnr_db(expected, logits(model, batch)) >= 25
    assert not any(isinstance(m, LowRankLinear) for m in model.modules())
    config = model.config.quantization_config
    assert config.low_rank_ranks == ranks
    assert {n for n, k in config.quantized_modules.items() if k == "low_rank_linear"} == set(ranks)
    for module_name, rank in ranks.items():
        module = model.get_submodule(module_name)
        assert isinstance(module, Int8LowRankLinear) and module.rank == rank
        assert module.weight.dtype == torch.int8 and module.weight.dim() == 1


def test_int8_low_rank_kernel_matches_its_factors_and_the_reference_path():
    from hf_compress import LowRankLinear
    from hf_compress.methods.low_rank.int8 import Int8LowRankLinear

    torch.manual_seed(0)
    float_module = LowRankLinear.from_factors(torch.randn(48, 16) / 4, torch.randn(16, 64) / 8, torch.randn(48))
    module = Int8LowRankLinear.from_low_rank(float_module)
    down, up = module.dequantized_weights()
    # Each factor rounded like an Int8Linear's weight (rounding.linear_codes): same codes, same scales.
    for exact, codes, scale in (
        (float_module.down_weight, module.int8_weights()[0], module.weight_scale[:16]),
        (float_module.up_weight, module.int8_weights()[1], module.weight_scale[16:]),
    ):
        expected_codes, expected_scale = linear_codes(exact)
        assert torch.equal(codes, expected_codes) and torch.equal(scale, expected_scale)
    x = torch.randn(5, 7, 64)
    with torch.no_grad():
        reference = nn.functional.linear(nn.functional.linear(x, down), up, module.bias)  # a torch without fbgemm
        assert sqnr_db(reference, module(x)) >= 30
        assert sqnr_db(float_module(x), module(x)) >= 25


@pytest.mark.parametrize("name", ["bert", "albert_shared"])
def test_factorised_int8_model_reloads_through_from_pretrained_with_identical_logits(name, tmp_path):
    from hf_compress import LowRankLinear, recorded_ranks
    from hf_compress.methods.low_rank.int8 import Int8LowRankLinear

    model = factorised(name)
    ranks = recorded_ranks(model.config)
    kept_float = sorted(ranks)[0]  # one factorised module stays float: the loader must rebuild it too
    config = Int8QuantizationConfig(modules_to_not_convert=["classifier", kept_float])
    quantize_(model, config).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())["quantization_config"]
    assert saved["quant_method"] == QUANT_METHOD and saved["low_rank_ranks"] == ranks  # one config knows both
    assert (
        saved["quantized_modules"][sorted(ranks)[1]] == "low_rank_linear"
        and kept_float not in saved["quantized_modules"]
    )

    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert (logits(loaded) - logits(model)).abs().max() <= 1e-5
    assert type(loaded.get_submodule(kept_float)) is LowRankLinear
    assert isinstance(loaded.get_submodule(sorted(ranks)[1]), Int8LowRankLinear)
    assert type(loaded.classifier) is nn.Linear


def test_factorised_int8_checkpoint_fails_loudly_without_hf_compress(tmp_path):
    quantize_(factorised()).save_pretrained(tmp_path / "int8")
    result = run_python(
        f"""
        import sys
        import transformers
        try:
            transformers.AutoModelForSequenceClassification.from_pretrained({str(tmp_path / "int8")!r})
            print("LOADED")
        finally:
            print("hf_compress imported:", "hf_compress" in sys.modules)
        """,
        cwd=str(tmp_path),  # not the repo: nothing can import hf_compress by accident
    )
    assert result.returncode != 0 and "LOADED" not in result.stdout
    assert "hf_compress imported: False" in result.stdout
    assert QUANT_METHOD in result.stderr and "size mismatch" in result.stderr


def test_smoothing_and_factorising_refuse_each_other():
    from hf_compress import factorize_linear_, smooth_activations_

    batch = [inputs()]
    with pytest.raises(ValueError, match="is a LowRankLinear"):
        smooth_activations_(factorised(), batch)
    # Factorising after SmoothQuant drops the dense Linears its run-time scales were measured for: quantize_ refuses.
    model = tiny_bert()
    calibration = smooth_activations_(model, batch)
    factorize_linear_(model, rank=2)
    with pytest.raises(ValueError, match="a LowRankLinear.*allowed: names of nn.Linear modules of this model, calib"):
        quantize_(model, calibration=calibration)
    assert not any(isinstance(m, Int8Linear) for m in model.modules())  # refused before any module is replaced


def test_factorised_checkpoint_quantizes_with_quantize_pretrained_not_on_load(tmp_path):
    from hf_compress.methods.low_rank.int8 import Int8LowRankLinear

    model = factorised()
    model.save_pretrained(tmp_path / "factorised")
    out = quantize_pretrained(str(tmp_path / "factorised"), str(tmp_path / "int8"))
    loaded = AutoModelForSequenceClassification.from_pretrained(out)
    assert isinstance(loaded.bert.encoder.layer[0].output.dense, Int8LowRankLinear)
    assert sqnr_db(logits(model), logits(loaded)) >= 25
    # transformers reads one quantization_config: the layout's cannot be swapped for int8 while loading.
    with pytest.raises(ValueError, match="quantized with LowRankConfig"):
        AutoModelForSequenceClassification.from_pretrained(
            tmp_path / "factorised", quantization_config=Int8QuantizationConfig()
        )


@pytest.mark.parametrize("bias", [True, False])
def test_inference_calls_go_straight_to_the_kernel_with_the_same_numbers(bias):
    """In eval mode without autograd, a per-batch Int8Linear hands x straight to fbgemm (no bookkeeping) and gets the
    full path's floats; training mode, autograd and per-token ranges take the full path."""
    torch.manual_seed(0)
    module = Int8Linear.from_linear(nn.Linear(64, 32, bias=bias), per_token=False).eval()
    x = torch.randn(5, 7, 64)
    calls = []
    full_matmul = module._matmul
    module._matmul = lambda *args: calls.append(1) or full_matmul(*args)
    with torch.no_grad():
        direct = module(x)
        assert calls == []  # the kernel was called directly
        module._direct = None
        assert torch.equal(module(x), direct) and calls == [1]
    module.train()
    module.eval()  # switching back prepares the direct call again
    with torch.no_grad():
        module(x)
    assert calls == [1]
    module(x.requires_grad_())  # autograd: the full path (straight-through gradient)
    module.train()
    with torch.no_grad():
        module(x)
    assert calls == [1, 1, 1]
    per_token = Int8Linear.from_linear(nn.Linear(64, 32), per_token=True).eval()
    assert per_token._direct is None
