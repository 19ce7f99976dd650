"""Where each family to_albert converts keeps what an ALBERT model needs, and which models ALBERT cannot express.

ALBERT (Lan et al. 2019, arXiv:1909.11942) computes, per token, Linear_E->H(LN_E(word + position[arange] + type)) and
then post-LayerNorm Transformer layers (attention, GELU-family FFN) with a dense + tanh pooler on the first token.
A family converts exactly when its model computes the same thing up to renaming parameters:

- BERT and ELECTRA: the same layers; ELECTRA already factorises (E-space embeddings + `embeddings_project`, absent
  when its embedding_size equals hidden_size), which is ALBERT's E-space embeddings + `embedding_hidden_mapping_in`.
- RoBERTa and XLM-RoBERTa: BERT's layers; positions start at padding_idx + 1 (see `_roberta_positions`); the
  sequence-classification head (dense + tanh + out_proj on <s>) is ALBERT's pooler + classifier.
- DistilBERT: no token types (a zero table), LayerNorms named sa_layer_norm / output_layer_norm, FFN lin1 / lin2,
  eps 1e-12. Learned and sinusoidal positions alike are a table, copied as they are.

Refused, up front: DeBERTa(-v2) (relative attention), ELECTRA's sequence-classification and multiple-choice heads
(dense -> GELU), DistilBERT's (pre_classifier -> ReLU), every other class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import (
    AlbertForMultipleChoice,
    AlbertForQuestionAnswering,
    AlbertForSequenceClassification,
    AlbertForTokenClassification,
    AlbertModel,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    DistilBertForMultipleChoice,
    DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
    DistilBertModel,
    ElectraForMultipleChoice,
    ElectraForQuestionAnswering,
    ElectraForSequenceClassification,
    ElectraForTokenClassification,
    ElectraModel,
    PreTrainedModel,
    RobertaForMultipleChoice,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    XLMRobertaForMultipleChoice,
    XLMRobertaForQuestionAnswering,
    XLMRobertaForSequenceClassification,
    XLMRobertaForTokenClassification,
    XLMRobertaModel,
)
from transformers.activations import ACT2FN

from ...checks import invalid
from ...families import FAMILIES, layer_list

BASE, SEQUENCE, TOKEN, QA, CHOICE = (
    "base model",
    "sequence classification",
    "token classification",
    "question answering",
    "multiple choice",
)
ALBERT_HEAD = {
    BASE: AlbertModel,
    SEQUENCE: AlbertForSequenceClassification,
    TOKEN: AlbertForTokenClassification,
    QA: AlbertForQuestionAnswering,
    CHOICE: AlbertForMultipleChoice,
}

# Exact classes only: a subclass may change forward() in ways the conversion cannot see. (family, head) per class.
SUPPORTED: dict[type[PreTrainedModel], tuple[str, str]] = {
    BertModel: ("bert", BASE),
    BertForSequenceClassification: ("bert", SEQUENCE),
    BertForTokenClassification: ("bert", TOKEN),
    BertForQuestionAnswering: ("bert", QA),
    BertForMultipleChoice: ("bert", CHOICE),
    RobertaModel: ("roberta", BASE),
    RobertaForSequenceClassification: ("roberta", SEQUENCE),
    RobertaForTokenClassification: ("roberta", TOKEN),
    RobertaForQuestionAnswering: ("roberta", QA),
    RobertaForMultipleChoice: ("roberta", CHOICE),
    XLMRobertaModel: ("xlm-roberta", BASE),
    XLMRobertaForSequenceClassification: ("xlm-roberta", SEQUENCE),
    XLMRobertaForTokenClassification: ("xlm-roberta", TOKEN),
    XLMRobertaForQuestionAnswering: ("xlm-roberta", QA),
    XLMRobertaForMultipleChoice: ("xlm-roberta", CHOICE),
    ElectraModel: ("electra", BASE),
    ElectraForTokenClassification: ("electra", TOKEN),
    ElectraForQuestionAnswering: ("electra", QA),
    DistilBertModel: ("distilbert", BASE),
    DistilBertForTokenClassification: ("distilbert", TOKEN),
    DistilBertForQuestionAnswering: ("distilbert", QA),
}
_TANH = "ALBERT's only sentence head is its pooler, dense -> tanh on the first token"
_GELU_HEAD = f"its dense -> GELU -> out_proj head has no ALBERT counterpart ({_TANH})"
_GELU_SUMMARY = f"its sequence summary (dense -> GELU by default) has no ALBERT counterpart ({_TANH})"
_RELU_HEAD = f"its pre_classifier -> ReLU -> classifier head has no ALBERT counterpart ({_TANH})"
REFUSED: dict[type[PreTrainedModel], tuple[str, str, str]] = {
    ElectraForSequenceClassification: ("electra", SEQUENCE, _GELU_HEAD),
    ElectraForMultipleChoice: ("electra", CHOICE, _GELU_SUMMARY),
    DistilBertForSequenceClassification: ("distilbert", SEQUENCE, _RELU_HEAD),
    DistilBertForMultipleChoice: ("distilbert", CHOICE, _RELU_HEAD),
}
_RELATIVE = (
    "its attention is disentangled (content-to-position and position-to-content terms over relative positions), "
    "which ALBERT's attention over absolute position embeddings cannot express; nor is its GELU ContextPooler a "
    "tanh pooler"
)
_RELATIVE_BIAS = (
    "its attention adds a learned relative-position bias (bucketed, shared by every layer) to the scores, which "
    "ALBERT's attention over absolute position embeddings cannot express"
)
REFUSED_FAMILIES = {"deberta-v2": _RELATIVE, "deberta": _RELATIVE, "mpnet": _RELATIVE_BIAS}

# The layer parts every family has, renamed from the source family's module path to ALBERT's (families.py).
LAYER_PARTS = (
    "query",
    "key",
    "value",
    "attention_output",
    "attention_layer_norm",
    "ffn_up",
    "ffn_down",
    "output_layer_norm",
)


def layer_names(family: str) -> dict[str, str]:
    """Source layer module path -> AlbertLayer module path, for every part of a layer."""
    source, albert = FAMILIES[family], FAMILIES["albert"]
    return {getattr(source, part): getattr(albert, part) for part in LAYER_PARTS}


DISTILBERT_EPS = 1e-12  # hard-coded in every DistilBERT LayerNorm; ALBERT reads one layer_norm_eps for all of them


@dataclass
class Embeddings:
    """A family's input embeddings in its own width D (H, or ELECTRA's embedding_size), as ALBERT will index them."""

    words: torch.Tensor  # V×D
    positions: torch.Tensor  # P×D: row j is what the source adds at ALBERT's position j (offset removed)
    token_types: torch.Tensor  # T×D
    norm: nn.LayerNorm  # over D
    projection: nn.Linear | None  # D -> H after the LayerNorm (ELECTRA with E != H); None is the identity


@dataclass
class Source:
    """What to_albert reads from a supported model: embeddings, layers, head tensors and AlbertConfig fields."""

    family: str
    head: str
    embeddings: Embeddings
    layers: list[nn.Module]
    layer_names: dict[str, str]
    heads: dict[str, torch.Tensor]  # ALBERT-named pooler / classifier / qa_outputs tensors (with the albert. prefix)
    config: dict = field(default_factory=dict)  # AlbertConfig fields that depend on the family
    add_pooling_layer: bool = True  # only read for the base model: ELECTRA and DistilBERT have no pooler


def supported_classes() -> str:
    """The classes to_albert converts, comma-separated (for error messages)."""
    return ", ".join(cls.__name__ for cls in SUPPORTED)


def tokenizer_class(config) -> str | None:
    """The tokenizer class AutoTokenizer would pick for the source config, to record in the ALBERT config.

    AutoTokenizer prefers tokenizer_config.json's `tokenizer_class`, which save_pretrained writes; a folder without it
    (e.g. bare vocab.json + merges.txt) would otherwise get ALBERT's SentencePiece tokenizer from model_type "albert".
    config.json's `tokenizer_class` is AutoTokenizer's fallback before model_type.
    """
    from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES

    return getattr(config, "tokenizer_class", None) or TOKENIZER_MAPPING_NAMES.get(config.model_type)


def check_convertible(model: PreTrainedModel) -> tuple[str, str]:
    """(family, head) of a model to_albert can convert exactly; ValueError naming family, head and reason if not.

    Only reads the class and the config, so it runs before any work.
    """
    name, config = type(model).__name__, model.config
    model_type = getattr(config, "model_type", "") or "unknown"

    def refuse(what: str, reason: str) -> ValueError:
        allowed = f"a model ALBERT can express exactly, and {what} is not: {reason}. Supported: {supported_classes()}"
        return invalid("model", name, allowed)

    if model_type in REFUSED_FAMILIES:
        raise refuse(f"{model_type} ({name})", REFUSED_FAMILIES[model_type])
    if type(model) in REFUSED:
        family, head, reason = REFUSED[type(model)]
        raise refuse(f"the {family} {head} model", reason)
    if type(model) not in SUPPORTED:
        families = sorted({family for family, _ in SUPPORTED.values()})
        known = model_type in families
        raise refuse(
            f"{model_type} class {name}",
            "to_albert converts only this family's classes listed below"
            if known
            else f"{model_type} is not a family to_albert knows ({', '.join(families)})",
        )
    family, head = SUPPORTED[type(model)]
    # Configurations of a supported class that ALBERT still cannot compute.
    for flag in ("is_decoder", "add_cross_attention"):
        if getattr(config, flag, False):
            raise invalid(flag, True, f"False ({family} as an encoder: ALBERT has no causal or cross-attention)")
    activation = config.activation if family == "distilbert" else config.hidden_act
    if not isinstance(activation, str) or activation not in ACT2FN:
        raise invalid("hidden_act", activation, "a name in transformers.activations.ACT2FN (ALBERT's config keeps it)")
    if family in ("roberta", "xlm-roberta"):
        pad = config.pad_token_id
        ok = isinstance(pad, int) and 0 <= pad < config.max_position_embeddings - 1
        if not ok:
            allowed = f"an int below max_position_embeddings - 1 ({family} positions start at pad_token_id + 1)"
            raise invalid("pad_token_id", pad, allowed)
    return family, head


def _roberta_positions(base: nn.Module) -> torch.Tensor:
    """The rows of RoBERTa's position table that ALBERT's positions 0, 1, ... stand for.

    RoBERTa numbers the tokens that are not padding from padding_idx + 1 on (cumsum of input_ids != pad) and gives
    padding tokens position padding_idx; ALBERT uses arange(seq_len). With right padding (RoBERTa's tokenizers pad
    on the right) the j-th token is real exactly when every token before it is, so RoBERTa's position for it is
    padding_idx + 1 + j: the table from row padding_idx + 1 on reproduces every real token exactly. Padding tokens
    get a different position row than in RoBERTa, so their own hidden states differ; with attention_mask = 0 on them
    no real token attends to them, so the real tokens' outputs (and the <s> pooler) stay exact. Not exact: left
    padding, a pad id inside a sequence, or padding attended to (no attention_mask).
    """
    offset = base.embeddings.padding_idx + 1
    return base.embeddings.position_embeddings.weight[offset:]


def _bert_like_config(config, family: str, head: str) -> dict:
    offset = config.pad_token_id + 1 if family in ("roberta", "xlm-roberta") else 0
    # BERT and RoBERTa fall back to hidden_dropout_prob when classifier_dropout is None; ALBERT has no fallback.
    # RoBERTa's multiple-choice head ignores classifier_dropout altogether.
    classifier_dropout = config.classifier_dropout
    if classifier_dropout is None or (family != "bert" and head == CHOICE):
        classifier_dropout = config.hidden_dropout_prob
    return dict(
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,  # ALBERT's own default is gelu_new; keep the source's function
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        max_position_embeddings=config.max_position_embeddings - offset,
        type_vocab_size=config.type_vocab_size,
        initializer_range=config.initializer_range,
        layer_norm_eps=config.layer_norm_eps,
        classifier_dropout_prob=classifier_dropout,
    )


def _distilbert_config(config) -> dict:
    return dict(
        hidden_size=config.dim,
        num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads,
        intermediate_size=config.hidden_dim,
        hidden_act=config.activation,
        hidden_dropout_prob=config.dropout,
        attention_probs_dropout_prob=config.attention_dropout,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=2,  # zero rows: a BERT tokenizer's token_type_ids (0 or 1) then add nothing, as in DistilBERT
        initializer_range=config.initializer_range,
        layer_norm_eps=DISTILBERT_EPS,
        classifier_dropout_prob=config.dropout,  # what DistilBertForTokenClassification drops before its classifier
    )


def describe(model: PreTrainedModel) -> Source:
    """Read a model that `check_convertible` accepted: its embeddings, layers, head tensors and config fields."""
    family, head = SUPPORTED[type(model)]
    base = getattr(model, model.base_model_prefix, model)
    embeddings = base.embeddings
    if family == "distilbert":
        words = embeddings.word_embeddings.weight
        tables = Embeddings(
            words=words,
            positions=embeddings.position_embeddings.weight,
            token_types=torch.zeros(2, words.shape[1], dtype=words.dtype, device=words.device),
            norm=embeddings.LayerNorm,
            projection=None,
        )
        config = _distilbert_config(model.config)
    else:
        roberta = family in ("roberta", "xlm-roberta")
        tables = Embeddings(
            words=embeddings.word_embeddings.weight,
            positions=_roberta_positions(base) if roberta else embeddings.position_embeddings.weight,
            token_types=embeddings.token_type_embeddings.weight,
            norm=embeddings.LayerNorm,
            projection=getattr(base, "embeddings_project", None),  # ELECTRA with embedding_size != hidden_size
        )
        config = _bert_like_config(model.config, family, head)
    layers, names = list(layer_list(model)), layer_names(family)

    # Task heads keep their names (classifier, qa_outputs) except RoBERTa's classification head, whose dense + tanh
    # on <s> is ALBERT's pooler and whose out_proj is ALBERT's classifier.
    prefix = model.base_model_prefix + "."
    renames = {"classifier.dense.": "albert.pooler.", "classifier.out_proj.": "classifier."}
    heads = {}
    for name, tensor in ({} if model is base else model.state_dict()).items():
        if not name.startswith(prefix):
            for old, new in renames.items() if family in ("roberta", "xlm-roberta") and head == SEQUENCE else ():
                name = new + name.removeprefix(old) if name.startswith(old) else name
            heads[name] = tensor
    pooler = getattr(base, "pooler", None)
    if pooler is not None:
        heads["albert.pooler.weight"], heads["albert.pooler.bias"] = pooler.dense.weight, pooler.dense.bias
    if head == BASE:
        heads = {k.removeprefix("albert."): v for k, v in heads.items()}
    return Source(family, head, tables, layers, names, heads, config, add_pooling_layer=pooler is not None)
