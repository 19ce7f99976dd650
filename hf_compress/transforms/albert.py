"""Turn a BERT model into a stock ALBERT one: factorised embeddings (V×E, E×H) and cross-layer parameter sharing.

Lan et al. 2019 (ALBERT, arXiv:1909.11942). The result is a real `albert` checkpoint: it saves with save_pretrained
and loads with from_pretrained without hf_compress installed.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import (
    AlbertConfig,
    AlbertForMultipleChoice,
    AlbertForQuestionAnswering,
    AlbertForSequenceClassification,
    AlbertForTokenClassification,
    AlbertModel,
    BertConfig,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    PreTrainedModel,
)

from ..provenance import KEY, record

# Exact classes only: a subclass may change forward() in ways the conversion cannot see. Heads keep their
# parameter names (classifier, qa_outputs) and ALBERT builds the same pooler-or-not as BERT for each task.
ALBERT_CLASS: dict[type[PreTrainedModel], type[PreTrainedModel]] = {
    BertModel: AlbertModel,
    BertForSequenceClassification: AlbertForSequenceClassification,
    BertForTokenClassification: AlbertForTokenClassification,
    BertForQuestionAnswering: AlbertForQuestionAnswering,
    BertForMultipleChoice: AlbertForMultipleChoice,
}
SHARING_INITS = ("mean", "first")

# BertLayer parameter name -> AlbertLayer parameter name (weights and biases alike).
LAYER_NAMES = {
    "attention.self.query": "attention.query",
    "attention.self.key": "attention.key",
    "attention.self.value": "attention.value",
    "attention.output.dense": "attention.dense",
    "attention.output.LayerNorm": "attention.LayerNorm",
    "intermediate.dense": "ffn",
    "output.dense": "ffn_output",
    "output.LayerNorm": "full_layer_layer_norm",
}


def albert_num_parameters(config: AlbertConfig, add_pooling_layer: bool = True) -> int:
    """Closed-form parameter count of an AlbertModel (no task head): what `model.albert.parameters()` sums to."""
    V, E, H, I = config.vocab_size, config.embedding_size, config.hidden_size, config.intermediate_size  # noqa: E741
    P, T = config.max_position_embeddings, config.type_vocab_size
    embeddings = (V + P + T) * E + 2 * E  # three tables + LayerNorm, all in E-space
    mapping = E * H + H  # embedding_hidden_mapping_in
    # q, k, v, dense (4 Linear H->H), attention LayerNorm, ffn H->I, ffn_output I->H, full_layer_layer_norm
    layer = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H
    # Only num_hidden_groups * inner_group_num distinct layers exist, however many times they are applied.
    layers = config.num_hidden_groups * config.inner_group_num * layer
    pooler = H * H + H if add_pooling_layer else 0
    return embeddings + mapping + layers + pooler


def _check_arguments(
    model: PreTrainedModel, embedding_size: int | None, num_hidden_groups: int | None, sharing_init: str | int
) -> None:
    if type(model) not in ALBERT_CLASS:
        supported = ", ".join(cls.__name__ for cls in ALBERT_CLASS)
        raise ValueError(f"to_albert does not support {type(model).__name__}; supported classes: {supported}")
    config = model.config
    if config.is_decoder or config.add_cross_attention:
        raise ValueError(
            f"to_albert needs an encoder-only BERT; got is_decoder={config.is_decoder}, "
            f"add_cross_attention={config.add_cross_attention} (ALBERT has no causal or cross-attention)"
        )
    H, L = config.hidden_size, config.num_hidden_layers
    if embedding_size is not None and (
        isinstance(embedding_size, bool) or not isinstance(embedding_size, int) or not 1 <= embedding_size <= H
    ):
        raise ValueError(f"embedding_size={embedding_size!r} must be None or an int in [1, {H}] (hidden_size)")
    if num_hidden_groups is not None and (
        isinstance(num_hidden_groups, bool)
        or not isinstance(num_hidden_groups, int)
        or not 1 <= num_hidden_groups <= L
        or L % num_hidden_groups
    ):
        divisors = [g for g in range(1, L + 1) if L % g == 0]
        raise ValueError(
            f"num_hidden_groups={num_hidden_groups!r} must be None or a divisor of num_hidden_layers={L}: one of "
            f"{divisors}"
        )
    per_group = L // (num_hidden_groups or L)
    if isinstance(sharing_init, bool) or not (
        sharing_init in SHARING_INITS or (isinstance(sharing_init, int) and 0 <= sharing_init < per_group)
    ):
        raise ValueError(
            f"sharing_init={sharing_init!r} must be one of {SHARING_INITS} or an int layer index within a group, "
            f"in [0, {per_group - 1}] ({per_group} layers per group)"
        )


def _albert_config(config: BertConfig, embedding_size: int, num_hidden_groups: int) -> AlbertConfig:
    """The AlbertConfig computing what the BERT config computes, with the chosen E and number of groups."""
    classifier_dropout = config.classifier_dropout
    return AlbertConfig(
        vocab_size=config.vocab_size,
        embedding_size=embedding_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_hidden_groups=num_hidden_groups,
        inner_group_num=1,  # one layer per group, applied num_hidden_layers // num_hidden_groups times in a row
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,  # ALBERT's own default is gelu_new; keep the teacher's function
        hidden_dropout_prob=config.hidden_dropout_prob,
        attention_probs_dropout_prob=config.attention_probs_dropout_prob,
        max_position_embeddings=config.max_position_embeddings,
        type_vocab_size=config.type_vocab_size,
        initializer_range=config.initializer_range,
        layer_norm_eps=config.layer_norm_eps,
        # BERT falls back to hidden_dropout_prob when classifier_dropout is None; ALBERT has no fallback.
        classifier_dropout_prob=config.hidden_dropout_prob if classifier_dropout is None else classifier_dropout,
        pad_token_id=config.pad_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        tie_word_embeddings=config.tie_word_embeddings,
        id2label=dict(config.id2label),
        label2id=dict(config.label2id),
        problem_type=config.problem_type,
        chunk_size_feed_forward=config.chunk_size_feed_forward,
        **({KEY: getattr(config, KEY)} if getattr(config, KEY, None) else {}),  # earlier steps' provenance
    )


@torch.no_grad()
def _factorised_embeddings(bert_embeddings: nn.Module, embedding_size: int) -> dict[str, torch.Tensor | float]:
    """E-space tables, LayerNorm and E->H mapping that reproduce BERT's H-space embedding LayerNorm on a subspace.

    BERT computes LN_H(w + p + t) in H-space; ALBERT computes Linear(LN_E(w' + p' + t')) in E-space. LayerNorm only
    sees the centred sum c = C(w + p + t) (C removes the mean over H), and LN_H(z) = gamma * c / sigma + beta with
    sigma^2 = |c|^2 / H + eps. Take an orthonormal basis U (H×r, r = E - 1) of a subspace of H-space and an
    orthonormal basis B (E×r) of the zero-mean vectors of R^E. Store each table row x as x' = s B U^T C x with
    s = sqrt(E/H): then x' has zero mean, LN_E sees variance |U^T c|^2 / H, the same sigma as LN_H whenever c lies in
    span(U), and with LN_E = identity affine and the mapping W = diag(gamma) U B^T / s, b = beta, ALBERT's output
    equals BERT's exactly on span(U). So the only approximation is projecting the centred sum onto span(U); one
    dimension of E is spent on keeping the E-space mean at zero.

    U is the top r eigenvectors of E[c c^T] for a token, position and type drawn independently and uniformly from
    their tables: a truncated SVD (PCA) of all three tables at once, which best keeps the sum LayerNorm sees.
    Position embeddings have to be in it: on MiniLM a basis from the word matrix alone keeps almost none of them
    (95% relative error at E=256) and the encoder's output drifts far more (mean-pooled cosine 0.33 vs 0.91).
    """
    H, E = bert_embeddings.word_embeddings.embedding_dim, embedding_size
    dtype, device = bert_embeddings.word_embeddings.weight.dtype, bert_embeddings.word_embeddings.weight.device

    def centred(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        return x - x.mean(dim=1, keepdim=True)

    words = centred(bert_embeddings.word_embeddings.weight)
    positions = centred(bert_embeddings.position_embeddings.weight)
    token_types = centred(bert_embeddings.token_type_embeddings.weight)
    # Second moment of the sum of independent draws: the sum of the tables' covariances plus the outer product of the
    # summed means. Its range is orthogonal to the all-ones vector, since every row is centred.
    tables = (words, positions, token_types)
    mean = sum(table.mean(0) for table in tables)
    moment = sum(torch.cov(table.T, correction=0) for table in tables) + torch.outer(mean, mean)
    _, eigenvectors = torch.linalg.eigh(moment)  # ascending eigenvalues
    r = E - 1
    U = eigenvectors.flip(1)[:, :r]  # H×r, the top r directions
    # Orthonormal basis of {y in R^E : sum(y) = 0}: the last E-1 columns of a QR of [1, I].
    ones_then_identity = torch.cat([torch.ones(E, 1), torch.eye(E)], dim=1).to(torch.float64).to(device)
    q, _ = torch.linalg.qr(ones_then_identity)
    B = q[:, 1 : r + 1]  # E×r
    s = math.sqrt(E / H)
    to_e = s * U @ B.T  # H×E: a row x in H-space becomes x @ to_e in E-space
    gamma = bert_embeddings.LayerNorm.weight.double()
    beta = bert_embeddings.LayerNorm.bias.double()

    def relative_error(x: torch.Tensor) -> float:
        return float(torch.linalg.norm(x - x @ U @ U.T) / torch.linalg.norm(x).clamp_min(1e-30))

    return {
        "word_embeddings": (words @ to_e).to(dtype),
        "position_embeddings": (positions @ to_e).to(dtype),
        "token_type_embeddings": (token_types @ to_e).to(dtype),
        "LayerNorm.weight": torch.ones(E, dtype=dtype, device=device),
        "LayerNorm.bias": torch.zeros(E, dtype=dtype, device=device),
        "mapping.weight": (gamma[:, None] * (U @ B.T) / s).to(dtype),  # nn.Linear stores out×in = H×E
        "mapping.bias": beta.to(dtype),
        "word_error": relative_error(words),
        "position_error": relative_error(positions),
    }


@torch.no_grad()
def _shared_layer_state(layers: list[nn.Module], sharing_init: str | int) -> dict[str, torch.Tensor]:
    """The state dict that initialises one shared layer from the BERT layers it replaces."""
    if sharing_init == "mean":
        states = [layer.state_dict() for layer in layers]
        return {name: torch.stack([state[name] for state in states]).mean(0) for name in states[0]}
    return layers[0 if sharing_init == "first" else sharing_init].state_dict()


def _rename_layer_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renamed = {}
    for name, tensor in state.items():
        module, _, param = name.rpartition(".")
        renamed[f"{LAYER_NAMES[module]}.{param}"] = tensor
    return renamed


def to_albert(
    model: PreTrainedModel,
    embedding_size: int | None = None,
    num_hidden_groups: int | None = None,
    sharing_init: str | int = "first",
) -> PreTrainedModel:
    """A stock ALBERT model from a BERT one: factorised embeddings, shared layers (Lan et al. 2019, arXiv:1909.11942).

    embedding_size=None (= hidden_size) and num_hidden_groups=None (= num_hidden_layers) give the same outputs as
    the BERT model. embedding_size E < H factorises the embeddings by truncated SVD (see `_factorised_embeddings`);
    num_hidden_groups G shares one layer among each run of num_hidden_layers // G consecutive layers, initialised
    from its members by sharing_init: "first" (the default: it distilled better than "mean" in our benchmark), the
    "mean" of their parameters, or an int index within the group.
    What was done, with the relative reconstruction error of the word-embedding matrix, is recorded in
    config.compression["albert"]. The input model is not modified.
    """
    _check_arguments(model, embedding_size, num_hidden_groups, sharing_init)
    bert_config = model.config
    H, L = bert_config.hidden_size, bert_config.num_hidden_layers
    E = embedding_size or H
    G = num_hidden_groups or L
    per_group = L // G

    bert = getattr(model, model.base_model_prefix, model)  # the BertModel itself, or the one inside a task model
    albert = ALBERT_CLASS[type(model)]._from_config(
        _albert_config(bert_config, E, G), attn_implementation=bert_config._attn_implementation
    )
    albert.to(device=bert.embeddings.word_embeddings.weight.device, dtype=bert.embeddings.word_embeddings.weight.dtype)
    base = getattr(albert, albert.base_model_prefix, albert)

    # Task heads and the pooler have identical shapes and names under the base model.
    heads = {} if model is bert else {k: v for k, v in model.state_dict().items() if not k.startswith("bert.")}
    if bert.pooler is not None:
        heads["albert.pooler.weight"] = bert.pooler.dense.weight
        heads["albert.pooler.bias"] = bert.pooler.dense.bias
    if isinstance(albert, AlbertModel):
        heads = {k.removeprefix("albert."): v for k, v in heads.items()}
    missing, unexpected = albert.load_state_dict(heads, strict=False)
    # Everything not copied here is embeddings or encoder, filled below; anything else would be a head left random.
    left = {k.removeprefix("albert.").split(".")[0] for k in missing}
    assert not unexpected and left <= {"embeddings", "encoder"}, (unexpected, missing)

    mapping = base.encoder.embedding_hidden_mapping_in
    with torch.no_grad():
        if E == H:
            # Nothing to factorise: copy the embeddings as they are and make the mapping the identity, which is exact.
            base.embeddings.load_state_dict(bert.embeddings.state_dict())
            mapping.weight.copy_(torch.eye(H))
            mapping.bias.zero_()
            word_error = position_error = 0.0
        else:
            factors = _factorised_embeddings(bert.embeddings, E)
            for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
                getattr(base.embeddings, name).weight.copy_(factors[name])
            base.embeddings.LayerNorm.weight.copy_(factors["LayerNorm.weight"])
            base.embeddings.LayerNorm.bias.copy_(factors["LayerNorm.bias"])
            mapping.weight.copy_(factors["mapping.weight"])
            mapping.bias.copy_(factors["mapping.bias"])
            word_error, position_error = factors["word_error"], factors["position_error"]

        # AlbertTransformer applies group i // per_group at layer i: one module object per group is the sharing.
        for group_id, group in enumerate(base.encoder.albert_layer_groups):
            members = list(bert.encoder.layer[group_id * per_group : (group_id + 1) * per_group])
            group.albert_layers[0].load_state_dict(_rename_layer_state(_shared_layer_state(members, sharing_init)))

    record(
        albert.config,
        "albert",
        {
            "source_model_type": bert_config.model_type,
            "source": bert_config.name_or_path or None,
            "embedding_size": E,
            "num_hidden_groups": G,
            "sharing_init": sharing_init if G < L else None,
            # Relative Frobenius error of the row-centred word / position tables: the part LayerNorm sees.
            "embedding_reconstruction_error": word_error,
            "position_reconstruction_error": position_error,
        },
    )
    return albert.train(model.training)
