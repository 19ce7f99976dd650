"""Low-bit weights: exact packing, the quantizers, STE gradients, baked == fake-quantized, save/load, refusals."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from hf_compress import (
    FakeQuantEmbedding,
    FakeQuantLinear,
    LowBitEmbedding,
    LowBitLinear,
    bake_low_bit_,
    fake_quantize_,
    pack_codes,
    prune_vocabulary_,
    quantize_,
    set_low_bit_compute_,
    unpack_codes,
)
from hf_compress.methods.low_bit.fake_quant import dequantize_groups, quantize_groups
from tests.testing_utils import load_in_stock_transformers, tiny_batch, tiny_bert, tiny_tokenizer


def inputs(batch_size: int = 4, seed: int = 0) -> dict:
    batch = tiny_batch(batch_size=batch_size, seed=seed)
    batch.pop("labels")
    return batch


def logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


@pytest.mark.parametrize("bits", [8, 4, 2, 1])
@pytest.mark.parametrize("numel", [1, 3, 37, 4096])
def test_packing_round_trips_exactly(bits, numel):
    offset = 2 ** (bits - 1)
    generator = torch.Generator().manual_seed(numel)
    if bits == 1:  # binary codes are -1 or +1 (no zero)
        codes = torch.randint(0, 2, (numel,), generator=generator) * 2 - 1
        codes[0], codes[-1] = -1, (1 if numel > 1 else codes[-1])
    else:
        codes = torch.randint(-offset, offset, (numel,), generator=generator)
        codes[0] = -offset  # both ends of the range
        codes[-1] = offset - 1 if numel > 1 else codes[-1]
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-numel * bits // 8)
    assert torch.equal(unpack_codes(packed, bits, numel), codes.to(torch.int8))


def test_packing_layout_and_refusals():
    # Offset binary, first code in the low bits: 4-bit codes (-8, 7) are bytes 0x0 and 0xF -> 0xF0.
    assert pack_codes(torch.tensor([-8, 7]), 4).tolist() == [0xF0]
    assert pack_codes(torch.tensor([-1, 0, 1, -2]), 2).tolist() == [1 | 2 << 2 | 3 << 4 | 0 << 6]
    with pytest.raises(ValueError, match=r"codes=.* is invalid; allowed: codes in \[-2, 1\]"):
        pack_codes(torch.tensor([2]), 2)
    with pytest.raises(ValueError, match="bits=3 is invalid"):
        pack_codes(torch.tensor([0]), 3)
    # 1 bit: the sign bit, 8 codes per byte, first code in the low bit; a zero code has no 1-bit form.
    assert pack_codes(torch.tensor([1, -1, -1, 1, 1, 1, -1, 1, -1]), 1).tolist() == [0b10111001, 0]
    with pytest.raises(ValueError, match=r"codes=.* is invalid; allowed: -1 or \+1 for 1-bit codes"):
        pack_codes(torch.tensor([1, 0]), 1)


@pytest.mark.parametrize("group_size", [None, 8, 12])
def test_quantizers(group_size):
    w = torch.randn(6, 32, generator=torch.Generator().manual_seed(0))
    for bits, top in ((8, 63), (4, 7), (2, 1), (1, 1)):
        codes, scales = quantize_groups(w, bits, group_size)
        groups = 1 if group_size is None else -(-32 // group_size)
        assert codes.shape == w.shape and scales.shape == (6, groups)
        assert int(codes.abs().max()) == top  # absmax grids reach their ends; ternary codes are in {-1, 0, 1}
    # Ternary by hand for one group: Δ = 0.7·mean|w|, α = mean |w| over |w| > Δ.
    size = 32 if group_size is None else group_size
    g = w[0, :size]
    delta = 0.7 * g.abs().mean()
    alpha = g.abs()[g.abs() > delta].mean()
    codes, scales = quantize_groups(w, 2, group_size)
    assert torch.equal(codes[0, :size], (torch.sign(g) * (g.abs() > delta)).to(torch.int8))
    assert torch.allclose(scales[0, 0], alpha)
    # Binary by hand (XNOR-Net / BinaryBERT): codes sign(w), α = mean |w| of the group (its real entries).
    codes, scales = quantize_groups(w, 1, group_size)
    assert set(codes.unique().tolist()) == {-1, 1}
    assert torch.equal(codes[0, :size], torch.where(g < 0, -1, 1).to(torch.int8))
    assert torch.allclose(scales[0, 0], g.abs().mean())
    last = w[0, (scales.shape[1] - 1) * size :]  # a shorter last group: mean over its own entries
    assert torch.allclose(scales[0, -1], last.abs().mean())
    # 4 bits: round to nearest on max|w|/7 per group, so the error is at most half a step.
    codes, scales = quantize_groups(w, 4, group_size)
    step = torch.repeat_interleave(scales, size, dim=1)[:, :32]
    assert torch.all((dequantize_groups(codes, scales, group_size) - w).abs() <= step / 2 + 1e-6)


@pytest.mark.parametrize("bits", [2, 1])
def test_straight_through_gradients_reach_the_master_weight(bits):
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 8)
    fake = FakeQuantLinear.from_linear(linear, bits=bits)
    assert fake.weight is linear.weight  # the optimizer and pruners see the same Parameter
    x = torch.randn(5, 16, requires_grad=True)
    target = torch.randn(5, 8)
    ((fake(x) - target) ** 2).sum().backward()
    # STE: dL/dW is the gradient of the quantized matmul, passed through unchanged: (dL/dy)^T x.
    quantized = dequantize_groups(*quantize_groups(linear.weight, bits))
    y = x.detach() @ quantized.T + linear.bias.detach()
    expected = (2 * (y - target)).T @ x.detach()
    assert torch.allclose(linear.weight.grad, expected, atol=1e-5) and linear.weight.grad.abs().sum() > 0
    assert x.grad is not None and x.grad.abs().sum() > 0
    embedding = torch.nn.Embedding(10, 8)
    fake_embedding = FakeQuantEmbedding.from_embedding(embedding, bits=4)
    fake_embedding(torch.tensor([[1, 2, 2]])).sum().backward()
    assert embedding.weight.grad[2].eq(2).all() and embedding.weight.grad[0].eq(0).all()


def fake_quantized(bits: int, group_size: int | None, modules: str = "encoder_embeddings"):
    model = tiny_bert(seed=3)
    return fake_quantize_(model, bits, group_size, modules)


def sqnr_db(reference: torch.Tensor, other: torch.Tensor) -> float:
    return float(10 * torch.log10(reference.square().sum() / (reference - other).square().sum().clamp(min=1e-30)))


@pytest.mark.parametrize("group_size", [None, 16, 24])
@pytest.mark.parametrize("bits", [8, 4, 2, 1])
def test_baked_and_reloaded_model_equals_the_fake_quantized_one(tmp_path, bits, group_size):
    model = fake_quantized(bits, group_size)
    batch = inputs()
    expected = logits(model, batch)
    fake_weights = {
        n: dequantize_groups(
            *quantize_groups(m.weight, bits, group_size, isinstance(m, torch.nn.Embedding)), group_size
        )
        for n, m in model.named_modules()
        if isinstance(m, (FakeQuantLinear, FakeQuantEmbedding))
    }
    bake_low_bit_(model)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    modules = dict(reloaded.named_modules())
    for name, weight in fake_weights.items():
        module = modules[name]
        assert isinstance(module, LowBitEmbedding if "embeddings" in name else LowBitLinear)
        assert torch.equal(module.dequantized_weight(), weight)  # the packed codes and scales are exact
        if isinstance(module, LowBitLinear):
            codes, scale = module.int8_rows()
            int8 = codes.float() * scale[:, None]
            if group_size is None:  # re-quantizing per-row low-bit codes to int8 rows is exact
                assert torch.allclose(int8, weight, rtol=1e-6, atol=1e-7)
            else:  # per-group scales: half an int8 step of the row at most
                bound = weight.abs().amax(dim=1, keepdim=True) / 126 + 1e-7
                assert torch.all((int8 - weight).abs() <= bound)
    # The int8 kernel also rounds the activations: within int8 compute's error of the fake-quantized logits.
    got = logits(reloaded, batch)
    assert sqnr_db(expected, got) > 25 and torch.equal(got.argmax(-1), expected.argmax(-1))
    assert torch.equal(got, logits(model, batch))  # reloaded == baked in memory
    set_low_bit_compute_(reloaded, "float")
    assert torch.allclose(logits(reloaded, batch), expected, atol=1e-5)


def test_float_compute_is_recorded_and_loaded(tmp_path):
    model = bake_low_bit_(fake_quantized(4, None), compute="float")
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert reloaded.config.quantization_config.low_bit_compute == "float"
    assert all(m.compute == "float" for m in reloaded.modules() if isinstance(m, LowBitLinear))


def test_file_sizes_fall_with_the_bits(tmp_path):
    sizes = {}
    int8 = quantize_(tiny_bert(seed=3))
    int8.save_pretrained(tmp_path / "int8")
    sizes["int8"] = os.path.getsize(tmp_path / "int8" / "model.safetensors")
    for bits in (8, 4, 2):
        bake_low_bit_(fake_quantized(bits, None)).save_pretrained(tmp_path / str(bits))
        sizes[bits] = os.path.getsize(tmp_path / str(bits) / "model.safetensors")
    assert sizes[2] < sizes[4] < sizes[8] and sizes[4] < sizes["int8"]
    # Packed word embeddings: 1000 x 32 weights take 16,000 bytes at 4 bits, 8,000 at 2, plus 4 bytes per row.
    assert sizes[8] - sizes[4] > 16_000 - 100


def test_stock_transformers_refuses_a_low_bit_checkpoint(tmp_path):
    bake_low_bit_(fake_quantized(4, 16)).save_pretrained(tmp_path / "model")
    result = load_in_stock_transformers(tmp_path / "model")
    assert result.returncode != 0, result.stdout
    assert "LOADED" not in result.stdout and "FAILED BertForSequenceClassification" in result.stdout
    assert "hf_compress imported: False" in result.stdout


def test_pruned_zeros_stay_zero_and_vocabulary_pruning_selects_packed_rows(tmp_path):
    model = tiny_bert(seed=3)
    dense = model.bert.encoder.layer[0].intermediate.dense
    with torch.no_grad():
        dense.weight[:, ::2] = 0
    fake_quantize_(model, 2, 8, "encoder_embeddings")
    bake_low_bit_(model)
    assert torch.all(model.bert.encoder.layer[0].intermediate.dense.codes()[:, ::2] == 0)
    tokenizer = tiny_tokenizer(tmp_path / "tok")
    texts = ["w1 w2 w3 w400", "w7 w900"]
    before = logits(model, tokenizer(texts, padding=True, return_tensors="pt"))
    old = model.get_input_embeddings()
    new_tokenizer = prune_vocabulary_(model, tokenizer, tokenizer(texts)["input_ids"])
    new = model.get_input_embeddings()
    assert isinstance(new, LowBitEmbedding) and new.num_embeddings == len(new_tokenizer) < old.num_embeddings
    assert torch.allclose(logits(model, new_tokenizer(texts, padding=True, return_tensors="pt")), before, atol=1e-6)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match=r"bits\['bert.encoder.layer.0.output.dense'\]=3 is invalid"):
        fake_quantize_(tiny_bert(), {"bert.encoder.layer.0.output.dense": 3})
    with pytest.raises(ValueError, match="group_size=0 is invalid"):
        fake_quantize_(tiny_bert(), 4, group_size=0)
    with pytest.raises(ValueError, match="weight_quantization_modules='heads' is invalid"):
        fake_quantize_(tiny_bert(), 4, modules="heads")
    with pytest.raises(ValueError, match="is invalid; allowed: names of modules"):
        fake_quantize_(tiny_bert(), {"nope": 4})
    model = fake_quantize_(tiny_bert(), 4)
    with pytest.raises(ValueError, match="a model not yet fake-quantized"):
        fake_quantize_(model, 4)
    with pytest.raises(ValueError, match="a model with fake-quantized modules"):
        bake_low_bit_(tiny_bert())


def test_int8_only_configs_do_not_write_the_low_bit_fields():
    # An int8 checkpoint stays readable by hf_compress versions that predate low bits (they refuse unknown keys).
    int8 = quantize_(tiny_bert()).config.quantization_config.to_dict()
    assert "weight_group_size" not in int8 and "low_bit_compute" not in int8
    low_bit = bake_low_bit_(fake_quantized(4, 16)).config.quantization_config.to_dict()
    assert low_bit["weight_group_size"] == 16 and low_bit["low_bit_compute"] == "int8"


def test_weight_bits_4_alone_is_smaller_than_int8_and_names_what_stayed_float(tmp_path):
    from hf_compress import CompressionTrainer, CompressionTrainingArguments, create_student
    from hf_compress.evaluation.measure import bytes_on_disk, float_modules
    from hf_compress.evaluation.table import ReportRow, markdown_table
    from hf_compress.hub import build_model_card
    from tests.testing_utils import tiny_dataset, training_args

    teacher = tiny_bert(seed=1, num_hidden_layers=4)
    student = create_student(teacher, num_hidden_layers=2)
    int8 = quantize_(copy.deepcopy(student))
    int8.save_pretrained(tmp_path / "int8")
    args = training_args(CompressionTrainingArguments, tmp_path / "out", weight_bits=4, max_steps=1)  # defaults
    trainer = CompressionTrainer(model=student, teacher_model=teacher, args=args, train_dataset=tiny_dataset(16))
    trainer.train()
    trainer.save_model(str(tmp_path / "low-bit"))
    assert bytes_on_disk(str(tmp_path / "low-bit")) < bytes_on_disk(str(tmp_path / "int8"))
    kept = float_modules(trainer.model)
    assert "bert.embeddings.word_embeddings" not in kept and "classifier" in kept
    assert "bert.embeddings.position_embeddings" in kept and float_modules(tiny_bert()) is None
    row = ReportRow(name="low-bit", parameters=1, bytes_on_disk=1, float_modules=kept)
    assert "low-bit: kept in float: " in markdown_table([row]) and "`classifier`" in markdown_table([row])
    card = str(build_model_card([row], trainer.model.config))
    assert "Kept in float (32-bit): " in card and "`bert.embeddings.position_embeddings`" in card
