"""Where things are in each BERT-style family: the layer list, attention and FFN projections, LayerNorms, embeddings.

This is the one place that knows module paths. `create_student`, the pruners, `prune_ffn_` / `slice_ffn_`, head
importance, hidden/attention distillation, smoothing and the report ask it instead of looking for `encoder.layer`.
Each family is a row of paths relative to the base model (`model.base_model`) and to one transformer layer; every path
is resolved on the model itself and checked to be an `nn.Linear` (or the expected module), so a family whose
transformers implementation moves a module fails here with the path that is missing rather than somewhere later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:  # annotations only: importing them loads transformers' model-loading internals (and scipy)
    from transformers import PretrainedConfig, PreTrainedModel


@dataclass(frozen=True)
class Family:
    """Module paths of one family. Layer-relative paths are inside one transformer layer."""

    name: str
    layers: str  # from the base model to the nn.ModuleList of transformer layers
    query: str
    key: str
    value: str
    attention_output: str
    ffn_up: str  # hidden -> intermediate
    ffn_down: str  # intermediate -> hidden
    attention_layer_norm: str  # normalises the attention block's output; feeds ffn_up
    output_layer_norm: str  # normalises the layer's output; feeds the next layer's query/key/value
    intermediate_size_field: str = "intermediate_size"
    has_token_types: bool = True
    pooler: str | None = "pooler.dense"  # from the base model to the pooler's Linear, if the family has one
    # From the base model to the Linear that maps factorised embeddings (E) to the hidden size, and the LayerNorm
    # feeding it (ALBERT only): SmoothQuant folds into that LayerNorm.
    embedding_projection: str | None = None
    embedding_layer_norm: str | None = None


_BERT_LIKE = dict(
    layers="encoder.layer",
    query="attention.self.query",
    key="attention.self.key",
    value="attention.self.value",
    attention_output="attention.output.dense",
    ffn_up="intermediate.dense",
    ffn_down="output.dense",
    attention_layer_norm="attention.output.LayerNorm",
    output_layer_norm="output.LayerNorm",
)

FAMILIES: dict[str, Family] = {
    "bert": Family("bert", **_BERT_LIKE),
    "roberta": Family("roberta", **_BERT_LIKE),
    "xlm-roberta": Family("xlm-roberta", **_BERT_LIKE),
    "electra": Family("electra", **_BERT_LIKE),
    "deberta-v2": Family(
        "deberta-v2",
        **{
            **_BERT_LIKE,
            "query": "attention.self.query_proj",
            "key": "attention.self.key_proj",
            "value": "attention.self.value_proj",
        },
    ),
    # MPNet (all-mpnet-base-v2): BERT's layer with the attention's projections one level down (`attention.attn.q`)
    # and no segment embeddings; its relative-position bias lives in the encoder, shared by every layer, so a
    # student with fewer layers keeps it as is.
    "mpnet": Family(
        "mpnet",
        **{
            **_BERT_LIKE,
            "query": "attention.attn.q",
            "key": "attention.attn.k",
            "value": "attention.attn.v",
            "attention_output": "attention.attn.o",
            "attention_layer_norm": "attention.LayerNorm",
        },
        has_token_types=False,
    ),
    "distilbert": Family(
        "distilbert",
        layers="transformer.layer",
        query="attention.q_lin",
        key="attention.k_lin",
        value="attention.v_lin",
        attention_output="attention.out_lin",
        ffn_up="ffn.lin1",
        ffn_down="ffn.lin2",
        attention_layer_norm="sa_layer_norm",
        output_layer_norm="output_layer_norm",
        intermediate_size_field="hidden_dim",
        has_token_types=False,
        pooler=None,
    ),
    # ALBERT's layers live in groups (`encoder.albert_layer_groups[g].albert_layers[i]`); `layers` below names the
    # group list and `distinct_layers` flattens it, so a shared layer is yielded once.
    "albert": Family(
        "albert",
        layers="encoder.albert_layer_groups",
        query="attention.query",
        key="attention.key",
        value="attention.value",
        attention_output="attention.dense",
        ffn_up="ffn",
        ffn_down="ffn_output",
        attention_layer_norm="attention.LayerNorm",
        output_layer_norm="full_layer_layer_norm",
        pooler="pooler",
        embedding_projection="encoder.embedding_hidden_mapping_in",
        embedding_layer_norm="embeddings.LayerNorm",
    ),
}


def family_of(model_or_config: PreTrainedModel | PretrainedConfig) -> Family:
    """The family of a model (or config), by `config.model_type`; a ValueError names the supported ones."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise ValueError(
            f"model_type={model_type!r} is invalid; allowed: one of the supported families {sorted(FAMILIES)}"
        )
    return FAMILIES[model_type]


def base_model(model: nn.Module) -> nn.Module:
    """The encoder model inside a task model (`model.bert`, `model.distilbert`, ...), or the model itself."""
    prefix = getattr(model, "base_model_prefix", "")
    return getattr(model, prefix, model) if prefix else model


def base_prefix(model: nn.Module) -> str:
    """The module-name prefix of the base model inside `model` ('bert.' in a task model, '' for a base model)."""
    prefix = getattr(model, "base_model_prefix", "")
    return f"{prefix}." if prefix and getattr(model, prefix, None) is not None else ""


def layer_list(model: nn.Module) -> nn.ModuleList:
    """The nn.ModuleList of transformer layers, in order (ALBERT: refused, its layers are shared groups)."""
    fam = family_of(model)
    if fam.name == "albert":
        raise ValueError(
            "model_type='albert' is invalid; allowed: a model whose layers are one list (ALBERT shares layers in "
            "groups; convert to ALBERT after choosing the student's layers)"
        )
    layers = base_model(model).get_submodule(fam.layers)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(model).__name__}: {fam.layers} is a {type(layers).__name__}, not an nn.ModuleList")
    return layers


@dataclass
class LayerParts:
    """The modules of one distinct transformer layer, with their full names in the model."""

    name: str  # module path of the layer in the model
    layer: nn.Module
    family: Family

    def module(self, part: str) -> nn.Module:
        """A part by Family field name ('query', 'ffn_up', 'output_layer_norm', ...)."""
        return self.layer.get_submodule(getattr(self.family, part))

    def module_name(self, part: str) -> str:
        """The full module name of a part in the model."""
        return f"{self.name}.{getattr(self.family, part)}"

    def linear(self, part: str) -> nn.Linear:
        """A Linear part, checked to be one."""
        module = self.module(part)
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"{self.module_name(part)} is a {type(module).__name__}, not an nn.Linear (prune, convert and "
                "factorise before quantizing)"
            )
        return module

    @property
    def up(self) -> nn.Linear:
        """The FFN's hidden -> intermediate Linear."""
        return self.linear("ffn_up")

    @property
    def down(self) -> nn.Linear:
        """The FFN's intermediate -> hidden Linear."""
        return self.linear("ffn_down")

    @property
    def size(self) -> int:
        """The FFN's intermediate size in this layer."""
        return self.up.out_features


ATTENTION_PARTS = ("query", "key", "value", "attention_output")
FFN_PARTS = ("ffn_up", "ffn_down")
LINEAR_PARTS = ATTENTION_PARTS + FFN_PARTS


def distinct_layers(model: nn.Module, check_linear: bool | tuple[str, ...] = True) -> list[LayerParts]:
    """Every distinct transformer layer (a layer ALBERT shares among several positions appears once), in order.

    With `check_linear`, every projection the family names (or only the parts named, e.g. FFN_PARTS) must be an
    nn.Linear: not yet quantized or factorised. Raises ValueError naming the first one that is not.
    """
    fam = family_of(model)
    prefix = base_prefix(model)
    container = base_model(model).get_submodule(fam.layers)
    found = []
    if fam.name == "albert":
        for g, group in enumerate(container):
            for i, layer in enumerate(group.albert_layers):
                found.append(LayerParts(f"{prefix}{fam.layers}.{g}.albert_layers.{i}", layer, fam))
    else:
        found = [LayerParts(f"{prefix}{fam.layers}.{i}", layer, fam) for i, layer in enumerate(container)]
    checked = LINEAR_PARTS if check_linear is True else tuple(check_linear or ())
    for parts in found:
        for part in LINEAR_PARTS:
            parts.linear(part) if part in checked else parts.module(part)  # each path is checked on the real model
    return found


def encoder_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear inside the distinct transformer layers, by full module name (q, k, v, output, FFN up/down)."""
    linears = {}
    for parts in distinct_layers(model):
        for name, module in parts.layer.named_modules():
            if isinstance(module, nn.Linear):
                linears[f"{parts.name}.{name}"] = module
    return linears


def num_layers(config: PretrainedConfig) -> int:
    """How many layers the model applies (ALBERT: positions, not distinct layers)."""
    return int(config.num_hidden_layers)


def intermediate_size(config: PretrainedConfig) -> int:
    """The FFN intermediate size, whatever the family calls it (DistilBERT: hidden_dim)."""
    return int(getattr(config, family_of(config).intermediate_size_field))


def set_intermediate_size(config: PretrainedConfig, size: int) -> None:
    """Write the FFN intermediate size under the family's own config field."""
    setattr(config, family_of(config).intermediate_size_field, int(size))


def head_names(model: nn.Module) -> list[str]:
    """Top-level modules outside the base model: the task head (classifier, qa_outputs, pre_classifier, pooler...)."""
    prefix = getattr(model, "base_model_prefix", "")
    return [name for name, _ in model.named_children() if name != prefix]
