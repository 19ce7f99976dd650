import pytest
import torch

from hf_compress import CompressionTrainer, CompressionTrainingArguments, create_student
from tests.testing_utils import tiny_bert, tiny_dataset, training_args


def make_trainer(output_dir, wide_teacher: bool = False, **overrides) -> CompressionTrainer:
    kwargs = dict(
        max_steps=12,
        logging_steps=2,
        alpha=0.7,
        hidden_loss_weight=1.0,
        target_sparsity=0.7,
        pruning_method="taylor",
        pruning_start=2,
        pruning_end=9,
        pruning_frequency=1,
    )
    kwargs.update(overrides)
    student = create_student(tiny_bert(seed=1, num_hidden_layers=4), num_hidden_layers=2)
    # A wider teacher makes the hidden-state term train a projection: trainer state that must resume too.
    teacher = tiny_bert(seed=1, num_hidden_layers=4, hidden_size=48 if wide_teacher else 32)
    return CompressionTrainer(
        model=student,
        teacher_model=teacher,
        args=training_args(CompressionTrainingArguments, output_dir, **kwargs),
        train_dataset=tiny_dataset(48),
    )


@pytest.mark.parametrize(
    "albert",
    [{}, {"embedding_size": 16, "num_hidden_groups": 1}, {"wide_teacher": True}],
    ids=["bert", "albert", "projection"],
)
def test_interrupted_compression_run_resumes_to_the_same_result(tmp_path, albert):
    full = make_trainer(tmp_path / "full", **albert)
    full.train()
    interrupted = make_trainer(tmp_path / "run", save_strategy="steps", save_steps=5, **albert)
    interrupted.train()
    resumed = make_trainer(tmp_path / "run", **albert)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-5"))

    assert resumed.pruner.sparsity() == pytest.approx(full.pruner.sparsity())
    for name, mask in full.pruner.masks.items():
        assert torch.equal(mask, resumed.pruner.masks[name]), name
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    for key, value in full_state.items():
        assert torch.allclose(value, resumed_state[key], atol=1e-6), key
    logged = [
        {k: h[k] for k in ("loss", "kd_loss", "sparsity") if k in h} for h in full.state.log_history if "loss" in h
    ]
    resumed_logs = [
        {k: h[k] for k in ("loss", "kd_loss", "sparsity") if k in h} for h in resumed.state.log_history if "loss" in h
    ]
    assert logged[-1] == pytest.approx(resumed_logs[-1], rel=1e-4)
    if "embedding_size" in albert:
        assert resumed.model.config.model_type == "albert"
    if "wide_teacher" in albert:
        for key, value in full.hidden_projection.state_dict().items():
            assert torch.allclose(value, resumed.hidden_projection.state_dict()[key], atol=1e-6), key
