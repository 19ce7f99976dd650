"""to_albert: exact at identity, exact on low-rank embeddings, honest parameter counts, real sharing, stock reload."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import types

import pytest
import torch
from transformers import (
    AlbertConfig,
    AlbertForSequenceClassification,
    AlbertModel,
    AutoModel,
    BertForMaskedLM,
    BertForMultipleChoice,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    DebertaV2Config,
    DebertaV2ForSequenceClassification,
    DebertaV2Model,
    DistilBertConfig,
    DistilBertForMultipleChoice,
    DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
    DistilBertModel,
    ElectraConfig,
    ElectraForMultipleChoice,
    ElectraForQuestionAnswering,
    ElectraForSequenceClassification,
    ElectraForTokenClassification,
    ElectraModel,
    GPT2Config,
    GPT2Model,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForMultipleChoice,
    RobertaForQuestionAnswering,
    RobertaForSequenceClassification,
    RobertaForTokenClassification,
    RobertaModel,
    XLMRobertaConfig,
    XLMRobertaForMultipleChoice,
    XLMRobertaForQuestionAnswering,
    XLMRobertaForSequenceClassification,
    XLMRobertaForTokenClassification,
    XLMRobertaModel,
)

from hf_compress.methods.albert import transform as albert_module
from hf_compress.methods.albert.transform import albert_num_parameters, to_albert
from tests.family_models import family_tokenizer
from tests.testing_utils import VOCAB, run_python, tiny_batch, tiny_bert, tiny_bert_config, tiny_tokenizer


def inputs(batch_size: int = 4, seq_len: int = 12) -> dict:
    """A tiny batch without labels, with both token types in use so token-type embeddings are exercised."""
    batch = tiny_batch(batch_size, seq_len)
    batch.pop("labels")
    batch["token_type_ids"] = torch.zeros_like(batch["input_ids"])
    batch["token_type_ids"][:, seq_len // 3 :] = 1
    return batch


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


@pytest.mark.parametrize(
    "bert_class, output",
    [
        (BertForSequenceClassification, "logits"),
        (BertModel, "last_hidden_state"),
        (BertModel, "pooler_output"),
        (BertForTokenClassification, "logits"),
        (BertForQuestionAnswering, "start_logits"),
        (BertForMultipleChoice, "logits"),
    ],
)
def test_identity_conversion_is_exact(bert_class, output):
    torch.manual_seed(0)
    config = tiny_bert_config(num_hidden_layers=3, num_labels=2, problem_type="single_label_classification")
    config.id2label, config.label2id = {0: "neg", 1: "pos"}, {"neg": 0, "pos": 1}
    bert = bert_class(config).eval()
    albert = to_albert(bert)
    assert type(albert).__name__ == bert_class.__name__.replace("Bert", "Albert")
    assert albert.config.model_type == "albert"
    assert albert.config.id2label == {0: "neg", 1: "pos"} and albert.config.num_labels == 2
    assert albert.config.problem_type == "single_label_classification"
    assert albert.config.embedding_size == 32 and albert.config.num_hidden_groups == 3
    batch = inputs()
    if bert_class is BertForMultipleChoice:
        batch = {k: v.unsqueeze(0) for k, v in batch.items()}  # (batch=1, choices=4, seq)
    with torch.no_grad():
        expected, got = getattr(bert(**batch), output), getattr(albert(**batch), output)
    assert expected.abs().max() > 1e-3  # a non-trivial output
    assert max_diff(got, expected) <= 1e-5


def test_input_model_is_not_modified_and_training_mode_is_kept():
    bert = tiny_bert()
    before = {k: v.clone() for k, v in bert.state_dict().items()}
    albert = to_albert(bert, embedding_size=8, num_hidden_groups=1)
    assert all(torch.equal(before[k], v) for k, v in bert.state_dict().items())
    assert not albert.training
    assert to_albert(bert.train()).training


def low_rank_bert(rank: int) -> BertForSequenceClassification:
    """A tiny BERT whose centred word, position and token-type embeddings all lie in one rank-`rank` subspace."""
    bert = tiny_bert()
    torch.manual_seed(1)
    basis = torch.randn(rank, 32)
    emb = bert.bert.embeddings
    with torch.no_grad():
        # Per-row constant offsets (the all-ones direction) are removed by LayerNorm, so they may be anything.
        emb.word_embeddings.weight.copy_(torch.randn(VOCAB, rank) @ basis + torch.randn(VOCAB, 1))
        emb.position_embeddings.weight.copy_(torch.randn(64, rank) @ basis + torch.randn(64, 1))
        emb.token_type_embeddings.weight.copy_(0.3 * torch.randn(2, rank) @ basis)
        emb.LayerNorm.weight.copy_(torch.rand(32) + 0.5)
        emb.LayerNorm.bias.copy_(0.1 * torch.randn(32))
    return bert


def test_factorisation_is_exact_when_embeddings_fit_in_e_minus_one_dimensions():
    # The E-space LayerNorm construction loses nothing but the projection: one of E dimensions keeps the mean at zero.
    rank = 7
    bert = low_rank_bert(rank)
    batch = inputs()
    with torch.no_grad():
        expected = bert.bert(**batch).last_hidden_state
        exact = to_albert(bert, embedding_size=rank + 1)
        short = to_albert(bert, embedding_size=rank)
        assert max_diff(exact.albert(**batch).last_hidden_state, expected) <= 1e-5
        assert max_diff(short.albert(**batch).last_hidden_state, expected) > 1e-2
    assert exact.config.compression["albert"]["embedding_reconstruction_error"] < 1e-6
    assert short.config.compression["albert"]["embedding_reconstruction_error"] > 1e-2


def test_factorisation_error_decreases_as_embedding_size_grows():
    bert = tiny_bert()
    batch = inputs()
    errors, drifts = [], []
    for E in (2, 4, 8, 16, 24, 31, 32):
        albert = to_albert(bert, embedding_size=E)
        errors.append(albert.config.compression["albert"]["embedding_reconstruction_error"])
        with torch.no_grad():
            drifts.append(max_diff(albert.albert(**batch).last_hidden_state, bert.bert(**batch).last_hidden_state))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert 0.5 < errors[0] < 1 and errors[-1] == 0.0
    assert drifts[-1] == 0.0 and drifts[-2] < drifts[0]  # outputs approach BERT's as E grows


# By hand for V=1000, P=64, T=2, H=32, I=64, E=16, one shared layer, 3 labels: embeddings (1066·16 + 32) + mapping
# (16·32 + 32) + layer (4·(32·32 + 32) + 64 + 32·64 + 64 + 64·32 + 32 + 64) + pooler (32·32 + 32) + classifier (99).
HAND_COUNT = 17088 + 544 + 8544 + 1056 + 99


@pytest.mark.parametrize("E, G", [(32, 4), (32, 2), (16, 4), (16, 2), (16, 1), (4, 1)])
def test_parameter_count_matches_closed_form(E, G):
    albert = to_albert(tiny_bert(num_hidden_layers=4), embedding_size=E, num_hidden_groups=G)
    counted = sum(p.numel() for p in albert.parameters())
    classifier = 32 * 3 + 3
    assert counted == albert_num_parameters(albert.config) + classifier
    assert len(albert.albert.encoder.albert_layer_groups) == G
    if (E, G) == (16, 1):
        assert counted == HAND_COUNT


def layer_calls(albert: AlbertForSequenceClassification) -> list[int]:
    """How many times each distinct AlbertLayer module runs in one forward pass."""
    calls = []
    hooks = []
    for group in albert.albert.encoder.albert_layer_groups:
        calls.append(0)
        index = len(calls) - 1

        def hook(*_, index=index):
            calls[index] += 1

        hooks.append(group.albert_layers[0].register_forward_hook(hook))
    with torch.no_grad():
        albert(**inputs())
    for handle in hooks:
        handle.remove()
    return calls


@pytest.mark.parametrize("sharing_init, member", [("mean", None), ("first", 0), (0, 0), (1, 1)])
def test_shared_layer_is_initialised_from_its_members(sharing_init, member):
    bert = tiny_bert(num_hidden_layers=4)
    albert = to_albert(bert, num_hidden_groups=2, sharing_init=sharing_init)
    for group_id, group in enumerate(albert.albert.encoder.albert_layer_groups):
        members = bert.bert.encoder.layer[2 * group_id : 2 * group_id + 2]
        for bert_name, albert_name in [
            ("attention.self.query.weight", "attention.query.weight"),
            ("output.LayerNorm.bias", "full_layer_layer_norm.bias"),
        ]:
            weights = torch.stack([layer.get_parameter(bert_name) for layer in members])
            expected = weights.mean(0) if member is None else weights[member]
            assert torch.allclose(group.albert_layers[0].get_parameter(albert_name), expected, atol=1e-7)
    assert albert.config.compression["albert"]["sharing_init"] == sharing_init


def test_shared_layers_are_one_module_through_training_and_save_load(tmp_path):
    albert = to_albert(tiny_bert(num_hidden_layers=4), embedding_size=16, num_hidden_groups=2)
    n_params = sum(p.numel() for p in albert.parameters())
    assert layer_calls(albert) == [2, 2]  # 4 layers run, 2 distinct modules

    albert.train()
    shared = albert.albert.encoder.albert_layer_groups[0].albert_layers[0].attention.query.weight
    before = shared.detach().clone()
    optimizer = torch.optim.AdamW(albert.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(3):
        albert(**tiny_batch()).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    albert.eval()
    assert not torch.allclose(shared, before)  # it trained ...
    assert sum(p.numel() for p in albert.parameters()) == n_params  # ... and is still counted once
    assert layer_calls(albert) == [2, 2]

    albert.save_pretrained(tmp_path)
    layer_keys = [k for k in albert.state_dict() if ".albert_layers." in k]
    assert {k.split(".albert_layer_groups.")[1][0] for k in layer_keys} == {"0", "1"}
    reloaded = AlbertForSequenceClassification.from_pretrained(tmp_path).eval()
    assert sum(p.numel() for p in reloaded.parameters()) == n_params
    assert layer_calls(reloaded) == [2, 2]
    with torch.no_grad():
        assert max_diff(reloaded(**inputs()).logits, albert(**inputs()).logits) == 0.0


def test_provenance_is_recorded_and_keeps_earlier_steps(tmp_path):
    bert = tiny_bert()
    bert.config.compression = {"hf_compress_version": "0.1.0", "student": {"layers": [0, 2]}}
    albert = to_albert(bert, embedding_size=8, num_hidden_groups=1, sharing_init="first")
    albert.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "albert"
    assert saved["compression"]["student"] == {"layers": [0, 2]}
    recorded = saved["compression"]["albert"]
    assert recorded["embedding_size"] == 8 and recorded["num_hidden_groups"] == 1
    assert recorded["sharing_init"] == "first"
    assert 0 < recorded["embedding_reconstruction_error"] < 1
    assert recorded == albert.config.compression["albert"]


RELOAD_SCRIPT = """
import json, sys
import torch
from transformers import AutoModelForSequenceClassification
batch = {k: torch.tensor(v) for k, v in json.loads(sys.argv[1]).items()}
results = []
for path in sys.argv[2:]:
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    with torch.no_grad():
        logits = model(**batch).logits
    results.append({"class": type(model).__name__, "logits": logits.tolist(), "compression": model.config.compression})
assert not any(name.startswith("hf_compress") for name in sys.modules)
print(json.dumps(results))
"""


def test_reloads_as_stock_albert_without_hf_compress(tmp_path):
    batch = inputs()
    bert = tiny_bert(num_hidden_layers=4)
    paths, expected = [], []
    for E, G in [(None, None), (8, 1)]:  # exact conversion, and factorised + fully shared
        albert = to_albert(bert, embedding_size=E, num_hidden_groups=G)
        paths.append(str(tmp_path / f"albert-{E}-{G}"))
        albert.save_pretrained(paths[-1])
        with torch.no_grad():
            expected.append(albert(**batch).logits)
    encoded = json.dumps({k: v.tolist() for k, v in batch.items()})
    # -I keeps the working directory (this repo) off sys.path; the script asserts nothing imported hf_compress.
    command = [sys.executable, "-I", "-c", RELOAD_SCRIPT, encoded, *paths]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    results = json.loads(run.stdout.strip().splitlines()[-1])
    for result, logits, groups in zip(results, expected, [4, 1]):
        assert result["class"] == "AlbertForSequenceClassification"
        assert result["compression"]["albert"]["num_hidden_groups"] == groups
        assert max_diff(torch.tensor(result["logits"]), logits) <= 1e-5
    with torch.no_grad():
        assert max_diff(expected[0], bert(**batch).logits) <= 1e-5  # the exact one still matches BERT after reload


def tiny_gpt2() -> GPT2Model:
    return GPT2Model(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=32))


def tiny_distilbert() -> DistilBertForSequenceClassification:
    config = DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=32)
    return DistilBertForSequenceClassification(config)


@pytest.mark.parametrize(
    "make_model, name",
    [
        (tiny_gpt2, "GPT2Model"),
        (tiny_distilbert, "DistilBertForSequenceClassification"),
        (lambda: BertForMaskedLM(tiny_bert_config()), "BertForMaskedLM"),
    ],
)
def test_unsupported_architectures_raise(make_model, name):
    with pytest.raises(ValueError, match=name) as info:
        to_albert(make_model())
    assert "BertForSequenceClassification" in str(info.value)  # says what is supported


def test_decoder_bert_raises():
    with pytest.raises(ValueError, match="is_decoder"):
        to_albert(BertModel(tiny_bert_config(is_decoder=True)))


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"embedding_size": 0}, "embedding_size"),
        ({"embedding_size": -4}, "embedding_size"),
        ({"embedding_size": 33}, "embedding_size"),
        ({"embedding_size": 8.0}, "embedding_size"),
        ({"num_hidden_groups": 0}, "num_hidden_groups"),
        ({"num_hidden_groups": 5}, "num_hidden_groups"),
        ({"num_hidden_groups": 3}, "num_hidden_groups"),  # does not divide 4 layers
        ({"num_hidden_groups": True}, "num_hidden_groups"),
        ({"sharing_init": "median"}, "sharing_init"),
        ({"num_hidden_groups": 2, "sharing_init": 2}, "sharing_init"),  # 2 layers per group: index 0 or 1
        ({"num_hidden_groups": 2, "sharing_init": -1}, "sharing_init"),
    ],
)
def test_invalid_arguments_raise_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field) as info:
        to_albert(tiny_bert(num_hidden_layers=4), **kwargs)
    assert repr(kwargs[field]) in str(info.value)  # names the value too


def test_albert_num_parameters_counts_a_fresh_albert_model():
    # Independent of to_albert: the closed form against transformers' own construction.
    config = AlbertConfig(
        vocab_size=500, embedding_size=12, hidden_size=24, num_hidden_layers=6, num_hidden_groups=3,
        inner_group_num=2, num_attention_heads=4, intermediate_size=40, max_position_embeddings=20,
    )  # fmt: skip
    for pooling in (True, False):
        model = AlbertModel(config, add_pooling_layer=pooling)
        assert sum(p.numel() for p in model.parameters()) == albert_num_parameters(config, add_pooling_layer=pooling)


@pytest.mark.slow
def test_minilm_identity_conversion_is_exact():
    from hf_compress.data import minilm_path

    bert = AutoModel.from_pretrained(minilm_path()).eval()
    assert type(bert) is BertModel
    albert = to_albert(bert)
    batch = tiny_batch(batch_size=2, seq_len=32)
    batch.pop("labels")
    with torch.no_grad():
        expected, got = bert(**batch), albert(**batch)
    assert max_diff(got.last_hidden_state, expected.last_hidden_state) <= 1e-5
    assert max_diff(got.pooler_output, expected.pooler_output) <= 1e-5

    errors = [to_albert(bert, embedding_size=E).config.compression["albert"]["embedding_reconstruction_error"]
              for E in (64, 128, 256)]  # fmt: skip
    assert errors[0] > errors[1] > errors[2] > 0


# ---------------------------------------------------------------------------------------------------------------------
# Families: RoBERTa, XLM-RoBERTa, ELECTRA, DistilBERT (and BERT again, for the same matrix and the tokenizer reload).

FAMILY = dict(
    vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, num_labels=2,
)  # fmt: skip
# RoBERTa numbers positions from pad_token_id + 1, so 66 positions with pad 1 leave ALBERT 64.
ROBERTA = dict(FAMILY, max_position_embeddings=66, pad_token_id=1, bos_token_id=0, eos_token_id=2, type_vocab_size=1)
DISTILBERT = dict(
    vocab_size=VOCAB, dim=32, n_layers=3, n_heads=4, hidden_dim=64, max_position_embeddings=64, dropout=0.0,
    attention_dropout=0.0, num_labels=2,
)  # fmt: skip
VARIANTS = {
    "bert": lambda: tiny_bert_config(num_hidden_layers=3, num_labels=2),
    "roberta": lambda: RobertaConfig(**ROBERTA),
    "xlm-roberta": lambda: XLMRobertaConfig(**ROBERTA),
    "electra": lambda: ElectraConfig(**FAMILY, embedding_size=16, max_position_embeddings=64),  # E < H: projection
    "electra-e=h": lambda: ElectraConfig(**FAMILY, embedding_size=32, max_position_embeddings=64),  # no projection
    "distilbert": lambda: DistilBertConfig(**DISTILBERT),
    "distilbert-sinusoidal": lambda: DistilBertConfig(**DISTILBERT, sinusoidal_pos_embds=True),
}
FAMILY_CASES = [
    ("bert", BertModel),
    ("bert", BertForSequenceClassification),
    ("bert", BertForTokenClassification),
    ("bert", BertForQuestionAnswering),
    ("bert", BertForMultipleChoice),
    ("roberta", RobertaModel),
    ("roberta", RobertaForSequenceClassification),
    ("roberta", RobertaForTokenClassification),
    ("roberta", RobertaForQuestionAnswering),
    ("roberta", RobertaForMultipleChoice),
    ("xlm-roberta", XLMRobertaModel),
    ("xlm-roberta", XLMRobertaForSequenceClassification),
    ("xlm-roberta", XLMRobertaForTokenClassification),
    ("xlm-roberta", XLMRobertaForQuestionAnswering),
    ("xlm-roberta", XLMRobertaForMultipleChoice),
    ("electra", ElectraModel),
    ("electra", ElectraForTokenClassification),
    ("electra", ElectraForQuestionAnswering),
    ("electra-e=h", ElectraModel),
    ("electra-e=h", ElectraForTokenClassification),
    ("distilbert", DistilBertModel),
    ("distilbert", DistilBertForTokenClassification),
    ("distilbert", DistilBertForQuestionAnswering),
    ("distilbert-sinusoidal", DistilBertForTokenClassification),
]
CASE_IDS = [f"{variant}-{cls.__name__}" for variant, cls in FAMILY_CASES]
OUTPUTS = ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits")


def family_model(variant: str, model_class: type, seed: int = 0):
    """A tiny random model of the family, every parameter perturbed: no LayerNorm or bias is trivially 1 or 0."""
    torch.manual_seed(seed)
    model = model_class(VARIANTS[variant]()).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def right_padded_batch(model, seq_len: int = 12) -> dict:
    """Random ids padded on the right with the model's pad id (as its tokenizers pad), rows of different lengths."""
    batch = tiny_batch(seq_len=seq_len)
    batch.pop("labels")
    batch["attention_mask"][1, seq_len - 2 :] = 0
    batch["input_ids"][batch["attention_mask"] == 0] = model.config.pad_token_id
    if type(model).__name__.endswith("MultipleChoice"):
        batch = {k: v.unsqueeze(0) for k, v in batch.items()}  # (batch=1, choices=4, seq)
    return batch


def output_diffs(expected, got, attention_mask: torch.Tensor) -> dict[str, float]:
    """Max abs difference per output; per-token outputs only over real tokens (padding is masked out of attention)."""
    diffs = {}
    for name in OUTPUTS:
        a, b = getattr(expected, name, None), getattr(got, name, None)
        if a is None:
            continue
        if a.shape[: attention_mask.dim()] == attention_mask.shape:
            a, b = a[attention_mask.bool()], b[attention_mask.bool()]
        assert a.abs().max() > 1e-3, name  # a non-trivial output
        diffs[name] = max_diff(a, b)
    return diffs


@pytest.mark.parametrize("variant, model_class", FAMILY_CASES, ids=CASE_IDS)
def test_family_identity_conversion_is_exact(variant, model_class):
    model = family_model(variant, model_class)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    albert = to_albert(model)
    name = model_class.__name__
    assert type(albert).__name__ == ("Albert" + name[name.index("For") :] if "For" in name else "AlbertModel")
    assert albert.config.model_type == "albert"
    offset = model.config.pad_token_id + 1 if variant in ("roberta", "xlm-roberta") else 0
    assert albert.config.max_position_embeddings == model.config.max_position_embeddings - offset
    assert albert.config.embedding_size == getattr(model.config, "embedding_size", 32)
    assert albert.config.num_hidden_groups == 3
    batch = right_padded_batch(model)
    with torch.no_grad():
        diffs = output_diffs(model(**batch), albert(**batch), batch["attention_mask"])
    assert diffs and max(diffs.values()) <= 1e-5, diffs
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the source is untouched


def low_rank_shared(variant: str, model_class: type, rank: int):
    """A family model that factorisation and sharing can reproduce exactly: the centred tables ALBERT will index lie in
    one rank-`rank` subspace of the family's own embedding space, and every layer is a copy of the first.

    RoBERTa's position rows below pad_token_id + 1, which no real token uses, are left full-rank: a basis fitted on
    them too would no longer hold the rows that matter.
    """
    model = family_model(variant, model_class)
    base = model.base_model
    emb = base.embeddings
    D = emb.word_embeddings.embedding_dim
    offset = model.config.pad_token_id + 1 if variant in ("roberta", "xlm-roberta") else 0
    torch.manual_seed(1)
    basis = torch.randn(rank, D)

    def low_rank(n: int, scale: float = 1.0) -> torch.Tensor:
        # Per-row constant offsets (the all-ones direction) are removed by LayerNorm, so they may be anything.
        return scale * torch.randn(n, rank) @ basis + torch.randn(n, 1)

    with torch.no_grad():
        emb.word_embeddings.weight.copy_(low_rank(VOCAB))
        positions = emb.position_embeddings.weight
        positions[offset:] = low_rank(len(positions) - offset)
        if hasattr(emb, "token_type_embeddings"):
            emb.token_type_embeddings.weight.copy_(low_rank(emb.token_type_embeddings.num_embeddings, 0.3))
        layers = base.transformer.layer if variant.startswith("distilbert") else base.encoder.layer
        for layer in layers[1:]:
            layer.load_state_dict(layers[0].state_dict())
    return model


FACTORISED_CASES = [
    ("bert", BertForSequenceClassification),
    ("roberta", RobertaForSequenceClassification),
    ("xlm-roberta", XLMRobertaForTokenClassification),
    ("electra", ElectraForQuestionAnswering),  # refactorised inside ELECTRA's 16-wide space, then its projection
    ("electra-e=h", ElectraForTokenClassification),
    ("distilbert", DistilBertForQuestionAnswering),
    ("distilbert-sinusoidal", DistilBertModel),
]


@pytest.mark.parametrize(
    "variant, model_class", FACTORISED_CASES, ids=[f"{v}-{c.__name__}" for v, c in FACTORISED_CASES]
)
def test_family_factorisation_and_sharing_are_exact_where_the_model_allows(variant, model_class):
    rank = 7
    model = low_rank_shared(variant, model_class, rank)
    batch = right_padded_batch(model)
    exact = to_albert(model, embedding_size=rank + 1, num_hidden_groups=1, sharing_init="mean")
    short = to_albert(model, embedding_size=rank, num_hidden_groups=1)
    with torch.no_grad():
        expected = model(**batch)
        exact_diffs = output_diffs(expected, exact(**batch), batch["attention_mask"])
        short_diffs = output_diffs(expected, short(**batch), batch["attention_mask"])
    assert max(exact_diffs.values()) <= 1e-5, exact_diffs
    assert max(short_diffs.values()) > 1e-3, short_diffs  # one dimension fewer is not enough: the test can fail
    recorded = exact.config.compression["albert"]
    assert recorded["embedding_size"] == rank + 1 and recorded["num_hidden_groups"] == 1
    assert recorded["embedding_reconstruction_error"] < 1e-6 and recorded["position_reconstruction_error"] < 1e-6
    # One shared layer, counted once: the closed form plus the head.
    base = exact.base_model
    assert len(base.encoder.albert_layer_groups) == 1
    head = (
        0
        if exact is base
        else sum(p.numel() for name, p in exact.named_parameters() if not name.startswith("albert."))
    )
    pooling = base.pooler is not None
    assert sum(p.numel() for p in exact.parameters()) == albert_num_parameters(exact.config, pooling) + head


def test_electra_embedding_size_keeps_or_refactorises_its_own():
    # ELECTRA's embeddings are already 16-wide: None or 16 keeps them (exact), below 16 refactorises, above refuses.
    model = family_model("electra", ElectraForTokenClassification)
    batch = right_padded_batch(model)
    with torch.no_grad():
        expected = model(**batch).logits
        for E in (None, 16):
            albert = to_albert(model, embedding_size=E)
            assert albert.config.embedding_size == 16
            assert max_diff(albert(**batch).logits, expected) <= 1e-5
            mapping = albert.albert.encoder.embedding_hidden_mapping_in
            assert torch.equal(mapping.weight, model.electra.embeddings_project.weight)
        assert to_albert(model, embedding_size=8).config.embedding_size == 8
    for E in (24, 32):
        with pytest.raises(ValueError, match=rf"embedding_size={E} is invalid; allowed: .*\[1, 16\]"):
            to_albert(model, embedding_size=E)


def tiny_deberta_v2(model_class: type):
    config = DebertaV2Config(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, relative_attention=True, pos_att_type=["p2c", "c2p"], num_labels=2,
    )  # fmt: skip
    return model_class(config)


# (model factory, what the message must name: the class, the family, the head and the reason)
REFUSALS = [
    (lambda: tiny_deberta_v2(DebertaV2Model), ["DebertaV2Model", "deberta-v2", "relative positions"]),
    (
        lambda: tiny_deberta_v2(DebertaV2ForSequenceClassification),
        ["DebertaV2ForSequenceClassification", "deberta-v2", "relative positions"],
    ),
    (
        lambda: ElectraForSequenceClassification(VARIANTS["electra"]()),
        ["ElectraForSequenceClassification", "electra sequence classification", "GELU"],
    ),
    (
        lambda: ElectraForMultipleChoice(VARIANTS["electra"]()),
        ["ElectraForMultipleChoice", "electra multiple choice", "GELU"],
    ),
    (
        lambda: DistilBertForSequenceClassification(VARIANTS["distilbert"]()),
        ["DistilBertForSequenceClassification", "distilbert sequence classification", "ReLU"],
    ),
    (
        lambda: DistilBertForMultipleChoice(VARIANTS["distilbert"]()),
        ["DistilBertForMultipleChoice", "distilbert multiple choice", "ReLU"],
    ),
    (
        lambda: RobertaForMaskedLM(VARIANTS["roberta"]()),
        ["RobertaForMaskedLM", "roberta", "only this family's classes"],
    ),
    (tiny_gpt2, ["GPT2Model", "gpt2", "not a family to_albert knows"]),
]


@pytest.mark.parametrize("make_model, named", REFUSALS, ids=[named[0] for _, named in REFUSALS])
def test_refusals_name_family_head_and_reason_before_any_work(make_model, named, monkeypatch):
    model = make_model()

    def no_work(*args, **kwargs):
        raise AssertionError("to_albert started converting a model it must refuse")

    monkeypatch.setattr(albert_module, "describe", no_work)
    with pytest.raises(ValueError) as info:
        to_albert(model, embedding_size=8, num_hidden_groups=1)
    message = str(info.value)
    assert message.startswith(f"model='{named[0]}' is invalid; allowed: ")
    for part in named[1:]:
        assert part in message, (part, message)
    assert "RobertaForSequenceClassification" in message and "ElectraForTokenClassification" in message  # supported


def custom_activation_electra() -> ElectraModel:
    """An activation ALBERT's config cannot name (one patched in after construction, as custom code might)."""
    model = ElectraModel(VARIANTS["electra"]())
    model.config.hidden_act = "my_activation"
    return model


@pytest.mark.parametrize(
    "make_model, named",
    [
        (lambda: RobertaModel(RobertaConfig(**dict(ROBERTA, is_decoder=True))), "is_decoder=True"),
        (lambda: XLMRobertaModel(XLMRobertaConfig(**dict(ROBERTA, pad_token_id=None))), "pad_token_id=None"),
        (custom_activation_electra, "hidden_act='my_activation'"),
    ],
)
def test_configurations_alberts_cannot_compute_are_refused(make_model, named):
    with pytest.raises(ValueError, match=named) as info:
        to_albert(make_model())
    assert "is invalid; allowed: " in str(info.value)


@pytest.mark.parametrize("built_in_inference_mode", [False, True], ids=["built-normally", "built-in-inference-mode"])
@pytest.mark.parametrize("context", ["plain", "no_grad", "inference_mode"])
@pytest.mark.parametrize(
    "variant, model_class",
    [("roberta", RobertaForSequenceClassification), ("electra", ElectraForTokenClassification)],
    ids=["roberta", "electra"],
)
def test_converts_under_no_grad_and_inference_mode_into_a_trainable_model(
    variant, model_class, context, built_in_inference_mode
):
    reference = to_albert(family_model(variant, model_class), embedding_size=8, num_hidden_groups=1)
    if built_in_inference_mode:
        with torch.inference_mode():
            model = family_model(variant, model_class)
        assert all(p.is_inference() for p in model.parameters())
    else:
        model = family_model(variant, model_class)
    contexts = {"plain": contextlib.nullcontext, "no_grad": torch.no_grad, "inference_mode": torch.inference_mode}
    with contexts[context]():
        albert = to_albert(model, embedding_size=8, num_hidden_groups=1)
    assert not any(p.is_inference() for p in albert.parameters())
    assert all(p.requires_grad for p in albert.parameters())
    batch = right_padded_batch(model)
    with torch.no_grad():
        assert max_diff(albert(**batch).logits, reference(**batch).logits) == 0.0  # the same conversion

    # It trains outside inference mode: optimizer steps update the (shared) parameters in place.
    albert.train()
    shared = albert.albert.encoder.albert_layer_groups[0].albert_layers[0].attention.query.weight
    before = shared.detach().clone()
    optimizer = torch.optim.AdamW(albert.parameters(), lr=1e-2)
    albert(**batch).logits.square().mean().backward()
    optimizer.step()
    assert not torch.equal(shared, before)


NATURAL_PAIRS = (["the quick brown fox", "hello world"], ["jumps over the lazy dog", "a tiny corpus, tiny"])
BERT_PAIRS = (["w1 w2 w3", "w10 w11 w12 w13 w14 w15"], ["w4 w5", "w16"])  # words of tiny_tokenizer's vocabulary


TOKENIZERS = {"roberta": "roberta", "xlm-roberta": "xlm-roberta"}  # every other variant uses a BERT WordPiece one
AUTO = {"Model": "AutoModel", "SequenceClassification": "AutoModelForSequenceClassification",
        "TokenClassification": "AutoModelForTokenClassification", "QuestionAnswering": "AutoModelForQuestionAnswering",
        "MultipleChoice": "AutoModelForMultipleChoice"}  # fmt: skip

RELOAD_FAMILIES_SCRIPT = """
import json, sys
import torch, transformers
from transformers import AutoTokenizer

jobs = json.load(open({jobs!r}))
results = {{}}
for job in jobs:
    tokenizer = AutoTokenizer.from_pretrained(job["path"])
    try:  # tokenizer_config.json without tokenizer_class
        bare = AutoTokenizer.from_pretrained(job["bare"])
        bare_name, bare_ids = type(bare).__name__, bare(*job["pairs"], padding=True)["input_ids"]
    except Exception as error:  # reported per case rather than failing every case
        bare_name, bare_ids = repr(error), None
    encoded = tokenizer(*job["pairs"], padding=True, return_tensors="pt")
    model = getattr(transformers, job["auto"]).from_pretrained(job["path"]).eval()
    inputs = {{k: v.unsqueeze(0) for k, v in encoded.items()}} if job["choice"] else dict(encoded)
    with torch.no_grad():
        output = model(**inputs)
    names = ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits")
    results[job["case"]] = {{
        "tokenizer": type(tokenizer).__name__, "bare_tokenizer": bare_name,
        "input_ids": encoded["input_ids"].tolist(), "bare_input_ids": bare_ids,
        "class": type(model).__name__, "model_type": model.config.model_type,
        "outputs": {{n: getattr(output, n).tolist() for n in names if getattr(output, n, None) is not None}},
    }}
assert not any(name.startswith("hf_compress") for name in sys.modules)
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def reloaded(tmp_path_factory) -> dict:
    """Every family case converted, saved with its family's tokenizer, and reloaded in one fresh process.

    Returns {case id: (source outputs on the tokenizer's right-padded encoding, its attention mask and input ids, the
    tokenizer's class name, the ALBERT class name, what the fresh process saw)}.
    """
    root = tmp_path_factory.mktemp("albert-families")
    tokenizers = {
        "bert": tiny_tokenizer(root / "bert-vocab"),
        "roberta": family_tokenizer("roberta", root / "roberta-tokenizer"),
        "xlm-roberta": family_tokenizer("xlm-roberta", root / "xlm-roberta-tokenizer"),
    }
    jobs, expected = [], {}
    for case, (variant, model_class) in zip(CASE_IDS, FAMILY_CASES):
        family = TOKENIZERS.get(variant, "bert")
        tokenizer, pairs = tokenizers[family], BERT_PAIRS if family == "bert" else NATURAL_PAIRS
        model = family_model(variant, model_class)
        path, bare = root / case, root / f"{case}-bare"
        to_albert(model).save_pretrained(path)
        tokenizer.save_pretrained(path)
        assert (path / "model.safetensors").exists() and not list(path.glob("*.bin"))
        # The same tokenizer files and config.json, but a tokenizer_config.json without tokenizer_class: AutoTokenizer
        # then falls back to config.json, where model_type "albert" alone would pick ALBERT's SentencePiece tokenizer.
        shutil.copytree(path, bare, ignore=shutil.ignore_patterns("*.safetensors"))
        tokenizer_config = json.loads((bare / "tokenizer_config.json").read_text())
        tokenizer_config.pop("tokenizer_class")
        (bare / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))

        encoded = tokenizer(*pairs, padding=True, return_tensors="pt")
        assert encoded["attention_mask"].min() == 0  # padding is exercised
        choice = model_class.__name__.endswith("MultipleChoice")
        inputs = {k: v.unsqueeze(0) for k, v in encoded.items()} if choice else dict(encoded)
        if variant.startswith("distilbert"):
            inputs.pop("token_type_ids")  # DistilBERT has no token types; the ALBERT model gets them (zero rows)
        with torch.no_grad():
            outputs = model(**inputs)
        name = model_class.__name__
        auto = AUTO[name[name.index("For") + 3 :] if "For" in name else "Model"]
        jobs.append(
            {"case": case, "path": str(path), "bare": str(bare), "auto": auto, "pairs": pairs, "choice": choice}
        )
        albert_class = "Albert" + name[name.index("For") :] if "For" in name else "AlbertModel"
        expected[case] = (outputs, inputs["attention_mask"], encoded["input_ids"].tolist(), type(tokenizer).__name__)
        expected[case] += (albert_class,)
    (root / "jobs.json").write_text(json.dumps(jobs))
    run = run_python(RELOAD_FAMILIES_SCRIPT.format(jobs=str(root / "jobs.json")), cwd=str(root))
    assert run.returncode == 0, run.stderr[-4000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    return {case: (*expected[case], results[case]) for case in CASE_IDS}


@pytest.mark.parametrize("case", CASE_IDS)
def test_family_reloads_as_stock_albert_with_its_tokenizer_in_a_fresh_process(case, reloaded):
    outputs, attention_mask, input_ids, tokenizer_class, albert_class, result = reloaded[case]
    assert result["model_type"] == "albert" and result["class"] == albert_class
    # The family's own tokenizer, found through tokenizer_config.json and, without it, through config.json.
    assert result["tokenizer"] == result["bare_tokenizer"] == tokenizer_class
    assert result["input_ids"] == result["bare_input_ids"] == input_ids
    got = types.SimpleNamespace(**{k: torch.tensor(v) for k, v in result["outputs"].items()})
    diffs = output_diffs(outputs, got, attention_mask)
    assert diffs and max(diffs.values()) <= 1e-5, diffs


def test_token_weights_spend_the_factorisation_on_the_rows_that_matter():
    """Weighting vocabulary rows by use lowers the weighted reconstruction error of the word table."""
    from hf_compress.methods.albert.transform import token_frequencies

    model = tiny_bert(seed=4)
    used = torch.arange(5, 45)  # the tokens a "task" uses, some far more often
    counts = token_frequencies([used.tolist(), used[:10].tolist() * 5], model.config.vocab_size)
    words = model.bert.embeddings.word_embeddings.weight.detach().double()
    centred = words - words.mean(1, keepdim=True)
    gamma = model.bert.embeddings.LayerNorm.weight.detach().double()

    def weighted_error(albert) -> float:
        # Row x of the source is stored as x' in E-space; the mapping gives gamma * (the part of x it keeps).
        stored = albert.albert.embeddings.word_embeddings.weight.detach().double()
        kept = stored @ albert.albert.encoder.embedding_hidden_mapping_in.weight.detach().double().T / gamma
        residual, total = (centred - kept).pow(2).sum(1), centred.pow(2).sum(1)
        return float(((counts * residual).sum() / (counts * total).sum()).sqrt())

    plain = weighted_error(to_albert(model, embedding_size=8))
    converted = to_albert(model, embedding_size=8, token_weights=counts)
    weighted = weighted_error(converted)
    assert weighted < 0.8 * plain
    recorded = converted.config.compression["albert"]
    assert recorded["token_weighted"] and recorded["embedding_reconstruction_error"] == pytest.approx(weighted, 1e-6)
    with pytest.raises(ValueError, match="token_weights"):
        to_albert(model, embedding_size=8, token_weights=torch.zeros(model.config.vocab_size))
