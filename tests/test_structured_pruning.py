import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from hf_compress import CompressionTrainer, CompressionTrainingArguments, PruningTrainer, create_student, to_albert
from hf_compress.methods.ffn_pruning.pruner import FFNPruner
from hf_compress.methods.ffn_pruning.transform import ffn_layers, prune_ffn_, slice_ffn_
from hf_compress.methods.pruning.heads import HeadImportance, attention_outputs
from hf_compress.methods.pruning.schedule import SparsitySchedule
from hf_compress.methods.pruning.scores import gate_gradients
from tests.test_pruning_trainer import make_args
from tests.testing_utils import tiny_batch, tiny_bert, tiny_dataset

MODELS = {
    "bert": lambda: tiny_bert(),
    "albert": lambda: to_albert(tiny_bert(), num_hidden_groups=1),  # one FFN shared by both layers
}


def logits(model, batch=None) -> torch.Tensor:
    batch = batch or tiny_batch()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def calibration(n: int = 3) -> list[dict]:
    return [tiny_batch(seed=i) for i in range(n)]


def zero_neurons(model, masks) -> None:
    with torch.no_grad():
        for layer, mask in zip(ffn_layers(model), masks):
            layer.up.weight[~mask] = 0
            layer.up.bias[~mask] = 0
            layer.down.weight[:, ~mask] = 0


def encoder_zero_fraction(model) -> float:
    weights = [
        m.weight for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".encoder." in f".{n}."
    ]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


# ---------------------------------------------------------------- importance


@pytest.mark.parametrize("name", list(MODELS))
def test_gate_gradient_is_the_column_sum_of_weight_times_gradient(name):
    model = MODELS[name]()
    ffn, heads = (
        FFNPruner(model, sparsity=0.5, method="taylor", schedule=SparsitySchedule(0, 10, 1)),
        HeadImportance(model),
    )
    num_heads = model.config.num_attention_heads
    head_size = model.config.hidden_size // num_heads
    # Explicit gates, all ones, on each neuron's activation and each head's context; a shared module gets one gate
    # (the hook runs at every use), which is what importance "summed over the layers that share it" means.
    ffn_gates = [torch.ones(layer.size, requires_grad=True) for layer in ffn.layers]
    head_gates = [torch.ones(num_heads, requires_grad=True) for _ in heads.modules]
    hooks = [
        layer.down.register_forward_pre_hook(lambda m, args, g=g: (args[0] * g,))
        for layer, g in zip(ffn.layers, ffn_gates)
    ]
    hooks += [
        dense.register_forward_pre_hook(lambda m, args, g=g: (args[0] * g.repeat_interleave(head_size),))
        for (_, dense), g in zip(heads.modules, head_gates)
    ]
    model(**tiny_batch()).loss.backward()
    for hook in hooks:
        hook.remove()
    assert len(ffn.layers) == (1 if name == "albert" else 2) and len(heads.modules) == len(ffn.layers)
    ffn.before_optimizer_step()
    heads.before_optimizer_step()
    for layer, gate, score in zip(ffn.layers, ffn_gates, ffn.scores):
        torch.testing.assert_close(gate_gradients(layer.down.weight, layer.down.weight.grad), gate.grad)
        torch.testing.assert_close(score, gate.grad.abs())
        assert gate.grad.abs().max() > 0
    for gate, score in zip(head_gates, heads.scores):
        torch.testing.assert_close(score, gate.grad.abs())
        assert gate.grad.abs().min() > 0


def constructed_model():
    """Neuron 0: huge weights but an activation exactly 0 on every input; neuron 1: small weights that matter."""
    model = tiny_bert(num_hidden_layers=1, intermediate_size=2)
    layer = ffn_layers(model)[0]
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        layer.up.weight[0] = 10.0
        layer.up.bias[0] = -1e4  # GELU(x) == 0 for x far below 0: the LayerNorm-ed input can't lift it
        layer.down.weight[:, 0] = 10.0
        layer.up.weight[1] = 0.2 * torch.randn(32, generator=g)
        layer.up.bias[1] = 0.5
        layer.down.weight[:, 1] = 0.3 * torch.randn(32, generator=g)
    return model


def test_taylor_keeps_the_neuron_that_matters_and_magnitude_the_one_that_does_not():
    original = constructed_model()
    layer = ffn_layers(original)[0]
    norms = (layer.up.weight.pow(2).sum(1) + layer.down.weight.pow(2).sum(0)).sqrt()
    assert norms[0] > 20 * norms[1]
    kept_row = {}
    for method in ("taylor", "magnitude"):
        model = prune_ffn_(copy.deepcopy(original), calibration(), 0.5, method=method)
        assert model.config.intermediate_size == 1
        up = ffn_layers(model)[0].up.weight[0]
        kept_row[method] = next(i for i in (0, 1) if torch.equal(up, layer.up.weight[i]))
        batch = tiny_batch(seed=7)  # not a calibration batch
        change = float((logits(model, batch) - logits(original, batch)).abs().max())
        if method == "taylor":
            assert change <= 1e-6  # the dead neuron contributed nothing
        else:
            assert change > 1e-3  # removing the small neuron does change the predictions
    assert kept_row == {"taylor": 1, "magnitude": 0}
    assert model.config.compression["ffn_pruning"]["intermediate_size"] == {"before": 2, "after": 1}


# ---------------------------------------------------------------- slicing


@pytest.mark.parametrize("name", list(MODELS))
def test_sliced_model_gives_the_masked_models_logits(name):
    model = MODELS[name]()
    g = torch.Generator().manual_seed(0)
    masks = [torch.randperm(64, generator=g) < 40 for _ in ffn_layers(model)]  # keep 40 of 64 per layer
    zero_neurons(model, masks)
    masked = logits(model)
    slice_ffn_(model, masks)
    assert model.config.intermediate_size == 40
    assert all(
        layer.up.weight.shape == (40, 32) and layer.down.weight.shape == (32, 40) for layer in ffn_layers(model)
    )
    assert (logits(model) - masked).abs().max() <= 1e-5
    assert model.num_parameters() == MODELS[name]().num_parameters() - len(masks) * 24 * (32 + 1 + 32)


@pytest.mark.parametrize(
    "masks,message",
    [
        ([torch.arange(64) < 40, torch.arange(64) < 30], "same number"),
        ([torch.arange(64) < 40], r"masks='<1 masks>' is invalid; allowed: one bool mask per FFN layer \(2\)"),
        ([torch.zeros(64, dtype=torch.bool)] * 2, r"masks='<kept counts \[0\]>' is invalid; .*\(>= 1\)"),
        ([(torch.arange(64) < 40).float()] * 2, "bool vectors of length 64"),
        ([torch.arange(32) < 16] * 2, "bool vectors of length 64"),
    ],
    ids=["unequal-counts", "one-mask-for-two-layers", "no-neuron-kept", "float-masks", "wrong-length"],
)
def test_slice_refuses_masks_it_cannot_apply_and_leaves_the_model(masks, message):
    model = tiny_bert()
    with pytest.raises(ValueError, match=message):
        slice_ffn_(model, masks)
    assert model.config.intermediate_size == 64 and ffn_layers(model)[0].size == 64


def test_albert_shared_ffn_is_sliced_once_and_stays_shared():
    model = prune_ffn_(MODELS["albert"](), calibration(), 0.75)
    assert model.config.intermediate_size == 16 and model.config.num_hidden_groups == 1
    layers = ffn_layers(model)
    assert len(layers) == 1 and layers[0].up.weight.shape == (16, 32)


# ---------------------------------------------------------------- stock checkpoints


def test_saved_checkpoints_reload_without_hf_compress_with_the_same_logits(tmp_path):
    # A PruningTrainer run (BERT) and a one-shot prune_ffn_ (ALBERT-style), both loaded in a fresh interpreter.
    trainer = PruningTrainer(
        model=tiny_bert(),
        args=make_args(tmp_path / "run", max_steps=6, target_sparsity=0.0, ffn_sparsity=0.5, pruning_end=4),
        train_dataset=tiny_dataset(64),
    )
    trainer.train()
    trainer.model.eval()
    expected = {"bert": logits(trainer.model)}
    trainer.save_model(str(tmp_path / "bert"))
    albert = prune_ffn_(MODELS["albert"](), calibration(), 0.25)
    albert.save_pretrained(tmp_path / "albert")
    expected["albert"] = logits(albert)
    batch = tiny_batch()
    (tmp_path / "inputs.json").write_text(json.dumps({k: batch[k].tolist() for k in ("input_ids", "attention_mask")}))
    script = textwrap.dedent(
        """
        import json, sys
        import torch
        from transformers import AutoModelForSequenceClassification
        inputs = {k: torch.tensor(v) for k, v in json.load(open("inputs.json")).items()}
        out = {}
        for name in ("bert", "albert"):
            model = AutoModelForSequenceClassification.from_pretrained(name).eval()
            with torch.no_grad():
                out[name] = {"logits": model(**inputs).logits.tolist(), "config": model.config.to_dict()}
        assert "hf_compress" not in sys.modules
        print(json.dumps(out))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["bert"]["config"]["intermediate_size"] == 32 and out["bert"]["config"]["model_type"] == "bert"
    assert out["albert"]["config"]["intermediate_size"] == 48 and out["albert"]["config"]["model_type"] == "albert"
    assert out["bert"]["config"]["compression"]["pruning"]["ffn"]["intermediate_size"] == {"before": 64, "after": 32}
    for name in ("bert", "albert"):
        assert (torch.tensor(out[name]["logits"]) - expected[name]).abs().max() <= 1e-5, name


def test_sliced_model_quantizes_and_round_trips(tmp_path):
    from hf_compress.methods.int8.modules import Int8Linear
    from hf_compress.methods.int8.transform import quantize_

    model = prune_ffn_(tiny_bert(), calibration(), 0.5)
    reference = logits(model)
    quantize_(model)
    noise = (logits(model) - reference).pow(2).mean()
    assert 10 * torch.log10(reference.pow(2).mean() / noise) >= 20  # SQNR in dB, as the quantization tests ask
    for layer in model.bert.encoder.layer:
        up, down = layer.intermediate.dense, layer.output.dense
        assert isinstance(up, Int8Linear) and isinstance(down, Int8Linear)
        assert up.int8_weight().shape == (32, 32) and down.int8_weight().shape == (32, 32)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert loaded.config.intermediate_size == 32
    assert isinstance(loaded.bert.encoder.layer[0].output.dense, Int8Linear)
    assert torch.equal(logits(loaded), logits(model))


# ---------------------------------------------------------------- training


def make_trainer(output_dir, **overrides) -> PruningTrainer:
    kwargs = dict(target_sparsity=0.0, ffn_sparsity=0.5, pruning_start=2, pruning_end=10, pruning_frequency=2)
    kwargs.update(overrides)
    return PruningTrainer(model=tiny_bert(), args=make_args(output_dir, **kwargs), train_dataset=tiny_dataset(64))


@pytest.mark.parametrize("method", ["taylor", "magnitude"])
def test_trainer_removes_the_scheduled_neuron_count_and_keeps_them_zero(tmp_path, method):
    trainer = make_trainer(tmp_path, max_steps=14, ffn_pruning_method=method, weight_decay=0.1, learning_rate=1e-2)
    trainer.train()
    kept = {h["step"]: h["ffn_neurons"] for h in trainer.state.log_history if "ffn_neurons" in h}
    # 64 - round(64 * 0.5 * (1 - (1 - progress)^3)) at steps 4, 6, 8 of a 2 -> 10 ramp, updated every 2 steps.
    assert [kept[s] for s in range(1, 15)] == [64, 64, 64, 45, 45, 36, 36, 32, 32, 32, 32, 32, 32, 32]
    pruner = trainer.ffn_pruner
    for layer, mask in zip(pruner.layers, pruner.masks):
        assert int(mask.sum()) == 32
        # Zero after 4 optimizer steps with weight decay since the last mask update; survivors did move.
        assert torch.all(layer.up.weight[~mask] == 0) and torch.all(layer.up.bias[~mask] == 0)
        assert torch.all(layer.down.weight[:, ~mask] == 0)
        assert torch.all(layer.up.weight[mask].abs().sum(1) > 0)
    trainer.model.eval()
    masked = logits(trainer.model)
    trainer.save_model(str(tmp_path / "final"))
    assert trainer.model.config.intermediate_size == 32  # sliced in place: what was saved
    assert (logits(trainer.model) - masked).abs().max() <= 1e-5
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final")
    assert reloaded.config.intermediate_size == 32
    assert (logits(reloaded) - masked).abs().max() <= 1e-5
    report = json.loads((tmp_path / "final" / "pruning_report.json").read_text())
    assert report["ffn"]["intermediate_size"] == {"before": 64, "after": 32}
    assert [row["kept"] for row in report["ffn"]["layers"]] == [32, 32] and "layers" not in report
    assert reloaded.config.compression["pruning"]["ffn"]["method"] == method


def test_report_holds_per_head_importance(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=4, pruning_end=4)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    heads = json.loads((tmp_path / "final" / "pruning_report.json").read_text())["heads"]
    assert [row["name"] for row in heads] == [f"bert.encoder.layer.{i}.attention" for i in range(2)]
    assert all(len(row["importance"]) == 4 and min(row["importance"]) > 0 for row in heads)
    assert trainer.head_importance.steps == 4
    # Heads are reported, never removed.
    assert trainer.model.config.num_attention_heads == 4
    assert all(dense.weight.shape == (32, 32) for _, dense in attention_outputs(trainer.model))


@pytest.mark.parametrize("method", ["taylor", "movement"])
def test_unstructured_sparsity_counts_only_what_ffn_pruning_leaves(tmp_path, method):
    trainer = make_trainer(tmp_path, max_steps=12, target_sparsity=0.5, pruning_method=method)
    trainer.train()
    for layer, mask in zip(trainer.ffn_pruner.layers, trainer.ffn_pruner.masks):
        # Unstructured masks (movement's revivals included) never bring back a removed neuron.
        assert torch.all(layer.up.weight[~mask] == 0) and torch.all(layer.down.weight[:, ~mask] == 0)
    last = trainer.state.log_history[-2]  # the last training log before the summary
    assert last["ffn_neurons"] == 32 and last["sparsity"] == pytest.approx(0.5, abs=1e-3)
    trainer.save_model(str(tmp_path / "final"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final")
    assert reloaded.config.intermediate_size == 32
    # q, k, v, o (32x32) and the sliced FFN (32x32 twice) of 2 layers: half of what remains is zero.
    assert encoder_zero_fraction(reloaded) == pytest.approx(0.5, abs=1e-3)
    report = json.loads((tmp_path / "final" / "pruning_report.json").read_text())
    assert report["sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert {tuple(r["shape"]) for r in report["layers"]} == {(32, 32)}


def test_resume_gives_the_same_ffn_masks_and_weights_as_an_uninterrupted_run(tmp_path):
    full = make_trainer(tmp_path / "full", max_steps=12)
    full.train()
    first = make_trainer(tmp_path / "part", max_steps=12, save_strategy="steps", save_steps=5)
    first.train()
    checkpoint = tmp_path / "part" / "checkpoint-5"
    resumed = make_trainer(tmp_path / "part", max_steps=12)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    for a, b in zip(full.ffn_pruner.masks, resumed.ffn_pruner.masks):
        assert torch.equal(a, b) and int(a.sum()) == 32
    for a, b in zip(full.ffn_pruner.scores, resumed.ffn_pruner.scores):
        torch.testing.assert_close(a, b)
    for a, b in zip(full.head_importance.scores, resumed.head_importance.scores):
        torch.testing.assert_close(a, b)
    for (name, a), (_, b) in zip(full.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name


def test_compression_trainer_prunes_the_shared_albert_ffn(tmp_path):
    teacher = tiny_bert(seed=1, num_hidden_layers=4)
    trainer = CompressionTrainer(
        model=create_student(teacher, num_hidden_layers=2),
        teacher_model=teacher,
        args=CompressionTrainingArguments(
            output_dir=str(tmp_path),
            per_device_train_batch_size=8,
            report_to="none",
            use_cpu=True,
            disable_tqdm=True,
            save_strategy="no",
            max_steps=8,
            num_hidden_groups=1,
            ffn_sparsity=0.25,
            pruning_start=0,
            pruning_end=4,
            pruning_frequency=2,
        ),
        train_dataset=tiny_dataset(64),
    )
    assert trainer.pruner is None and len(trainer.ffn_pruner.layers) == 1
    trainer.train()
    trainer.model.eval()
    masked = logits(trainer.model)
    trainer.save_model(str(tmp_path / "final"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final")
    assert reloaded.config.model_type == "albert" and reloaded.config.intermediate_size == 48
    assert (logits(reloaded) - masked).abs().max() <= 1e-5


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "field,value", [("ffn_sparsity", 1.0), ("ffn_sparsity", -0.1), ("ffn_pruning_method", "movement")]
)
def test_bad_ffn_arguments_name_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        make_args(tmp_path, **{field: value})
    with pytest.raises(ValueError, match=field):
        CompressionTrainingArguments(output_dir=str(tmp_path), **{field: value})


def test_ffn_sparsity_that_leaves_no_neuron_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="ffn_sparsity=0.995.*intermediate_size=64"):
        make_trainer(tmp_path, ffn_sparsity=0.995)  # rounds to 64 of 64


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"sparsity": 1.0}, "sparsity"),
        ({"sparsity": 0.9}, "sparsity=0.9 is invalid for intermediate_size=2"),
        ({"sparsity": 0.5, "method": "movement"}, "method"),
        ({"sparsity": 0.5, "num_batches": 0}, "num_batches"),
        ({"sparsity": 0.5, "dataloader": None}, "dataloader"),
        ({"sparsity": 0.5, "dataloader": [{"input_ids": torch.ones(1, 4, dtype=torch.long)}]}, "labels"),
    ],
)
def test_prune_ffn_bad_input_names_the_argument_and_leaves_the_model(kwargs, message):
    model = constructed_model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=message):
        prune_ffn_(model, **{"dataloader": calibration(), **kwargs})
    assert model.config.intermediate_size == 2
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_head_gate_gradient_through_a_factorised_output_projection_equals_the_dense_one():
    # A LowRankLinear y = U·D·x has the gate gradients of the dense W = U·D: scaling input column j scales only
    # column j of D, so the column-block sums of D ⊙ ∂L/∂D equal those of W ⊙ ∂L/∂W.
    from hf_compress import LowRankLinear
    from hf_compress.methods.pruning.heads import input_weight_and_grad
    from hf_compress.methods.pruning.scores import gate_gradients

    torch.manual_seed(0)
    up, down, bias = torch.randn(12, 5), torch.randn(5, 16), torch.randn(12)
    factorised = LowRankLinear.from_factors(up, down, bias)
    dense = torch.nn.Linear(16, 12)
    with torch.no_grad():
        dense.weight.copy_(up @ down)
        dense.bias.copy_(bias)
    x = torch.randn(7, 16)
    gates = []
    for module in (factorised, dense):
        (module(x).tanh() ** 2).sum().backward()
        weight, grad = input_weight_and_grad(module)
        gates.append(gate_gradients(weight, grad, 4))
    assert gates[0].shape == (4,)
    torch.testing.assert_close(gates[0], gates[1], rtol=1e-4, atol=1e-5)
