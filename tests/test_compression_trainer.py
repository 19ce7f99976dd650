import pytest
import torch

from hf_compress import CompressionTrainer, CompressionTrainingArguments, create_student
from tests.testing_utils import tiny_bert, tiny_dataset, training_args


def make_trainer(tmp_path, **overrides):
    kwargs = dict(
        logging_steps=2,
        max_steps=10,
        temperature=2.0,
        alpha=0.7,
        target_sparsity=0.5,
        pruning_start=0,
        pruning_end=6,
        pruning_frequency=2,
    )
    kwargs.update(overrides)
    teacher = tiny_bert(seed=1, num_hidden_layers=4)
    return CompressionTrainer(
        model=create_student(teacher, num_hidden_layers=2),
        teacher_model=teacher,
        args=training_args(CompressionTrainingArguments, tmp_path, **kwargs),
        train_dataset=tiny_dataset(64),
    )


def test_distillation_and_pruning_in_one_run(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.train()
    last = [h for h in trainer.state.log_history if "kd_loss" in h][-1]
    assert last["sparsity"] == pytest.approx(0.5, abs=1e-3) and last["kd_loss"] >= 0 and "ce_loss" in last
    assert all(torch.all(w[~trainer.pruner.masks[n]] == 0) for n, w in trainer.pruner.targets.items())


def test_no_pruning_by_default(tmp_path):
    trainer = make_trainer(tmp_path, target_sparsity=0.0)
    assert trainer.pruner is None
    trainer.train()
    assert "sparsity" not in trainer.state.log_history[0]


def test_arguments_validate_both_halves(tmp_path):
    with pytest.raises(ValueError, match="temperature"):
        CompressionTrainingArguments(output_dir=str(tmp_path), temperature=-1)
    with pytest.raises(ValueError, match="target_sparsity"):
        CompressionTrainingArguments(output_dir=str(tmp_path), target_sparsity=1.5)


@pytest.mark.parametrize(
    "fields, method",
    [({"low_rank_ratio": 0.5}, "low_rank"), ({"weight_bits": 4, "target_sparsity": 0.0}, "low_bit")],
)
def test_an_optimizer_built_before_a_conversion_that_replaces_modules_is_refused(tmp_path, fields, method):
    """Methods that replace the student's modules after Trainer.__init__ would leave a ready-made optimizer holding
    the old Parameters: refused before any conversion, naming the method, the user's student untouched."""
    teacher = tiny_bert(seed=1, num_hidden_layers=4)
    student = create_student(teacher, num_hidden_layers=2)
    before = {n: type(m) for n, m in student.named_modules()}
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=rf"optimizers=.*\(None, \.\.\.\) with {method} on"):
        CompressionTrainer(
            model=student,
            teacher_model=teacher,
            args=training_args(CompressionTrainingArguments, tmp_path, max_steps=2, **fields),
            train_dataset=tiny_dataset(8),
            optimizers=(optimizer, None),
        )
    assert {n: type(m) for n, m in student.named_modules()} == before


def test_albert_student_is_converted_and_distilled(tmp_path):
    from transformers import AutoModelForSequenceClassification

    trainer = make_trainer(
        tmp_path, embedding_size=16, num_hidden_groups=1, target_sparsity=0.0, hidden_loss_weight=1.0
    )
    model = trainer.model
    assert model.config.model_type == "albert" and model.config.embedding_size == 16
    assert len(model.albert.encoder.albert_layer_groups) == 1
    shared = model.albert.encoder.albert_layer_groups[0].albert_layers[0].ffn.weight
    before = shared.detach().clone()
    trainer.train()
    assert shared is trainer.model.albert.encoder.albert_layer_groups[0].albert_layers[0].ffn.weight
    assert not torch.equal(before, shared)
    trainer.save_model(str(tmp_path / "final"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final")
    assert reloaded.config.model_type == "albert" and reloaded.config.num_hidden_groups == 1


def test_albert_arguments_are_validated(tmp_path):
    with pytest.raises(ValueError, match="embedding_size"):
        CompressionTrainingArguments(output_dir=str(tmp_path), embedding_size=0)
    with pytest.raises(ValueError, match="num_hidden_groups"):
        CompressionTrainingArguments(output_dir=str(tmp_path), num_hidden_groups=-2)
    with pytest.raises(ValueError, match="num_hidden_groups"):
        make_trainer(tmp_path, num_hidden_groups=3)  # a 2-layer student cannot form 3 groups


def test_quantization_after_training_saves_int8_that_reloads(tmp_path):
    import subprocess
    import sys

    from transformers import AutoModelForSequenceClassification

    trainer = make_trainer(tmp_path, quantization="dynamic-int8", quantization_modules_to_not_convert=["classifier"])
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    config = (tmp_path / "final" / "config.json").read_text()
    assert "hf_compress_int8" in config
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final")
    batch = {"input_ids": torch.tensor([[2, 10, 20, 30, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, trainer.model.eval()(**batch).logits, atol=1e-5)
    assert type(reloaded.classifier) is torch.nn.Linear
    # The pruned zeros survive quantization: int8 zeros stay zeros.
    assert float(trainer.model.config.compression["pruning"]["sparsity"]) == pytest.approx(0.5, abs=1e-3)
    code = "from transformers import AutoModelForSequenceClassification as A; A.from_pretrained(r'%s')"
    result = subprocess.run([sys.executable, "-c", code % (tmp_path / "final")], capture_output=True, text=True)
    assert result.returncode != 0 and "hf_compress" in result.stderr


def test_unknown_quantization_is_refused(tmp_path):
    with pytest.raises(ValueError, match="quantization='int4'"):
        CompressionTrainingArguments(output_dir=str(tmp_path), quantization="int4")


@pytest.mark.parametrize("weighting", ["used", "frequency"])
def test_embedding_weighting_counts_the_training_data(tmp_path, weighting):
    trainer = make_trainer(tmp_path, embedding_size=16, embedding_weighting=weighting, target_sparsity=0.0)
    assert trainer.model.config.compression["albert"]["token_weighted"] is True
    trainer.train()
    assert trainer.model.config.model_type == "albert"


LOW_BIT = dict(target_sparsity=0.0, weight_quantization_modules="encoder_embeddings", hidden_loss_weight=1.0)


@pytest.mark.parametrize(
    "low_bit",
    [
        dict(weight_bits=4, weight_group_size=16),
        dict(weight_bits=2),
        dict(bit_budget_mb=0.02, bit_calibration_batches=2),
        dict(bit_budget_mb=0.02, bit_calibration_batches=2, bit_sensitivity="kl"),
        dict(weight_bits=4, embedding_weight_bits=8, ffn_sparsity=0.5, pruning_end=4),
    ],
    ids=["4bit-groups", "ternary", "budget", "budget-kl", "4bit-ffn-pruned"],
)
def test_low_bit_training_saves_packed_weights_that_reload(tmp_path, low_bit):
    import os

    from transformers import AutoModelForSequenceClassification

    from hf_compress import FakeQuantLinear, LowBitEmbedding, LowBitLinear, quantize_
    from hf_compress.methods.low_bit.bit_widths import planned_megabytes

    trainer = make_trainer(tmp_path, **{**LOW_BIT, **low_bit})
    fakes = {n: m for n, m in trainer.model.named_modules() if isinstance(m, FakeQuantLinear)}
    assert len(fakes) == 12 and set(trainer.low_bit_widths) >= set(fakes)  # 2 layers x 6 Linears, embeddings
    if "bit_budget_mb" in low_bit:
        assert planned_megabytes(trainer.model, trainer.low_bit_widths) <= low_bit["bit_budget_mb"]
        assert len(set(trainer.low_bit_widths.values())) > 1
    master = fakes["bert.encoder.layer.0.intermediate.dense"].weight
    before = master.detach().clone()
    trainer.train()
    assert not torch.equal(before, master)  # the straight-through gradient trained the float master weight
    model = trainer.model
    embeddings = model.bert.embeddings.word_embeddings
    assert isinstance(embeddings, LowBitEmbedding)
    assert embeddings.bits == trainer.low_bit_widths["bert.embeddings.word_embeddings"]
    if "weight_bits" in low_bit:
        assert embeddings.bits == low_bit.get("embedding_weight_bits", low_bit["weight_bits"])
        assert {m.bits for m in model.modules() if isinstance(m, LowBitLinear)} == {low_bit["weight_bits"]}
    dense = model.bert.encoder.layer[0].output.dense
    assert isinstance(dense, LowBitLinear) and type(model.classifier) is torch.nn.Linear
    if "ffn_sparsity" in low_bit:
        assert dense.in_features == 32 and model.config.intermediate_size == 32  # sliced, then packed
    trainer.save_model(str(tmp_path / "final"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final").eval()
    batch = {"input_ids": torch.tensor([[2, 10, 20, 30, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, model.eval()(**batch).logits, atol=1e-5)
    record = reloaded.config.compression["quantization"]
    assert record["method"] == "low_bit" and record["modules"] == "encoder_embeddings"
    sensitivity = low_bit.get("bit_sensitivity", "fisher") if "bit_budget_mb" in low_bit else None
    assert record.get("bit_sensitivity") == sensitivity
    int8 = quantize_(create_student(tiny_bert(seed=1, num_hidden_layers=4), num_hidden_layers=2))
    int8.save_pretrained(tmp_path / "int8")
    size = os.path.getsize(tmp_path / "final" / "model.safetensors")
    assert size < os.path.getsize(tmp_path / "int8" / "model.safetensors")


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(weight_bits=3), "weight_bits=3 is invalid; allowed: null, 8, 4, 2"),
        (dict(weight_bits=4, weight_group_size=0), "weight_group_size=0 is invalid"),
        (dict(weight_bits=4, weight_quantization_modules="heads"), "weight_quantization_modules='heads' is invalid"),
        (dict(bit_budget_mb=-1.0), "bit_budget_mb=-1.0 is invalid"),
        (dict(bit_budget_mb=1.0, bit_sensitivity="hessian"), "bit_sensitivity='hessian' is invalid; allowed: 'f"),
        (dict(weight_bits=4, bit_budget_mb=1.0), "bit_budget_mb=1.0 is invalid; allowed: null when weight_bits=4"),
        (dict(embedding_weight_bits=4), "embedding_weight_bits=4 is invalid; allowed: null unless weight_bits"),
        (dict(weight_group_size=16), "weight_group_size=16 is invalid; allowed: null unless weight_bits"),
        (dict(weight_bits=2, low_rank_ratio=0.5), "low_rank_ratio=0.5 is invalid; allowed: null with weight_bits=2"),
        (dict(weight_bits=4, quantization="dynamic-int8"), "quantization='dynamic-int8' is invalid; allowed: 'none'"),
    ],
)
def test_low_bit_arguments_are_validated(tmp_path, fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CompressionTrainingArguments(output_dir=str(tmp_path), **fields)


def test_low_bit_budget_below_the_minimum_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match=r"budget_mb=1e-05 is invalid; allowed: at least"):
        make_trainer(tmp_path, **LOW_BIT, bit_budget_mb=1e-5)


def test_low_bit_albert_student_with_every_module_reloads(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from hf_compress import LowBitEmbedding, LowBitLinear

    trainer = make_trainer(
        tmp_path,
        target_sparsity=0.0,
        embedding_size=16,
        num_hidden_groups=1,
        weight_bits=4,
        weight_quantization_modules="all",
        max_steps=4,
    )
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    kinds = trainer.model.config.quantization_config.quantized_modules
    assert kinds["classifier"] == kinds["albert.pooler"] == "linear_4bit"
    assert kinds["albert.embeddings.word_embeddings"] == "embedding_4bit" and len(kinds) == 10  # 6 shared + in map
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final").eval()
    assert isinstance(reloaded.classifier, LowBitLinear)
    assert isinstance(reloaded.albert.embeddings.word_embeddings, LowBitEmbedding)
    batch = {"input_ids": torch.tensor([[2, 10, 20, 30, 3]]), "attention_mask": torch.ones(1, 5, dtype=torch.long)}
    with torch.no_grad():
        assert torch.allclose(reloaded(**batch).logits, trainer.model.eval()(**batch).logits, atol=1e-5)
