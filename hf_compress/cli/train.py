"""The jobs behind `hf-compress distill`: data, teacher, student, training, final save and report."""

from __future__ import annotations

import json
import logging
import os

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from ..data import label_names, load_text_classification, tokenize
from ..evaluation.measure import build_report, write_report
from ..hub import recipe_as_dict, write_model_card
from ..metrics import classification_metrics
from ..trainer.compression_args import CompressionTrainingArguments
from ..trainer.compression_trainer import CompressionTrainer
from ..trainer.distillation_args import DistillationTrainingArguments
from ..trainer.distillation_trainer import DistillationTrainer
from ..transforms.student import create_student
from ..transforms.vocabulary import prune_vocabulary_
from .recipe import RecipeArguments, resolve_model_path

logger = logging.getLogger(__name__)


def check_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse to save over a different model the user already has, unless asked to (nothing is lost by default)."""
    if os.path.exists(os.path.join(output_dir, "config.json")) and not overwrite:
        raise ValueError(
            f"output_dir={output_dir!r} already holds a model; allowed: an empty or new directory, or "
            "overwrite_output=true to replace it"
        )


def prepare_data(recipe: RecipeArguments, tokenizer, seed: int):
    """Load, subsample and tokenise the dataset named by the recipe."""
    raw = load_text_classification(recipe.dataset_name, recipe.text_column, recipe.label_column)
    if recipe.label_column != "label":
        raw = raw.rename_column(recipe.label_column, "label")
    if recipe.eval_split not in raw:
        raise ValueError(f"eval_split={recipe.eval_split!r} is not a split of the dataset; allowed: {list(raw)}")
    names = label_names(raw)
    data = tokenize(raw, tokenizer, recipe.text_column, recipe.max_length)
    if recipe.max_eval_samples:
        for split in data:
            if split != "train":
                data[split] = data[split].select(range(min(recipe.max_eval_samples, len(data[split]))))
    return data, names


def subset(dataset, n: int | None, seed: int):
    """The first n examples after a seeded shuffle (the whole set when n is None)."""
    if n is None or n >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(n))


def load_or_finetune_teacher(recipe: RecipeArguments, args: DistillationTrainingArguments, data, tokenizer, names):
    """The teacher: loaded as is, or first fine-tuned on the task with a plain Trainer."""
    path = resolve_model_path(args.teacher_model_name_or_path)
    # safetensors only: a pickled .bin can run code on load; opt in with {"use_safetensors": false}.
    kwargs = {"use_safetensors": True, **(args.teacher_model_init_kwargs or {})}
    if not recipe.finetune_teacher:
        return AutoModelForSequenceClassification.from_pretrained(path, **kwargs)
    num_labels = len(names) if names else len(set(data["train"]["label"]))
    label_kwargs = {"num_labels": num_labels}
    if names:
        label_kwargs.update(id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    teacher = AutoModelForSequenceClassification.from_pretrained(path, **label_kwargs, **kwargs)
    teacher_dir = os.path.join(args.output_dir, "teacher")
    teacher_args = TrainingArguments(
        output_dir=teacher_dir,
        num_train_epochs=recipe.teacher_num_train_epochs,
        learning_rate=recipe.teacher_learning_rate,
        per_device_train_batch_size=args.per_device_train_batch_size,
        per_device_eval_batch_size=args.per_device_eval_batch_size,
        warmup_steps=0.06,
        weight_decay=0.01,
        logging_steps=args.logging_steps,
        save_strategy="no",
        report_to=args.report_to,
        seed=args.seed,
        use_cpu=args.use_cpu,
        disable_tqdm=args.disable_tqdm,
    )
    logger.info("Fine-tuning the teacher on the task first")
    trainer = Trainer(
        model=teacher,
        args=teacher_args,
        train_dataset=subset(data["train"], recipe.teacher_max_train_samples, args.seed),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(teacher_dir)
    return teacher


def make_student(recipe: RecipeArguments, teacher):
    """The student: layers chosen by the recipe from the teacher (DistilBERT-style) or from a student checkpoint."""
    source = teacher
    if recipe.student_model_name_or_path is not None:
        source = AutoModelForSequenceClassification.from_pretrained(
            resolve_model_path(recipe.student_model_name_or_path),
            num_labels=teacher.config.num_labels,
            id2label=teacher.config.id2label,
            label2id=teacher.config.label2id,
            use_safetensors=True,
        )
        if recipe.student_layers is None and recipe.student_num_hidden_layers is None:
            return source
    if recipe.student_layers is not None:
        return create_student(source, layers=recipe.student_layers)
    if recipe.student_num_hidden_layers is not None:
        return create_student(source, num_hidden_layers=recipe.student_num_hidden_layers)
    raise ValueError(
        "student_num_hidden_layers=None and student_layers=None: the recipe must say how deep the student is"
    )


def check_student_fits(recipe: RecipeArguments, teacher_config) -> None:
    """Check the requested student depth or layer ids against the teacher before anything is loaded."""
    depth = teacher_config.num_hidden_layers
    if recipe.student_num_hidden_layers is not None and recipe.student_num_hidden_layers > depth:
        raise ValueError(
            f"student_num_hidden_layers={recipe.student_num_hidden_layers} is invalid; allowed: 1 to {depth} "
            "(the depth of the teacher, or of student_model_name_or_path)"
        )
    if recipe.student_layers is not None and any(not 0 <= i < depth for i in recipe.student_layers):
        raise ValueError(f"student_layers={recipe.student_layers} is invalid; allowed: layer ids in [0, {depth - 1}]")


def check_albert_fits(args: CompressionTrainingArguments, recipe: RecipeArguments, teacher_config) -> None:
    """Check embedding_size and num_hidden_groups against the student's shape before any training starts."""
    hidden = teacher_config.hidden_size
    if args.embedding_size is not None and not 1 <= args.embedding_size <= hidden:
        raise ValueError(f"embedding_size={args.embedding_size} is invalid; allowed: an integer in [1, {hidden}]")
    if args.num_hidden_groups is not None:
        depth = (
            recipe.student_num_hidden_layers or len(recipe.student_layers or []) or teacher_config.num_hidden_layers
        )
        if depth % args.num_hidden_groups:
            divisors = [g for g in range(1, depth + 1) if depth % g == 0]
            raise ValueError(
                f"num_hidden_groups={args.num_hidden_groups} is invalid; allowed: a divisor of the student's "
                f"{depth} layers, one of {divisors}"
            )


def run_recipe(recipe: RecipeArguments, args: DistillationTrainingArguments) -> dict:
    """Fine-tune the teacher if asked, distil (and prune) a student, save it, and report both on the eval split."""
    if args.teacher_model_name_or_path is None:
        raise ValueError("teacher_model_name_or_path=None: the recipe must name a teacher (Hub id, dir or pkg://)")
    check_output_dir(args.output_dir, recipe.overwrite_output)
    teacher_path = resolve_model_path(args.teacher_model_name_or_path)
    teacher_config = AutoConfig.from_pretrained(teacher_path)  # fails fast, before any data work, on a bad path
    student_config = teacher_config
    if recipe.student_model_name_or_path is not None:
        student_config = AutoConfig.from_pretrained(resolve_model_path(recipe.student_model_name_or_path))
    check_student_fits(recipe, student_config)
    if isinstance(args, CompressionTrainingArguments):
        check_albert_fits(args, recipe, student_config)
    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    data, names = prepare_data(recipe, tokenizer, args.seed)
    teacher = load_or_finetune_teacher(recipe, args, data, tokenizer, names)
    student = make_student(recipe, teacher)
    trainer_class = CompressionTrainer if isinstance(args, CompressionTrainingArguments) else DistillationTrainer
    trainer = trainer_class(
        model=student,
        teacher_model=teacher,
        args=args,
        train_dataset=subset(data["train"], recipe.max_train_samples, args.seed),
        eval_dataset=data.get("validation"),
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=classification_metrics,
    )
    trainer.train()
    own_inputs = None
    if recipe.prune_vocabulary:
        student_tokenizer = prune_vocabulary_(trainer.model, tokenizer, data["train"]["input_ids"])
        trainer.processing_class = student_tokenizer  # saved beside the model by save_model
        if recipe.report:
            eval_data, _ = prepare_data(recipe, student_tokenizer, args.seed)
            own_inputs = {"student": (student_tokenizer, eval_data[recipe.eval_split])}
    trainer.save_model(args.output_dir)
    result = {"output_dir": args.output_dir}
    rows = None
    if recipe.report:
        teacher_dir = os.path.join(args.output_dir, "teacher") if recipe.finetune_teacher else teacher_path
        rows = build_report(
            {"teacher": (teacher, teacher_dir), "student": (trainer.model, args.output_dir)},
            tokenizer,
            data[recipe.eval_split],
            repeats=recipe.report_latency_repeats,
            own_inputs=own_inputs,
        )
        table = write_report(rows, args.output_dir)
        print(f"\nEvaluation on the {recipe.eval_split} split ({len(data[recipe.eval_split])} examples):\n{table}")
        result["report"] = json.loads(json.dumps([r.__dict__ for r in rows]))
    command = "compress" if isinstance(args, CompressionTrainingArguments) else "distill"
    write_model_card(
        args.output_dir, rows, trainer.model.config, recipe_as_dict(recipe, args), f"hf-compress {command} recipe.yaml"
    )
    return result
