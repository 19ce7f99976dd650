"""factorize_linear_: exact at full rank, each method better at its own error, budget allocation, layout round-trip."""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification, BertModel

from hf_compress import LowRankLinear, factorize_linear_, recorded_ranks, restore_low_rank_layout, to_albert
from hf_compress.methods.low_rank import transform as low_rank
from hf_compress.methods.low_rank.int8 import Int8LowRankLinear
from hf_compress.methods.low_rank.ranks import allocate_budget, rank_for_energy
from hf_compress.methods.low_rank.transform import select_linears
from tests.testing_utils import (
    load_in_stock_transformers,
    tiny_batch,
    tiny_bert,
    tiny_dataset,
    training_args,
)

BERT_LINEARS = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]
BERT_LINEARS += ["intermediate.dense", "output.dense"]
ALBERT_LINEARS = ["attention.query", "attention.key", "attention.value", "attention.dense", "ffn", "ffn_output"]


def batches(n: int = 4, batch_size: int = 8, seed: int = 0) -> list[dict]:
    """Calibration batches with labels (for the Fisher) and one padded row each."""
    return [tiny_batch(batch_size=batch_size, seed=seed + i) for i in range(n)]


def inputs() -> dict:
    batch = tiny_batch(batch_size=4, seed=100)
    batch.pop("labels")
    return batch


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs()).logits


def tiny_model(family: str) -> nn.Module:
    """A tiny BERT, or it converted to ALBERT with one shared layer ("albert") or two unshared groups ("albert-2")."""
    if family.startswith("albert"):
        return to_albert(tiny_bert(), num_hidden_groups=2 if family == "albert-2" else 1).eval()
    return tiny_bert()


def modules(model: nn.Module) -> dict[str, nn.Module]:
    return dict(model.named_modules())


def fisher_and_inputs(model: nn.Module, data: list[dict]) -> tuple[dict, dict, dict]:
    """Independently of the library: the full diagonal Fisher (mean squared batch gradient), the weights and the
    non-padding inputs X (tokens × in) of every default-selected Linear."""
    targets = select_linears(model)
    fisher = {n: torch.zeros_like(m.weight, dtype=torch.float64) for n, m in targets.items()}
    xs: dict[str, list] = {n: [] for n in targets}
    mask = {}
    handles = [
        m.register_forward_hook(lambda mod, args, out, n=n: xs[n].append(args[0].detach()[mask["m"]].double()))
        for n, m in targets.items()
    ]
    for batch in data:
        mask["m"] = batch["attention_mask"].bool()
        model.zero_grad()
        model(**batch).loss.backward()
        for n, m in targets.items():
            fisher[n] += m.weight.grad.double() ** 2 / len(data)
    for handle in handles:
        handle.remove()
    model.zero_grad()
    weights = {n: m.weight.detach().double().clone() for n, m in targets.items()}
    return fisher, weights, {n: torch.cat(x) for n, x in xs.items()}


def approximations(model: nn.Module, names) -> dict[str, torch.Tensor]:
    found = modules(model)
    return {n: found[n].dense_weight().detach().double() for n in names}


@pytest.mark.parametrize("family", ["bert", "albert"])
@pytest.mark.parametrize("method", ["svd", "fisher", "activation"])
def test_full_rank_gives_the_same_logits(family, method, monkeypatch):
    model = tiny_model(family)
    expected = logits(model)
    # Full rank never saves parameters, so the transform would keep every Linear; let it factorise anyway.
    monkeypatch.setattr(low_rank, "saves_parameters", lambda out, inp, rank: True)
    factorize_linear_(model, rank=10_000, method=method, dataloader=batches())
    factorised = [n for n, m in model.named_modules() if isinstance(m, LowRankLinear)]
    assert len(factorised) == (6 if family == "albert" else 12)
    assert all(modules(model)[n].rank == 32 for n in factorised)  # min(out, in) of every tiny Linear
    assert expected.abs().max() > 1e-3
    assert (logits(model) - expected).abs().max() <= 1e-5


@pytest.mark.parametrize("family", ["bert", "albert", "albert-2"])
def test_default_selection_is_the_encoder_layers_linears_only(family):
    model = tiny_model(family)
    factorize_linear_(model, rank_ratio=0.5)
    factorised = sorted(n for n, m in model.named_modules() if isinstance(m, LowRankLinear))
    if family == "bert":
        expected = sorted(f"bert.encoder.layer.{i}.{s}" for i in range(2) for s in BERT_LINEARS)
    else:  # a shared layer is listed once; not embedding_hidden_mapping_in, pooler or classifier
        groups = 2 if family == "albert-2" else 1
        expected = sorted(
            f"albert.encoder.albert_layer_groups.{g}.albert_layers.0.{s}"
            for g in range(groups)
            for s in ALBERT_LINEARS
        )
    assert factorised == expected
    assert sorted(recorded_ranks(model.config)) == expected
    assert all(modules(model)[n].rank == recorded_ranks(model.config)[n] for n in expected)


def test_rank_rules_and_report_count_parameters_honestly():
    model = tiny_bert()
    before = model.num_parameters()
    factorize_linear_(model, rank_ratio=0.5, dataloader=batches())
    record = model.config.compression["low_rank"]
    assert record["method"] == "svd" and record["rank_ratio"] == 0.5 and record["calibration_batches"] == 4
    assert before - model.num_parameters() == record["parameters_before"] - record["parameters_after"]
    for entry in record["modules"].values():
        out, inp = entry["shape"]
        r = entry["rank"]
        assert r == (out * inp) // (2 * (out + inp))  # 32×32 -> 8, 64×32 -> 10
        assert r * (out + inp) <= 0.5 * out * inp < (r + 1) * (out + inp)
        assert entry["parameters_after"] == r * (out + inp) + out
        assert 0 < entry["output_error"] < 1 and 0 < entry["energy_kept"] < 1


def test_energy_rule_keeps_the_smallest_rank_reaching_the_energy():
    model = tiny_bert()
    weights = {n: m.weight.detach().double().clone() for n, m in select_linears(model).items()}
    factorize_linear_(model, energy=0.6)
    record = model.config.compression["low_rank"]["modules"]
    for name, weight in weights.items():
        energies = torch.linalg.svdvals(weight) ** 2
        kept = torch.cumsum(energies, 0) / energies.sum()
        r = record[name]["rank"]
        assert kept[r - 1] >= 0.6 > (kept[r - 2] if r > 1 else 0)
        assert record[name]["energy_kept"] == pytest.approx(float(kept[r - 1]), abs=1e-6)
    assert rank_for_energy(torch.tensor([3.0, 2.0, 1.0]), 1.0) == 3
    assert rank_for_energy(torch.zeros(4), 0.5) == 1


def test_rank_that_saves_nothing_keeps_a_plain_linear():
    model = tiny_bert()
    expected = logits(model)
    factorize_linear_(model, rank=16)  # 16·(32+32) = 1024 = 32·32: no saving; 16·96 < 64·32: saving
    record = model.config.compression["low_rank"]["modules"]
    for name, module in select_linears(tiny_bert()).items():
        square = module.in_features == module.out_features
        assert isinstance(modules(model)[name], nn.Linear if square else LowRankLinear)
        assert record[name]["rank"] == (None if square else 16)
    assert not torch.equal(logits(model), expected)


def test_fisher_weighting_lowers_the_fisher_weighted_error():
    base = tiny_bert()
    data = batches()
    fisher, weights, _ = fisher_and_inputs(base, data)
    errors = {}
    for method in ("svd", "fisher"):
        model = copy.deepcopy(base)
        factorize_linear_(model, rank_ratio=0.5, method=method, dataloader=data)
        approx = approximations(model, weights)
        errors[method] = {n: float((fisher[n] * (weights[n] - approx[n]) ** 2).sum()) for n in weights}
    # Σ F⊙(W − Ŵ)² is what FWSVD approximates (grouping F by rows); it beats plain SVD on every module here.
    assert all(errors["fisher"][n] < errors["svd"][n] for n in weights)
    assert sum(errors["fisher"].values()) < 0.8 * sum(errors["svd"].values())


def test_activation_aware_lowers_the_output_error_and_reports_it():
    base = tiny_bert()
    data = batches()
    _, weights, xs = fisher_and_inputs(base, data)
    errors = {}
    for method in ("svd", "activation"):
        model = copy.deepcopy(base)
        factorize_linear_(model, rank_ratio=0.5, method=method, dataloader=data)
        approx = approximations(model, weights)
        errors[method] = {
            n: float((xs[n] @ (weights[n] - approx[n]).T).norm() / (xs[n] @ weights[n].T).norm()) for n in weights
        }
        recorded = model.config.compression["low_rank"]["modules"]
        assert all(recorded[n]["output_error"] == pytest.approx(errors[method][n], abs=1e-5) for n in weights)
    assert all(errors["activation"][n] < errors["svd"][n] for n in weights)
    assert sum(errors["activation"].values()) < 0.8 * sum(errors["svd"].values())


def test_activation_aware_is_exact_on_rank_deficient_inputs():
    # One sequence of 5 real tokens: X has rank <= 5 < rank 8, so ŴX = WX exactly, and nothing may blow up.
    batch = tiny_batch(batch_size=1, seq_len=5)
    model = tiny_bert()
    factorize_linear_(model, rank_ratio=0.5, method="activation", dataloader=[batch])
    record = model.config.compression["low_rank"]["modules"]
    assert all(entry["output_error"] < 1e-6 for entry in record.values())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(logits(model)).all()


def sensitive_model() -> BertForSequenceClassification:
    """Layer 1's attention output is scaled by 0.01: its value projection barely reaches the loss, though its own
    weights are as large as layer 0's value projection."""
    model = tiny_bert()
    with torch.no_grad():
        model.bert.encoder.layer[1].attention.output.dense.weight.mul_(0.01)
        model.bert.encoder.layer[1].attention.output.dense.bias.mul_(0.01)
    return model


@pytest.mark.parametrize("method", ["fisher", "svd"])
def test_budget_is_met_and_spent_where_the_loss_is_sensitive(method):
    model = sensitive_model()
    sizes = {n: m.weight.numel() for n, m in select_linears(model).items()}
    factorize_linear_(model, budget=0.4, method=method, dataloader=batches())
    record = model.config.compression["low_rank"]
    assert record["budget"] == 0.4
    kept = sum(e["parameters_after"] - e["shape"][0] for e in record["modules"].values())  # weights only
    assert kept <= 0.4 * sum(sizes.values())
    assert kept > 0.4 * sum(sizes.values()) - max(sum(e["shape"]) for e in record["modules"].values())
    ranks = record["ranks"]
    value = "bert.encoder.layer.{}.attention.self.value"
    assert ranks[value.format(0)] >= 4 * ranks[value.format(1)]
    assert (logits(model) - logits(sensitive_model())).abs().max() > 0  # it did factorise


def test_budget_allocation_is_greedy_by_sensitivity_per_parameter():
    # a: 10×10, 20 parameters a direction; b: 10×30, 40 a direction; 400 weights, budget 200, rank 1 each costs 60.
    # Best σ² per parameter first: b 81/40, a 36/20, b 64/40, a 25/20; b's 49/40 no longer fits; a's 1/20 does.
    spectra = {"a": torch.tensor([10.0, 6, 5, 1, 0.5, 0.1, 0, 0, 0, 0]), "b": torch.tensor([10.0, 9, 8, 7, 1, 0, 0])}
    ranks = allocate_budget(spectra, {"a": (10, 10), "b": (10, 30)}, budget=0.5)
    assert ranks == {"a": 4, "b": 3}  # 4·20 + 3·40 = 200
    # A module reaching the rank where factors stop saving parameters is left dense and takes no more.
    assert allocate_budget({"a": torch.ones(10)}, {"a": (10, 10)}, budget=1.0) == {"a": 5}


def test_gradient_flows_through_low_rank_linear_and_it_trains():
    model = tiny_bert().train()
    factorize_linear_(model, rank_ratio=0.5, method="fisher", dataloader=batches())
    layer = modules(model)["bert.encoder.layer.0.intermediate.dense"]
    assert isinstance(layer, LowRankLinear) and layer.weight.requires_grad
    batch = tiny_batch(batch_size=8, seed=7)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = model(**batch).loss
    first.backward()
    down_size = layer.rank * layer.in_features  # both factors, stored in one flat weight, get gradients
    assert layer.weight.grad[:down_size].abs().sum() > 0 and layer.weight.grad[down_size:].abs().sum() > 0
    assert layer.bias.grad is not None and layer.bias.grad.abs().sum() > 0
    before = layer.weight.detach().clone()
    for _ in range(10):
        optimizer.step()
        optimizer.zero_grad()
        model(**batch).loss.backward()
    assert not torch.equal(layer.weight, before)
    assert model(**batch).loss < first

    frozen = factorize_linear_(tiny_bert().requires_grad_(False), rank_ratio=0.5)  # a frozen layer stays frozen
    assert not any(p.requires_grad for p in frozen.parameters())


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("built_inside", [False, True])
@pytest.mark.parametrize("method", ["fisher", "activation"])
def test_works_under_no_grad_and_inference_mode(context, built_inside, method):
    reference = factorize_linear_(tiny_bert(), rank_ratio=0.5, method=method, dataloader=batches())
    if built_inside:
        with context():
            model = tiny_bert()
    else:
        model = tiny_bert()
    with context():
        factorize_linear_(model, rank_ratio=0.5, method=method, dataloader=batches())
        got = model(**inputs()).logits
    assert torch.allclose(got, logits(reference), atol=1e-5)
    layer = modules(model)["bert.encoder.layer.0.output.dense"]
    assert isinstance(layer, LowRankLinear) and not any(p.is_inference() for p in layer.parameters())
    if not (built_inside and context is torch.inference_mode):  # the rest of such a model is inference-only
        model(**tiny_batch()).loss.backward()  # the factorised model can still be trained
        assert layer.weight.grad is not None


def test_filter_fn_selects_other_modules():
    model = tiny_bert()
    factorize_linear_(
        model, rank=2, filter_fn=lambda module, name: name.endswith(("intermediate.dense", "classifier"))
    )
    assert sorted(recorded_ranks(model.config)) == [
        "bert.encoder.layer.0.intermediate.dense",
        "bert.encoder.layer.1.intermediate.dense",
        "classifier",
    ]
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, nn.Linear)


def test_save_restore_and_load_gives_the_same_logits(tmp_path):
    model = tiny_bert()
    factorize_linear_(model, rank_ratio=0.5, method="fisher", dataloader=batches())
    expected = logits(model)
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    state = load_file(str(path))
    # Every factor is stored flat: it can never take the shape of the dense Linear's weight.
    for name in recorded_ranks(model.config):
        assert state[f"{name}.weight"].dim() == 1

    fresh = BertForSequenceClassification(model.config).eval()
    restore_low_rank_layout(fresh, recorded_ranks(model.config))
    fresh.load_state_dict(state, strict=True)
    assert torch.equal(logits(fresh), expected)

    with torch.device("meta"):  # as from_pretrained builds models: no memory until the tensors load
        empty = BertForSequenceClassification(model.config).eval()
    restore_low_rank_layout(empty, recorded_ranks(model.config))
    assert empty.bert.encoder.layer[0].output.dense.weight.is_meta
    empty.load_state_dict(state, strict=True, assign=True)
    assert all(torch.equal(tensor, state[key]) for key, tensor in empty.state_dict().items())

    # A base model loads the task model's factors: the "bert." prefix is resolved.
    base = restore_low_rank_layout(BertModel(model.config, add_pooling_layer=True), recorded_ranks(model.config))
    base.load_state_dict({k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")})


def test_loaders_that_do_not_know_the_layout_fail_loudly(tmp_path):
    model = tiny_bert()
    factorize_linear_(model, rank_ratio=0.5)
    state = model.state_dict()
    with pytest.raises(RuntimeError, match="size mismatch"):
        tiny_bert().load_state_dict(state, strict=True)
    model.save_pretrained(tmp_path / "factorised")
    # Stock transformers (a process that never imports hf_compress) must refuse, never load factors as dense weights.
    result = load_in_stock_transformers(tmp_path / "factorised")
    assert result.returncode != 0, result.stdout
    assert "FAILED AutoModelForSequenceClassification RuntimeError" in result.stdout
    assert "FAILED BertForSequenceClassification RuntimeError" in result.stdout
    assert "LOADED" not in result.stdout and "hf_compress imported: False" in result.stdout
    assert "ignore_mismatched_sizes" in result.stderr and "hf_compress_low_rank" in result.stderr


@pytest.mark.parametrize("family", ["bert", "albert", "albert-2"])
def test_from_pretrained_reloads_a_factorised_model_with_the_same_logits(family, tmp_path):
    model = tiny_model(family)
    factorize_linear_(model, rank_ratio=0.5, method="activation", dataloader=batches(2))
    model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors"]  # safetensors only: no pickle
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["quantization_config"] == {
        "quant_method": "hf_compress_low_rank",
        "ranks": recorded_ranks(model.config),
        "format_version": 1,
    }
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    factorised = {n: m.rank for n, m in loaded.named_modules() if isinstance(m, LowRankLinear)}
    assert factorised == recorded_ranks(model.config) and factorised
    assert (logits(loaded) - logits(model)).abs().max() <= 1e-5
    # It trains as it is (the factors are float parameters) and saves again.
    assert all(p.requires_grad for n, p in loaded.named_parameters() if n in recorded_weights(model))
    loaded.save_pretrained(tmp_path / "again")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "again").eval()
    assert torch.equal(logits(again), logits(loaded))


def recorded_weights(model: nn.Module) -> set[str]:
    return {f"{name}.weight" for name in recorded_ranks(model.config)}


def test_a_dense_checkpoint_cannot_be_factorised_on_load_nor_a_quantized_model_factorised(tmp_path):
    from hf_compress import quantize_
    from hf_compress.format.config import LowRankConfig

    tiny_bert().save_pretrained(tmp_path)
    ranks = {"bert.encoder.layer.0.output.dense": 4}
    with pytest.raises(ValueError, match="pre-quantized"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path, quantization_config=LowRankConfig(ranks=ranks))
    with pytest.raises(ValueError, match="ranks={} is invalid"):
        LowRankConfig(ranks={})
    with pytest.raises(ValueError, match="factorise before quantize_"):
        factorize_linear_(quantize_(tiny_bert()), rank=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "rank/rank_ratio/energy/budget=None is invalid; allowed: exactly one"),
        ({"rank": 4, "rank_ratio": 0.5}, "rank/rank_ratio/energy/budget="),
        ({"rank": 0}, "rank=0 is invalid; allowed: an integer >= 1"),
        ({"rank": 2.5}, "rank=2.5 is invalid"),
        ({"rank": True}, "rank=True is invalid"),
        ({"rank_ratio": 0}, "rank_ratio=0 is invalid; allowed: a number in (0, 1]"),
        ({"rank_ratio": 1.5}, "rank_ratio=1.5 is invalid"),
        ({"energy": -0.1}, "energy=-0.1 is invalid"),
        ({"budget": "half"}, "budget='half' is invalid"),
        ({"rank": 4, "method": "pca"}, "method='pca' is invalid; allowed: 'svd', 'fisher', 'activation'"),
        ({"rank": 4, "method": "fisher"}, "dataloader=None is invalid"),
        ({"rank": 4, "method": "activation"}, "dataloader=None is invalid"),
        ({"budget": 0.5}, "dataloader=None is invalid"),
        ({"rank": 4, "num_batches": 0}, "num_batches=0 is invalid"),
        ({"rank": 4, "filter_fn": "query"}, "filter_fn='query' is invalid"),
        ({"rank": 4, "filter_fn": lambda module, name: False}, "filter_fn=<function"),
        ({"budget": 0.01, "dataloader": batches(1)}, "budget=0.01 is invalid; allowed: at least"),
    ],
)
def test_bad_arguments_raise_before_touching_the_model(kwargs, message):
    model = tiny_bert()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as error:
        factorize_linear_(model, **kwargs)
    assert message in str(error.value)
    assert not any(isinstance(m, LowRankLinear) for m in model.modules())
    assert "low_rank" not in (getattr(model.config, "compression", None) or {})
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


def test_factorising_twice_or_without_labels_raises():
    model = factorize_linear_(tiny_bert(), rank=2)
    with pytest.raises(ValueError, match="a model not yet factorised"):
        factorize_linear_(model, rank=2)
    unlabelled = [{k: v for k, v in b.items() if k != "labels"} for b in batches(2)]
    with pytest.raises(ValueError, match="batches with labels"):
        factorize_linear_(tiny_bert(), rank=2, method="fisher", dataloader=unlabelled)
    with pytest.raises(ValueError, match="no batches"):
        factorize_linear_(tiny_bert(), rank=2, method="activation", dataloader=[])


@pytest.mark.parametrize(
    "ranks, message",
    [
        ({}, "ranks={} is invalid"),
        ({"bert.encoder.layer.0.nope": 2}, "ranks='bert.encoder.layer.0.nope' is invalid"),
        ({"bert.encoder.layer.0.attention": 2}, "is invalid; allowed: the name of an nn.Linear module"),
        ({"bert.encoder.layer.0.output.dense": 0}, "ranks['bert.encoder.layer.0.output.dense']=0 is invalid"),
        ({"classifier": 4}, "ranks['classifier']=4 is invalid; allowed: an integer in [1, 3]"),
    ],
)
def test_restore_rejects_bad_ranks_before_any_swap(ranks, message):
    model = tiny_bert()
    ranks = {"bert.encoder.layer.1.output.dense": 2, **ranks} if ranks else ranks
    with pytest.raises(ValueError) as error:
        restore_low_rank_layout(model, ranks)
    assert message in str(error.value)
    assert not any(isinstance(m, LowRankLinear) for m in model.modules())


@pytest.mark.slow
def test_minilm_factorises_by_half_and_reloads(tmp_path):
    from transformers import AutoTokenizer

    from hf_compress.data import minilm_path

    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=3).eval()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    texts = ["the self driving car stopped at the light", "worst service ever, never again"] * 8
    data = [dict(tokenizer(texts, padding=True, return_tensors="pt"), labels=torch.tensor([0, 2] * 8))]
    before = model.num_parameters()
    factorize_linear_(model, rank_ratio=0.5, method="fisher", dataloader=data)
    record = model.config.compression["low_rank"]
    assert len(record["ranks"]) == 36  # 6 layers × (q, k, v, attention output, FFN up, FFN down)
    assert set(record["ranks"].values()) == {96, 153}  # ⌊0.5·384²/768⌋, ⌊0.5·384·1536/1920⌋
    assert before - model.num_parameters() == record["parameters_before"] - record["parameters_after"]
    assert record["parameters_after"] < 0.51 * record["parameters_before"]
    model.save_pretrained(tmp_path)
    # (Without hf_compress imported, from_pretrained fails: test_loaders_that_do_not_know_the_layout_fail_loudly.)
    fresh = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=3).eval()
    restore_low_rank_layout(fresh, recorded_ranks(model.config))
    fresh.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    batch = {k: v for k, v in data[0].items() if k != "labels"}
    with torch.no_grad():
        assert torch.equal(fresh(**batch).logits, model(**batch).logits)
        assert torch.equal(reloaded(**batch).logits, model(**batch).logits)


# ---------------------------------------------------------------- CompressionTrainer fields


def low_rank_trainer(tmp_path, teacher_layers: int = 4, **overrides):
    from hf_compress import CompressionTrainer, CompressionTrainingArguments, create_student

    kwargs = dict(max_steps=6, temperature=2.0, alpha=0.5, low_rank_ratio=0.5, low_rank_calibration_batches=2)
    kwargs.update(overrides)
    teacher = tiny_bert(seed=1, num_hidden_layers=teacher_layers)
    return CompressionTrainer(
        model=create_student(teacher, num_hidden_layers=2),
        teacher_model=teacher,
        args=training_args(CompressionTrainingArguments, tmp_path, **kwargs),
        train_dataset=tiny_dataset(64),
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"low_rank_method": "svd"},
        {"low_rank_method": "fisher", "low_rank_allocation": "budget"},
        {"low_rank_method": "activation", "num_hidden_groups": 1},  # ALBERT-style student, then factorised
        {"low_rank_method": "svd", "quantization": "dynamic-int8"},  # int8 factors at finalization
        # attention factorised, FFN neurons pruned (the FFN stays dense), then int8 of both kinds
        {
            "low_rank_method": "fisher",
            "low_rank_modules": "attention",
            "ffn_sparsity": 0.5,
            "pruning_frequency": 1,
            "quantization": "dynamic-int8",
        },
    ],
    ids=["svd", "fisher-budget", "activation-albert", "svd-int8", "attention-ffn-pruned-int8"],
)
def test_compression_trainer_factorises_the_student_distils_it_and_it_reloads(overrides, tmp_path):
    trainer = low_rank_trainer(tmp_path, **overrides)
    model = trainer.model
    record = model.config.compression["low_rank"]
    assert record["method"] == overrides["low_rank_method"]
    assert record["calibration_batches"] == (None if overrides["low_rank_method"] == "svd" else 2)
    assert record.get("budget" if "low_rank_allocation" in overrides else "rank_ratio") == 0.5
    assert record["parameters_after"] <= 0.5 * record["parameters_before"] + 32 * len(record["ranks"])  # + biases
    factors = {n: m.weight for n, m in model.named_modules() if isinstance(m, LowRankLinear)}
    shared = "num_hidden_groups" in overrides  # one ALBERT layer shared by both positions: its Linears count once
    per_layer = 4 if overrides.get("low_rank_modules") == "attention" else 6
    assert sorted(factors) == sorted(recorded_ranks(model.config)) and len(factors) == per_layer * (1 if shared else 2)
    assert all(".attention." in n for n in factors) or per_layer == 6
    before = {n: w.detach().clone() for n, w in factors.items()}
    trainer.train()
    # The optimizer held the factors: every one of them moved.
    assert all(not torch.equal(before[n], w) for n, w in factors.items())
    trainer.save_model(str(tmp_path / "final"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final").eval()
    int8 = "quantization" in overrides
    kind = Int8LowRankLinear if int8 else LowRankLinear
    assert {n: m.rank for n, m in reloaded.named_modules() if isinstance(m, kind)} == record["ranks"]
    assert int8 == (getattr(reloaded.config.quantization_config, "low_rank_ranks", None) == record["ranks"])
    assert (logits(reloaded) - logits(trainer.model.eval())).abs().max() <= 1e-5
    if "ffn_sparsity" in overrides:  # the dense FFN was pruned and sliced beside the factorised attention
        assert reloaded.config.intermediate_size == model.config.intermediate_size == 64 // 2
        up = reloaded.bert.encoder.layer[0].intermediate.dense
        assert up.out_features == 32 and not isinstance(up, (LowRankLinear, Int8LowRankLinear))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"low_rank_ratio": 0}, "low_rank_ratio=0 is invalid; allowed: null or a number in (0, 1]"),
        ({"low_rank_ratio": 1.5}, "low_rank_ratio=1.5 is invalid"),
        ({"low_rank_ratio": 0.5, "low_rank_method": "pca"}, "low_rank_method='pca' is invalid"),
        ({"low_rank_ratio": 0.5, "low_rank_allocation": "x"}, "low_rank_allocation='x' is invalid"),
        ({"low_rank_ratio": 0.5, "low_rank_calibration_batches": 0}, "low_rank_calibration_batches=0 is invalid"),
        ({"low_rank_ratio": 0.5, "target_sparsity": 0.5}, "target_sparsity=0.5 is invalid; allowed: 0 with"),
        ({"low_rank_ratio": 0.5, "ffn_sparsity": 0.25}, "ffn_sparsity=0.25 is invalid; allowed: 0 with"),
        (
            {"low_rank_ratio": 0.5, "low_rank_modules": "ffn"},
            "low_rank_modules='ffn' is invalid; allowed: 'all', 'attention'",
        ),
        (
            {"low_rank_ratio": 0.5, "low_rank_modules": "attention", "target_sparsity": 0.5},
            "target_sparsity=0.5 is invalid; allowed: 0 with",
        ),
    ],
)
def test_low_rank_arguments_are_validated(overrides, message, tmp_path):
    from hf_compress import CompressionTrainingArguments

    with pytest.raises(ValueError) as error:
        CompressionTrainingArguments(output_dir=str(tmp_path), **overrides)
    assert message in str(error.value)
