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
