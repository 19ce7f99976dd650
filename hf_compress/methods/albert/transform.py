"""Turn a BERT-style model into a stock ALBERT one: factorised embeddings (V×E, E×H) and cross-layer parameter sharing.

Lan et al. 2019 (ALBERT, arXiv:1909.11942). The result is a real `albert` checkpoint: it saves with save_pretrained
and loads with from_pretrained without hf_compress installed. BERT, RoBERTa, XLM-RoBERTa, ELECTRA and DistilBERT
convert exactly where ALBERT can express them; `albert_families` says where each keeps its parts and what is refused.
"""

from __future__ import annotations

import math

import torch
from transformers import AlbertConfig, PreTrainedModel

from ...checks import check_embedding_size, check_num_hidden_groups, check_sharing_init, is_int, require
from ...provenance import KEY, portable_reference, record
from .families import ALBERT_HEAD, Embeddings, Source, check_convertible, describe, tokenizer_class


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


def _source_width(model: PreTrainedModel) -> int:
    """D: the width the source sums and normalises its embeddings in (ELECTRA's embedding_size, else hidden_size)."""
    return getattr(model.config, "embedding_size", None) or model.config.hidden_size


def _check_arguments(
    model: PreTrainedModel, embedding_size: int | None, num_hidden_groups: int | None, sharing_init: str | int
) -> None:
    """Everything to_albert refuses, from the class, the config and the arguments alone: before any work."""
    family, _ = check_convertible(model)
    H, L, D = model.config.hidden_size, model.config.num_hidden_layers, _source_width(model)
    if D == H:
        check_embedding_size(embedding_size, H)
    else:  # ELECTRA's embeddings are already D-wide: keep them, or refactorise below D (see to_albert)
        ok = embedding_size is None or (is_int(embedding_size) and 1 <= embedding_size <= D)
        allowed = f"null or an integer in [1, {D}] ({family}'s own embedding_size)"
        require(ok, "embedding_size", embedding_size, allowed)
    check_num_hidden_groups(num_hidden_groups, L)
    check_sharing_init(sharing_init, L // (num_hidden_groups or L))


def _albert_config(source_config, source: Source, embedding_size: int, num_hidden_groups: int) -> AlbertConfig:
    """The AlbertConfig computing what the source config computes, with the chosen E and number of groups."""
    return AlbertConfig(
        **source.config,  # sizes, activation, dropouts, positions, token types, eps: per family
        vocab_size=source_config.vocab_size,
        embedding_size=embedding_size,
        num_hidden_groups=num_hidden_groups,
        inner_group_num=1,  # one layer per group, applied num_hidden_layers // num_hidden_groups times in a row
        pad_token_id=source_config.pad_token_id,
        bos_token_id=source_config.bos_token_id,
        eos_token_id=source_config.eos_token_id,
        tie_word_embeddings=source_config.tie_word_embeddings,
        id2label=dict(source_config.id2label),
        label2id=dict(source_config.label2id),
        problem_type=source_config.problem_type,
        chunk_size_feed_forward=source_config.chunk_size_feed_forward,
        tokenizer_class=tokenizer_class(source_config),  # the family's tokenizer, not ALBERT's SentencePiece one
        **({KEY: getattr(source_config, KEY)} if getattr(source_config, KEY, None) else {}),  # earlier provenance
    )


@torch.no_grad()
def _factorised_embeddings(
    source: Embeddings, embedding_size: int, token_weights: torch.Tensor | None = None
) -> dict[str, torch.Tensor | float]:
    """E-space tables, LayerNorm and E->H mapping that reproduce the source's embedding LayerNorm on a subspace.

    The source computes LN_D(w + p + t) in its D-space (D = H for BERT, RoBERTa and DistilBERT, ELECTRA's own E
    otherwise), then an optional projection D->H (ELECTRA); ALBERT computes Linear(LN_E(w' + p' + t')) in E-space.
    LayerNorm only sees the centred sum c = C(w + p + t) (C removes the mean over D), and LN_D(z) = gamma * c / sigma
    + beta with sigma^2 = |c|^2 / D + eps. Take an orthonormal basis U (D×r, r = E - 1) of a subspace of D-space and an
    orthonormal basis B (E×r) of the zero-mean vectors of R^E. Store each table row x as x' = s B U^T C x with
    s = sqrt(E/D): then x' has zero mean, LN_E sees variance |U^T c|^2 / D, the same sigma as LN_D whenever c lies in
    span(U), and with LN_E = identity affine and the mapping W = diag(gamma) U B^T / s, b = beta, ALBERT's output
    equals the source's exactly on span(U); a source projection P, q folds in as P W, P beta + q. So the only
    approximation is projecting the centred sum onto span(U); one dimension of E keeps the E-space mean at zero.

    U is the top r eigenvectors of E[c c^T] for a token, position and type drawn independently from their tables: a
    truncated SVD (PCA) of all three tables at once, which best keeps the sum LayerNorm sees. Tokens are drawn
    uniformly, or in proportion to `token_weights` (V,) when given (e.g. their frequency in the training data, or 0
    for tokens the task never uses): the SVD then spends its rank on the rows that matter, as Fisher-weighted SVD does
    (Hsu et al. 2022, arXiv:2207.00112), and the reported word error is the weighted one.
    Position embeddings have to be in it: on MiniLM a basis from the word matrix alone keeps almost none of them
    (95% relative error at E=256) and the encoder's output drifts far more (mean-pooled cosine 0.33 vs 0.91).
    Shapes: words V×D, positions P×D, token types T×D in; the same rows in E out, mapping H×E.
    """
    D, E = source.words.shape[1], embedding_size
    dtype, device = source.words.dtype, source.words.device

    def centred(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        return x - x.mean(dim=1, keepdim=True)

    words, positions, token_types = centred(source.words), centred(source.positions), centred(source.token_types)
    p = None if token_weights is None else (token_weights.double() / token_weights.double().sum()).to(device)
    # Second moment of the sum of independent draws: the sum of the tables' covariances plus the outer product of the
    # summed means. Its range is orthogonal to the all-ones vector, since every row is centred.
    word_mean = words.mean(0) if p is None else p @ words
    word_cov = torch.cov(words.T, correction=0, aweights=p)
    mean = word_mean + positions.mean(0) + token_types.mean(0)
    moment = word_cov + sum(torch.cov(t.T, correction=0) for t in (positions, token_types)) + torch.outer(mean, mean)
    _, eigenvectors = torch.linalg.eigh(moment)  # ascending eigenvalues
    r = E - 1
    U = eigenvectors.flip(1)[:, :r]  # D×r, the top r directions
    # Orthonormal basis of {y in R^E : sum(y) = 0}: the last E-1 columns of a QR of [1, I].
    ones_then_identity = torch.cat([torch.ones(E, 1), torch.eye(E)], dim=1).to(torch.float64).to(device)
    q, _ = torch.linalg.qr(ones_then_identity)
    B = q[:, 1 : r + 1]  # E×r
    s = math.sqrt(E / D)
    to_e = s * U @ B.T  # D×E: a row x in D-space becomes x @ to_e in E-space
    weight = source.norm.weight.double()[:, None] * (U @ B.T) / s  # nn.Linear stores out×in = D×E
    bias = source.norm.bias.double()
    if source.projection is not None:
        projection = source.projection.weight.double()
        weight, bias = projection @ weight, projection @ bias + source.projection.bias.double()

    def relative_error(x: torch.Tensor, weights: torch.Tensor | None = None) -> float:
        residual, total = (x - x @ U @ U.T).pow(2).sum(1), x.pow(2).sum(1)
        if weights is not None:
            residual, total = residual * weights, total * weights
        return float((residual.sum() / total.sum().clamp_min(1e-60)).sqrt())

    return {
        "word_embeddings": (words @ to_e).to(dtype),
        "position_embeddings": (positions @ to_e).to(dtype),
        "token_type_embeddings": (token_types @ to_e).to(dtype),
        "LayerNorm.weight": torch.ones(E, dtype=dtype, device=device),
        "LayerNorm.bias": torch.zeros(E, dtype=dtype, device=device),
        "mapping.weight": weight.to(dtype),
        "mapping.bias": bias.to(dtype),
        "word_error": relative_error(words, p),
        "position_error": relative_error(positions),
    }


def _copied_embeddings(source: Embeddings) -> dict[str, torch.Tensor]:
    """The source's tables and LayerNorm as they are, and its projection (or the identity) as the mapping: exact."""
    H = source.projection.out_features if source.projection is not None else source.words.shape[1]
    identity = torch.eye(H, dtype=source.words.dtype, device=source.words.device)
    return {
        "word_embeddings": source.words,
        "position_embeddings": source.positions,
        "token_type_embeddings": source.token_types,
        "LayerNorm.weight": source.norm.weight,
        "LayerNorm.bias": source.norm.bias,
        "mapping.weight": identity if source.projection is None else source.projection.weight,
        "mapping.bias": torch.zeros_like(identity[0]) if source.projection is None else source.projection.bias,
    }


@torch.no_grad()
def _shared_layer_state(layers: list[torch.nn.Module], sharing_init: str | int) -> dict[str, torch.Tensor]:
    """The state dict that initialises one shared layer from the source layers it replaces."""
    if sharing_init == "mean":
        states = [layer.state_dict() for layer in layers]
        return {name: torch.stack([state[name] for state in states]).mean(0) for name in states[0]}
    return layers[0 if sharing_init == "first" else sharing_init].state_dict()


def _rename_layer_state(state: dict[str, torch.Tensor], names: dict[str, str]) -> dict[str, torch.Tensor]:
    renamed = {}
    for name, tensor in state.items():
        module, _, param = name.rpartition(".")
        renamed[f"{names[module]}.{param}"] = tensor
    return renamed


def to_albert(
    model: PreTrainedModel,
    embedding_size: int | None = None,
    num_hidden_groups: int | None = None,
    sharing_init: str | int = "first",
    token_weights: torch.Tensor | None = None,
) -> PreTrainedModel:
    """A stock ALBERT model from a BERT-style one: factorised embeddings, shared layers (Lan et al. 2019, 1909.11942).

    Converts the base model and the sequence-classification, token-classification, question-answering and
    multiple-choice heads of BERT, RoBERTa and XLM-RoBERTa; ELECTRA's and DistilBERT's base model, token
    classification and question answering (their sentence heads are not dense + tanh). With embedding_size=None and
    num_hidden_groups=None the outputs are the source's (max abs difference <= 1e-5; for RoBERTa / XLM-RoBERTa on the
    real tokens of right-padded input, see `albert_families._roberta_positions`).

    embedding_size E factorises the embeddings by truncated SVD (see `_factorised_embeddings`): E in [1, H]; for
    ELECTRA, whose embeddings are already E_electra-wide, None or E_electra keeps them as they are (exact, its
    `embeddings_project` becomes `embedding_hidden_mapping_in`) and E < E_electra refactorises them below that.
    num_hidden_groups G shares one layer among each run of num_hidden_layers // G consecutive layers, initialised
    from its members by sharing_init: "first" (the default: it distilled better than "mean" in our benchmark), the
    "mean" of their parameters, or an int index within the group.
    token_weights (V,), non-negative, weighs each vocabulary row in the factorisation (see `_factorised_embeddings`;
    `token_frequencies` counts them from token ids); rows of weight 0 are still mapped, only less exactly.
    What was done, with the relative reconstruction error of the word-embedding matrix, is recorded in
    config.compression["albert"]; config.tokenizer_class names the family's tokenizer. The input model is not
    modified. Works under torch.no_grad() and torch.inference_mode() and on models built in inference mode; the
    result's parameters are ordinary trainable tensors either way.

    Raises ValueError, before any work, for an unsupported class or configuration (naming the family, the head and
    the reason) and for invalid arguments (``field=value is invalid; allowed: ...``).
    """
    _check_arguments(model, embedding_size, num_hidden_groups, sharing_init)
    _check_token_weights(token_weights, model.config.vocab_size)
    # Inference mode would make the new parameters inference tensors that no optimizer step may update later.
    with torch.inference_mode(False), torch.no_grad():
        return _convert(model, embedding_size, num_hidden_groups, sharing_init, token_weights)


def token_frequencies(token_ids, vocab_size: int) -> torch.Tensor:
    """How often each vocabulary id occurs in `token_ids` (sequences of ids, e.g. a train split's input_ids). (V,)."""
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    for ids in token_ids:
        counts += torch.bincount(torch.as_tensor(list(ids), dtype=torch.long), minlength=vocab_size)[:vocab_size]
    return counts


def _check_token_weights(token_weights: torch.Tensor | None, vocab_size: int) -> None:
    if token_weights is None:
        return
    ok = isinstance(token_weights, torch.Tensor) and token_weights.shape == (vocab_size,)
    ok = ok and bool((token_weights >= 0).all()) and bool(token_weights.sum() > 0)
    require(ok, "token_weights", "<tensor>", f"None or a (vocab_size={vocab_size},) tensor >= 0 with a positive sum")


def _convert(
    model: PreTrainedModel,
    embedding_size: int | None,
    num_hidden_groups: int | None,
    sharing_init: str | int,
    token_weights: torch.Tensor | None = None,
) -> PreTrainedModel:
    source = describe(model)
    source_config = model.config
    L, D = source_config.num_hidden_layers, _source_width(model)
    E = embedding_size or D
    G = num_hidden_groups or L
    per_group = L // G
    weight = source.embeddings.words

    albert_class = ALBERT_HEAD[source.head]
    extra = {} if source.head != "base model" else {"add_pooling_layer": source.add_pooling_layer}
    albert = albert_class._from_config(
        _albert_config(source_config, source, E, G), attn_implementation=source_config._attn_implementation, **extra
    )
    albert.to(device=weight.device, dtype=weight.dtype)
    base = getattr(albert, albert.base_model_prefix, albert)

    missing, unexpected = albert.load_state_dict(source.heads, strict=False)
    # Everything not copied here is embeddings or encoder, filled below; anything else would be a head left random.
    left = {k.removeprefix("albert.").split(".")[0] for k in missing}
    assert not unexpected and left <= {"embeddings", "encoder"}, (unexpected, missing)

    if E == D:  # nothing to factorise: exact
        factors, word_error, position_error = _copied_embeddings(source.embeddings), 0.0, 0.0
    else:
        factors = _factorised_embeddings(source.embeddings, E, token_weights)
        word_error, position_error = factors["word_error"], factors["position_error"]
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        getattr(base.embeddings, name).weight.copy_(factors[name])
    base.embeddings.LayerNorm.weight.copy_(factors["LayerNorm.weight"])
    base.embeddings.LayerNorm.bias.copy_(factors["LayerNorm.bias"])
    base.encoder.embedding_hidden_mapping_in.weight.copy_(factors["mapping.weight"])
    base.encoder.embedding_hidden_mapping_in.bias.copy_(factors["mapping.bias"])

    # AlbertTransformer applies group i // per_group at layer i: one module object per group is the sharing.
    for group_id, group in enumerate(base.encoder.albert_layer_groups):
        members = source.layers[group_id * per_group : (group_id + 1) * per_group]
        state = _rename_layer_state(_shared_layer_state(members, sharing_init), source.layer_names)
        group.albert_layers[0].load_state_dict(state)

    record(
        albert.config,
        "albert",
        {
            "source_model_type": source_config.model_type,
            "source": portable_reference(source_config.name_or_path) or None,
            "embedding_size": E,
            "num_hidden_groups": G,
            "sharing_init": sharing_init if G < L else None,
            "token_weighted": token_weights is not None,
            # Relative Frobenius error of the row-centred word / position tables: the part LayerNorm sees.
            "embedding_reconstruction_error": word_error,
            "position_reconstruction_error": position_error,
        },
    )
    return albert.train(model.training)
