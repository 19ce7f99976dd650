"""Distil a tiny student for 3 epochs with the teacher-output cache; each rank writes how many examples its teacher
ran.

Usage (tests/test_teacher_cache.py): torchrun --nproc_per_node 2 tests/ddp_teacher_cache_script.py ROOT RUN
The cache lives in ROOT/cache, shared by both ranks and by every RUN; counts go to ROOT/RUN/rank<r>.count.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hf_compress import DistillationTrainer, DistillationTrainingArguments, create_student  # noqa: E402
from tests.testing_utils import tiny_bert, tiny_dataset  # noqa: E402


def main(root: str, run: str) -> None:
    teacher = tiny_bert(seed=1, num_hidden_layers=4)
    examples = []
    teacher.register_forward_pre_hook(lambda m, a, kw: examples.append(kw["input_ids"].shape[0]), with_kwargs=True)
    student = create_student(tiny_bert(seed=1, num_hidden_layers=4), num_hidden_layers=2)
    args = DistillationTrainingArguments(
        output_dir=os.path.join(root, run),
        per_device_train_batch_size=4,
        num_train_epochs=3,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        save_strategy="no",
        logging_steps=1,
        seed=0,
        cache_teacher_logits=True,
        teacher_cache_dir=os.path.join(root, "cache"),
    )
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=tiny_dataset(32))
    trainer.train()
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, f"rank{args.process_index}.count"), "w") as f:
        f.write(str(sum(examples)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
