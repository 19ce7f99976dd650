"""The job behind `hf-compress distill | prune | compress`: check everything, then data → teacher → student → trainer
→ finalize → vocabulary → save → report → model card. Every check that can fail runs before any model is trained."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from dataclasses import dataclass, field

from transformers import AutoConfig, AutoTokenizer, Trainer, TrainingArguments, set_seed

from ..checks import check_embedding_size, check_num_hidden_groups, check_student_depth, invalid
from ..data import ensure_splits
from ..hub import write_model_card
from ..loading import (
    check_max_length,
    check_path_or_id,
    check_supported_model,
    is_saved_model,
    resolve_model_path,
)
from ..methods import enabled_methods
from ..methods.distillation.config import DistillationTrainingArguments
from ..methods.pruning.config import PruningTrainingArguments
from ..provenance import applied, portable_reference, portable_values, record
from ..tasks import get_task
from ..trainer.compression_args import CompressionTrainingArguments
from ..trainer.saving import apply_umask, replace_pickled_args
from .recipe import RecipeArguments, recipe_as_dict

logger = logging.getLogger(__name__)
TEACHER_DIR = "teacher"  # where a recipe's fine-tuned teacher is saved, inside output_dir


def announce(message: str) -> None:
    """One line per stage on stdout, so a long run says what it is doing."""
    print(f"[hf-compress] {message}", flush=True)


def check_output_dir(output_dir: str, overwrite: bool, flag: str = "overwrite_output=true") -> None:
    """Refuse to save over a different model the user already has, unless asked to (nothing is lost by default);
    `flag` is the remedy as the command takes it."""
    if is_saved_model(output_dir) and not overwrite:
        raise invalid("output_dir", output_dir, f"an empty or new directory, or {flag} to replace the model in it")


def subset(dataset, n: int | None, seed: int):
    """The first n examples after a seeded shuffle (the whole set when n is None)."""
    if n is None or n >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(n))


def training_examples(train, recipe, seed: int):
    """The training examples: the first max_train_samples after the seeded shuffle, labelled, then the next
    unlabelled_train_samples (-1: all the rest) with every label replaced by UNLABELLED, so that only the teacher's
    soft targets train on them."""
    from datasets import concatenate_datasets

    from ..methods.distillation.loss import unlabel

    n = recipe.unlabelled_train_samples
    if n is None or recipe.max_train_samples is None or recipe.max_train_samples >= len(train):
        return subset(train, recipe.max_train_samples, seed)
    shuffled = train.shuffle(seed=seed)
    labelled = shuffled.select(range(recipe.max_train_samples))
    end = len(train) if n == -1 else min(len(train), recipe.max_train_samples + n)
    rest = shuffled.select(range(recipe.max_train_samples, end))
    return concatenate_datasets([labelled, rest.map(unlabel, batched=True)])


def training_example_count(total: int, recipe) -> int:
    """len(training_examples(train, recipe, seed)) for a train split of `total` examples, from the fields alone:
    the preflight plans the pruning schedule on the raw split, before tokenization, whose label column may have any
    name (e.g. CoNLL's ner_tags) and is not touched."""
    if recipe.max_train_samples is None:
        return total
    labelled = min(recipe.max_train_samples, total)
    n = recipe.unlabelled_train_samples
    if n is None or labelled >= total:
        return labelled
    return total if n == -1 else min(total, labelled + n)


def planned_max_steps(args: TrainingArguments, num_examples: int) -> int:
    """The optimizer steps Trainer will run on `num_examples` (its own arithmetic, one process)."""
    if args.max_steps > 0:
        return args.max_steps
    batch = args.per_device_train_batch_size * max(1, args.n_gpu)
    batches = num_examples // batch if args.dataloader_drop_last else math.ceil(num_examples / batch)
    per_epoch = max(
        batches // args.gradient_accumulation_steps + int(batches % args.gradient_accumulation_steps > 0), 1
    )
    return math.ceil(args.num_train_epochs * per_epoch)


@dataclass
class Plan:
    """What the checks established: paths, configs, data, labels."""

    command: str
    task: object
    teacher_path: str | None
    teacher_config: object | None
    student_config: object | None
    tokenizer: object
    raw: object
    labels: list[str] | None
    num_labels: int | None
    made_splits: dict = field(default_factory=dict)
    resume_from: str | None = None


def _has_task_head(config, task) -> bool:
    return any(a.endswith(task.auto_class.__name__.removeprefix("AutoModel")) for a in config.architectures or [])


def check_models(recipe, command, source_field, source, teacher_config, student_config, task) -> None:
    """Family, task head, quantization state and lengths of the teacher and student, from their configs alone:
    before any data is read or any model trained."""
    student_field = "student_model_name_or_path"
    student_source = recipe.student_model_name_or_path
    own_student = student_source is not None
    # The student is built from the teacher (layers copied) unless it comes whole from its own checkpoint; a
    # quantized model can be neither fine-tuned nor cut into a student.
    selects = recipe.student_layers is not None or recipe.student_num_hidden_layers is not None
    teacher_only = own_student and not selects and not recipe.finetune_teacher and command != "prune"
    check_supported_model(source_field, source, teacher_config, quantized_ok=teacher_only)
    if own_student:
        check_supported_model(student_field, student_source, student_config)
    if command == "prune" and recipe.unlabelled_train_samples is not None:
        raise invalid(
            "unlabelled_train_samples", recipe.unlabelled_train_samples, "null for `prune`: text without labels "
            "trains only on a teacher's soft targets (hf-compress distill or compress)",
        )  # fmt: skip
    if task.name == "sentence-embedding" and (recipe.finetune_teacher or command == "prune"):
        field, value = ("finetune_teacher", True) if recipe.finetune_teacher else ("task", task.name)
        raise invalid(
            field, value, "sentence embeddings are distilled from the teacher as it is (hf-compress distill or "
            "compress, finetune_teacher: false): the student learns the teacher's embeddings, no task head is trained",
        )  # fmt: skip
    if not recipe.finetune_teacher and not _has_task_head(teacher_config, task):
        raise invalid(
            source_field,
            source,
            f"a model fine-tuned for {task.name} (this one is {teacher_config.architectures or 'headless'}); "
            "or set finetune_teacher: true to fine-tune it on the task first",
        )
    check_max_length("max_length", recipe.max_length, teacher_config, source_field, source)
    if own_student:
        check_max_length("max_length", recipe.max_length, student_config, student_field, student_source)


def preflight(recipe: RecipeArguments, args: TrainingArguments, command: str) -> Plan:
    """Every check that does not need a trained model: fields, paths, shapes, data, labels, the pruning schedule."""
    task = get_task(recipe.task)
    check_output_dir(args.output_dir, recipe.overwrite_output)
    resume_from = training_checkpoint(args)  # one naming nothing is refused before any work
    distils = isinstance(args, DistillationTrainingArguments)
    source_field = "teacher_model_name_or_path" if distils else "model_name_or_path"
    source = args.teacher_model_name_or_path if distils else recipe.model_name_or_path
    if distils and recipe.model_name_or_path is not None:
        raise invalid(
            "model_name_or_path",
            recipe.model_name_or_path,
            f"null for `{command}`: name the teacher with teacher_model_name_or_path and an optional student "
            "checkpoint with student_model_name_or_path",
        )
    if not distils and recipe.student_model_name_or_path is not None:
        raise invalid(
            "student_model_name_or_path",
            recipe.student_model_name_or_path,
            "null for `prune`: the model pruned is model_name_or_path (student_layers may still pick its layers)",
        )
    if source is None:
        raise invalid(source_field, None, "a Hub id, a local model directory or pkg://<package>/<dir>")
    teacher_path = check_path_or_id(source_field, source)
    student_path = check_path_or_id("student_model_name_or_path", recipe.student_model_name_or_path)
    if recipe.dataset_name != "tweets":
        check_path_or_id("dataset_name", recipe.dataset_name, kind="dataset")

    teacher_config = AutoConfig.from_pretrained(teacher_path)
    student_config = AutoConfig.from_pretrained(student_path) if student_path else teacher_config
    check_models(recipe, command, source_field, source, teacher_config, student_config, task)
    prefix = "student_"
    check_student_depth(
        recipe.student_num_hidden_layers, recipe.student_layers, student_config.num_hidden_layers, prefix=prefix
    )
    if isinstance(args, CompressionTrainingArguments):
        check_embedding_size(args.embedding_size, student_config.hidden_size)
        depth = (
            recipe.student_num_hidden_layers or len(recipe.student_layers or []) or student_config.num_hidden_layers
        )
        check_num_hidden_groups(args.num_hidden_groups, depth)

    tokenizer = AutoTokenizer.from_pretrained(teacher_path)
    raw, labels = task.load(recipe)
    raw, made = ensure_splits(raw, recipe.validation_size, recipe.test_size, recipe.split_seed)
    if recipe.eval_split not in raw:
        raise invalid("eval_split", recipe.eval_split, f"a split of the dataset: {sorted(raw)}")
    num_labels = task.num_labels(raw, labels)
    if not recipe.finetune_teacher:
        task.check_model_labels(teacher_config, labels, num_labels, source_field)
    if isinstance(args, PruningTrainingArguments) and args.prunes:
        n_train = training_example_count(len(raw["train"]), recipe)
        args.pruning_schedule().resolve(planned_max_steps(args, n_train))
    return Plan(
        command,
        task,
        teacher_path,
        teacher_config,
        student_config,
        tokenizer,
        raw,
        labels,
        num_labels,
        made,
        resume_from,
    )


TEACHER_MARKER = "hf_compress_teacher.json"  # written last into the fine-tuned teacher: the stage finished
# The recipe fields a fine-tuned teacher depends on: a finished teacher is reused only when they all match.
TEACHER_FIELDS = (
    "task",
    "dataset_name",
    "text_column",
    "label_column",
    "max_length",
    "doc_stride",
    "validation_size",
    "test_size",
    "split_seed",
    "teacher_num_train_epochs",
    "teacher_learning_rate",
    "teacher_max_train_samples",
)
TEACHER_TRAINING_FIELDS = ("seed", "per_device_train_batch_size", "train_sampling_strategy")


def teacher_fields(recipe: RecipeArguments, args: TrainingArguments, plan: Plan) -> dict:
    """What the fine-tuned teacher was made from, as recorded in its marker file."""
    fields = {"teacher": portable_reference(plan.teacher_path, args.output_dir)}
    fields.update({name: getattr(recipe, name) for name in TEACHER_FIELDS})
    fields.update({name: str(getattr(args, name)) for name in TEACHER_TRAINING_FIELDS})
    # No absolute path of this machine in a saved artifact (data files and folders named relative to the output).
    return portable_values(json.loads(json.dumps(fields)), args.output_dir)


def finished_teacher(teacher_dir: str, fields: dict) -> bool:
    """Whether `teacher_dir` holds a teacher this recipe fine-tuned to the end (its marker, written last, matches)."""
    try:
        with open(os.path.join(teacher_dir, TEACHER_MARKER)) as f:
            return json.load(f) == fields
    except (OSError, ValueError):
        return False


# The recipe's TrainingArguments the teacher's fine-tuning shares: its batching (group_by_length saves most of the
# padding of NER sentences), logging, seed and device, and its checkpointing, so that an interrupted fine-tuning
# resumes where it stopped (save_strategy too, unless the recipe saves nothing).
TEACHER_SHARED_ARGUMENTS = (
    "per_device_train_batch_size",
    "per_device_eval_batch_size",
    "train_sampling_strategy",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "report_to",
    "seed",
    "use_cpu",
    "disable_tqdm",
)


def finetune_teacher(recipe: RecipeArguments, args: TrainingArguments, plan: Plan, data):
    """The teacher fine-tuned on the task with a plain Trainer, saved pickle-free and atomically in
    output_dir/teacher with a marker file; reused when a finished one with the same recipe fields is there, resumed
    from its last checkpoint (output_dir/teacher-checkpoints, with the recipe's save_strategy) when interrupted."""
    from transformers.trainer_utils import get_last_checkpoint

    from ..trainer.saving import staged_directory

    task = plan.task
    kwargs = {"use_safetensors": True, **(getattr(args, "teacher_model_init_kwargs", None) or {})}
    label_kwargs = task.label_kwargs(plan.labels, plan.num_labels)
    teacher_dir = os.path.join(args.output_dir, TEACHER_DIR)
    fields = teacher_fields(recipe, args, plan)
    if finished_teacher(teacher_dir, fields):
        announce(f"Stage 1: reusing the teacher fine-tuned in {teacher_dir} (same recipe fields)")
        return task.auto_class.from_pretrained(teacher_dir, use_safetensors=True).eval()
    # A base checkpoint gets a new task head here, drawn from torch's global generator: seed it first (as
    # transformers' example scripts do), or the head, and the teacher trained from it, depend on whatever drew
    # random numbers earlier in the process. Trainer's own set_seed comes after the model exists.
    set_seed(args.seed)
    teacher = task.auto_class.from_pretrained(plan.teacher_path, **label_kwargs, **kwargs)
    checkpoints = teacher_dir + "-checkpoints"
    saves = str(getattr(args.save_strategy, "value", args.save_strategy)) != "no"
    teacher_args = TrainingArguments(
        output_dir=checkpoints,
        num_train_epochs=recipe.teacher_num_train_epochs,
        learning_rate=recipe.teacher_learning_rate,
        warmup_steps=0.06,
        weight_decay=0.01,
        save_strategy=args.save_strategy if saves else "no",
        **{name: getattr(args, name) for name in TEACHER_SHARED_ARGUMENTS},
    )
    train = subset(data["train"], recipe.teacher_max_train_samples, args.seed)
    last = get_last_checkpoint(checkpoints) if os.path.isdir(checkpoints) else None
    if last is not None and not finished_teacher(checkpoints, fields):
        last = None  # checkpoints of another recipe's teacher: start over
    resuming = f", resuming from {last}" if last else ""
    announce(f"Stage 1: fine-tuning the teacher on {len(train)} examples{resuming}")
    if last is None and os.path.isdir(checkpoints):
        shutil.rmtree(checkpoints)
    os.makedirs(checkpoints, exist_ok=True)
    with open(os.path.join(checkpoints, TEACHER_MARKER), "w") as f:
        json.dump(fields, f)  # whose checkpoints these are
    trainer = Trainer(
        model=teacher,
        args=teacher_args,
        train_dataset=train,
        data_collator=task.collator(plan.tokenizer),
        processing_class=plan.tokenizer,
    )
    trainer.train(resume_from_checkpoint=last)
    with staged_directory(teacher_dir) as staging:
        trainer.save_model(staging)
        replace_pickled_args(staging, teacher_args)  # everything the product saves is pickle-free
        with open(os.path.join(staging, TEACHER_MARKER), "w") as f:
            json.dump(fields, f, indent=2)  # last: its presence means the teacher is complete
    shutil.rmtree(checkpoints, ignore_errors=True)
    apply_umask(teacher_dir)
    return teacher.eval()


def load_teacher_model(recipe: RecipeArguments, args: TrainingArguments, plan: Plan, data):
    """The teacher as given (a fine-tuned task model) or fine-tuned first."""
    if recipe.finetune_teacher:
        return finetune_teacher(recipe, args, plan, data)
    kwargs = {"use_safetensors": True, **(getattr(args, "teacher_model_init_kwargs", None) or {})}
    return plan.task.auto_class.from_pretrained(plan.teacher_path, **kwargs).eval()


def make_student(recipe: RecipeArguments, teacher, task):
    """The student: layers chosen by the recipe from the teacher (DistilBERT-style) or from a student checkpoint."""
    from ..methods.student.transform import create_student

    source = teacher
    if recipe.student_model_name_or_path is not None:
        source = task.auto_class.from_pretrained(
            resolve_model_path(recipe.student_model_name_or_path),
            **task.label_kwargs_from(teacher.config),
            use_safetensors=True,
        )
        if recipe.student_layers is None and recipe.student_num_hidden_layers is None:
            return source
    if recipe.student_layers is not None:
        return create_student(source, layers=recipe.student_layers)
    if recipe.student_num_hidden_layers is not None:
        return create_student(source, num_hidden_layers=recipe.student_num_hidden_layers)
    import copy

    return copy.deepcopy(source)  # prune: the model itself (a copy, so the reference row stays the original)


def training_checkpoint(args: TrainingArguments) -> str | None:
    """Where training resumes: resume_from_checkpoint as given (a checkpoint folder, or true for the last one), else
    the last checkpoint a previous run of this recipe left in output_dir (a rerun continues it), else None."""
    from transformers.trainer_utils import get_last_checkpoint

    asked = args.resume_from_checkpoint
    last = get_last_checkpoint(args.output_dir) if os.path.isdir(args.output_dir) else None
    if asked is None or str(asked).lower() in ("false", ""):
        return last
    if str(asked).lower() == "true":
        if last is None:
            raise invalid("resume_from_checkpoint", asked, f"a checkpoint folder (none in {args.output_dir})")
        return last
    if not os.path.isdir(asked):
        raise invalid("resume_from_checkpoint", asked, "an existing checkpoint folder, or true for the last one")
    return asked


def run_recipe(recipe: RecipeArguments, args: TrainingArguments, command: str | None = None) -> dict:
    """Check, train, finalize, save and report one recipe; return where the model went and the report rows."""
    from ..trainer.compression_trainer import CompressionTrainer
    from ..trainer.distillation_trainer import DistillationTrainer
    from ..trainer.pruning_trainer import PruningTrainer
    from .report import report_models

    command = command or _command_for(args)
    plan = preflight(recipe, args, command)
    task = plan.task
    data = task.prepare_splits(plan.raw, plan.tokenizer, recipe)
    teacher = load_teacher_model(recipe, args, plan, data)
    set_seed(args.seed)  # a student checkpoint without the task head gets a new one (see finetune_teacher)
    student = make_student(recipe, teacher, task)
    trainer_class = {"distill": DistillationTrainer, "compress": CompressionTrainer, "prune": PruningTrainer}[command]
    common = dict(
        model=student,
        args=args,
        train_dataset=training_examples(data["train"], recipe, args.seed),
        eval_dataset=data.get("validation"),
        data_collator=task.collator(plan.tokenizer),
        processing_class=plan.tokenizer,
        compute_metrics=task.trainer_metrics(plan.raw.get("validation"), plan.tokenizer, recipe),
    )
    trainer = trainer_class(**common, teacher_model=teacher) if command != "prune" else trainer_class(**common)
    if getattr(trainer, "pooling", None) is not None:
        task.pooling = trainer.pooling  # the report embeds every model as the student was trained to
    resuming = f", resuming from {plan.resume_from}" if plan.resume_from else ""
    examples = f"{len(common['train_dataset'])} examples, {args.num_train_epochs} epochs{resuming}"
    announce(f"Stage 2: {command} ({examples})")
    # train() finalizes: each enabled method's final step in table order (masks baked, pruned FFN neurons sliced,
    # packed or quantized, vocabulary cut with its tokenizer), provenance recorded.
    trainer.train(resume_from_checkpoint=plan.resume_from)
    announce("Stage 3: finalized (" + ", ".join(m.name for m in enabled_methods(args, "finalize")) + ")")
    if recipe.finetune_teacher:
        record_fine_tuned_teacher(trainer.model.config, recipe, args, command)
    student_tokenizer = trainer.processing_class  # the pruned tokenizer when the vocabulary was cut
    trainer.save_model(args.output_dir)
    result = {"output_dir": args.output_dir}
    rows = None
    if recipe.report:
        rows = report_models(recipe, plan, teacher, trainer.model, student_tokenizer, args.output_dir)
        result["report"] = json.loads(json.dumps([r.__dict__ for r in rows]))
    write_model_card(
        args.output_dir,
        rows,
        trainer.model.config,
        recipe_as_dict(recipe, args),
        f"hf-compress {command} recipe.yaml",
        dataset=recipe.dataset_name,
        split=recipe.eval_split,
        task=task,
        made_splits=plan.made_splits,
        teacher=_teacher_for_card(recipe, args, command),
    )
    auto = task.auto_class.__name__
    announce(f"Saved to {args.output_dir}")
    imports = "import hf_compress; " if getattr(trainer.model.config, "quantization_config", None) else ""
    announce(f"Load it with: {imports}from transformers import {auto}; {auto}.from_pretrained({args.output_dir!r})")
    return result


def record_fine_tuned_teacher(config, recipe: RecipeArguments, args: TrainingArguments, command: str) -> None:
    """The teacher the student was made from and distilled against is the one fine-tuned here: config.compression
    names it relative to the saved model (`./teacher`) and the base checkpoint it was fine-tuned from."""
    source = recipe.model_name_or_path if command == "prune" else args.teacher_model_name_or_path
    history = applied(config)
    for step in ("student", "distillation"):
        if isinstance(history.get(step), dict):
            details = dict(history[step])
            details["teacher"] = f"./{TEACHER_DIR}"
            details["teacher_base"] = portable_reference(source, args.output_dir)
            record(config, step, details)


def _teacher_for_card(recipe: RecipeArguments, args: TrainingArguments, command: str) -> str | None:
    """The teacher actually used, as the card states it: output-relative when fine-tuned here, else as named."""
    source = recipe.model_name_or_path if command == "prune" else args.teacher_model_name_or_path
    if recipe.finetune_teacher:
        return f"teacher (fine-tuned here from {portable_reference(source, args.output_dir)})"
    return portable_reference(source, args.output_dir)


def _command_for(args: TrainingArguments) -> str:
    if isinstance(args, CompressionTrainingArguments):
        return "compress"
    if isinstance(args, DistillationTrainingArguments):
        return "distill"
    return "prune"
