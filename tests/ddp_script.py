"""Run a tiny distil + prune job; under torchrun each rank dumps its masks and weights for tests/test_distributed.py.

Usage: python tests/ddp_script.py OUT_DIR PER_DEVICE_BATCH [projection]  (or under torchrun --nproc_per_node 2)
With `projection`, the teacher is wider than the student, so the hidden-state term trains a projection too.
"""

import os
import sys

import torch
from safetensors.torch import save_file
from torch.utils.data import SequentialSampler

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_compress import CompressionTrainer, CompressionTrainingArguments, create_student  # noqa: E402
from tests.testing_utils import tiny_bert, tiny_dataset  # noqa: E402


class InOrderTrainer(CompressionTrainer):
    """Examples in dataset order, so one process with batch 2b and two with batch b see the same global batches."""

    def _get_train_sampler(self, train_dataset=None):
        return SequentialSampler(train_dataset or self.train_dataset)


def main(out_dir: str, per_device_batch: int, projection: bool = False) -> None:
    teacher = tiny_bert(seed=1, num_hidden_layers=4, **({"hidden_size": 48} if projection else {}))
    student = create_student(tiny_bert(seed=1, num_hidden_layers=4), num_hidden_layers=2)
    args = CompressionTrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=per_device_batch,
        max_steps=8,
        learning_rate=1e-3,
        optim="adamw_torch",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1,
        seed=0,
        alpha=0.7,
        hidden_loss_weight=1.0,
        target_sparsity=0.6,
        pruning_method="movement",
        pruning_start=1,
        pruning_end=6,
        pruning_frequency=1,
    )
    trainer = InOrderTrainer(model=student, teacher_model=teacher, args=args, train_dataset=tiny_dataset(64))
    trainer.train()
    assert not isinstance(trainer.teacher, torch.nn.parallel.DistributedDataParallel)
    assert all(p.grad is None for p in trainer.teacher.parameters())
    rank = args.process_index
    tensors = {f"weight.{k}": v.contiguous() for k, v in trainer.model.state_dict().items()}
    tensors.update({f"mask.{k}": m.to(torch.uint8) for k, m in trainer.pruner.masks.items()})
    if projection:
        tensors.update({f"projection.{k}": v.contiguous() for k, v in trainer.hidden_projection.state_dict().items()})
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, f"rank{rank}.safetensors"))
    trainer.save_model(os.path.join(out_dir, "final"))
    print(f"rank {rank} of {args.world_size} done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), projection=sys.argv[3:] == ["projection"])
