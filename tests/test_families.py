"""Every BERT-style family through every feature and task head: one save/load matrix (PEFT's shape).

Each case builds a tiny random model of its family (hidden 32, the family's real tokenizer trained in-process; teacher
4 layers, student 2), applies one feature (training a few steps where it trains), checks the feature's effect, saves
the model with its tokenizer, and reloads it in a fresh process that never imports hf_compress (int8, low-bit and
low-rank: one that does, as their loader needs) to get the same logits on text, with the same hf_compress modules. A
case the library refuses asserts the refusal instead: a ValueError naming the family, the head and the reason. The
README's "Model families" table is generated from CASES (`tests/support_table.py`), so it says exactly what this file
tests.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from transformers import DistilBertForSequenceClassification, PreTrainedModel, default_data_collator

from hf_compress import (
    CompressionTrainer,
    CompressionTrainingArguments,
    DistillationTrainer,
    DistillationTrainingArguments,
    FakeQuantLinear,
    LowBitEmbedding,
    LowBitLinear,
    LowRankLinear,
    PruningTrainer,
    PruningTrainingArguments,
    create_student,
    factorize_linear_,
    prune_ffn_,
    prune_vocabulary_,
    quantize_,
    to_albert,
)
from hf_compress.families import encoder_linears, intermediate_size, layer_list
from tests.family_models import (
    CORPUS,
    EMBEDDING,
    HEADS,
    QA,
    SEQUENCE,
    TOKEN,
    family_model,
    family_tokenizer,
    head_outputs,
    task_encoding,
)
from tests.testing_utils import run_python, training_args

FAMILIES = ("bert", "roberta", "xlm-roberta", "electra", "deberta-v2", "distilbert", "mpnet")
HEAD_IDS = {SEQUENCE: "seq", TOKEN: "tok", QA: "qa", EMBEDDING: "emb"}
HEAD_SUFFIX = {
    SEQUENCE: "ForSequenceClassification", TOKEN: "ForTokenClassification", QA: "ForQuestionAnswering",
    EMBEDDING: "Model",
}  # fmt: skip
TASK_HEADS = (SEQUENCE, TOKEN, QA)  # the heads with logits
TRAIN_TEXTS = CORPUS[:16]
EVAL_TEXTS = CORPUS[:3]  # a subset of the training texts: vocabulary pruning keeps every token they use
TOLERANCE = 1e-5


@dataclass(frozen=True)
class Refusal:
    """A documented refusal: `reason` is what the README says, `says` a phrase the ValueError must contain."""

    reason: str
    says: str


@dataclass(frozen=True)
class Case:
    family: str
    feature: str
    head: str
    refusal: Refusal | None = None

    @property
    def id(self) -> str:
        return f"{self.feature}-{self.family}-{HEAD_IDS[self.head]}"


@dataclass
class Built:
    """What a feature produced: the final in-memory model and tokenizer, saved in `directory`."""

    model: PreTrainedModel
    tokenizer: object
    directory: Path
    loader: bool = False  # the reload must import hf_compress (its from_pretrained loader: int8, low-bit, low-rank)
    zeros: dict[str, int] = field(default_factory=dict)  # parameter -> zeros it holds, to be found after reload
    by_trainer: bool = False  # saved by our trainer's final save (not by the test's own save_pretrained)


@dataclass
class Context:
    """What a feature function gets: the case, its family's tokenizer and a folder of its own."""

    case: Case
    tokenizer: object
    directory: Path

    def model(self, num_layers: int = 2, seed: int = 0) -> PreTrainedModel:
        return family_model(self.case.family, self.tokenizer, self.case.head, num_layers, perturb=True, seed=seed)

    def dataset(self, texts: list[str] = TRAIN_TEXTS) -> Dataset:
        return Dataset.from_dict(task_encoding(self.tokenizer, self.case.head, texts))

    def args(self, cls, **overrides):
        return training_args(cls, self.directory / "run", max_steps=4, **overrides)

    def save(self, model: PreTrainedModel, tokenizer=None, **kwargs) -> Built:
        path = self.directory / "model"
        model.save_pretrained(path)
        (tokenizer or self.tokenizer).save_pretrained(path)
        return Built(model, tokenizer or self.tokenizer, path, **kwargs)

    def save_trainer(self, trainer, **kwargs) -> Built:
        """The trainer's final save (finalized, staged, pickle-free), with the tokenizer beside it."""
        path = self.directory / "model"
        trainer.save_model(str(path))
        self.tokenizer.save_pretrained(path)
        return Built(trainer.model, self.tokenizer, path, by_trainer=True, **kwargs)


def changed(before: dict[str, torch.Tensor], model: PreTrainedModel) -> bool:
    """Whether training moved the weights named in `before` (all of them must still be there, same shapes)."""
    state = model.state_dict()
    assert all(state[name].shape == before[name].shape for name in before)
    return any(not torch.equal(before[name], state[name]) for name in before)


def encoder_state(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    return {f"{name}.weight": module.weight.detach().clone() for name, module in encoder_linears(model).items()}


# ---------------------------------------------------------------------------------------------------------------------
# The features. Each checks its effect in memory and returns what it saved.


def student_feature(ctx: Context) -> Built:
    """`create_student(teacher, num_hidden_layers=2)`: layers 0 and 2 of a 4-layer teacher, copied."""
    teacher = ctx.model(num_layers=4)
    student = create_student(teacher, num_hidden_layers=2)
    assert type(student) is type(teacher) and student.config.num_hidden_layers == 2
    for s, t in zip(layer_list(student), [layer_list(teacher)[i] for i in (0, 2)]):
        assert all(torch.equal(a, b) for a, b in zip(s.state_dict().values(), t.state_dict().values()))
    return ctx.save(student)


def distillation_feature(ctx: Context) -> Built:
    """`DistillationTrainer`, 4 steps from a 4-layer teacher into its 2-layer student: logits, hidden-state and
    attention terms."""
    teacher = ctx.model(num_layers=4, seed=1)
    student = create_student(teacher, num_hidden_layers=2)
    before = encoder_state(student)
    args = ctx.args(DistillationTrainingArguments, hidden_loss_weight=1.0, attention_loss_weight=1.0)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=ctx.dataset())
    trainer.train()
    output_term = "embedding_mse" if ctx.case.head == EMBEDDING else "kd_loss"  # pooled embeddings, or logits
    logged = [h for h in trainer.state.log_history if output_term in h]
    assert logged and all(h["hidden_loss"] > 0 and h["attention_loss"] > 0 for h in logged), logged
    assert changed(before, trainer.model)
    return ctx.save_trainer(trainer)


def pruning_feature(ctx: Context) -> Built:
    """`PruningTrainer(target_sparsity=0.5)`, 4 steps: half of the encoder's Linear weights are zeros, after reload
    too."""
    model = ctx.model()
    args = ctx.args(PruningTrainingArguments, target_sparsity=0.5, pruning_start=1, pruning_end=3, pruning_frequency=1)
    trainer = PruningTrainer(model=model, args=args, train_dataset=ctx.dataset())
    trainer.train()
    targets = {name: weight for name, weight in trainer.pruner.targets.items()}
    zeros = {name: int((weight == 0).sum()) for name, weight in targets.items()}
    assert sum(zeros.values()) / sum(w.numel() for w in targets.values()) == pytest.approx(0.5, abs=1e-3)
    return ctx.save_trainer(trainer, zeros=zeros)


def ffn_transform_feature(ctx: Context) -> Built:
    """`prune_ffn_(model, batches, sparsity=0.5)`: Taylor scores on the training batches, FFN sliced from 64 to 32."""
    model = ctx.model()
    calibration = DataLoader(ctx.dataset().with_format("torch"), batch_size=8, collate_fn=default_data_collator)
    prune_ffn_(model, calibration, sparsity=0.5)
    assert intermediate_size(model.config) == 32 and model.config.compression["ffn_pruning"]["method"] == "taylor"
    return ctx.save(model)


def ffn_trainer_feature(ctx: Context) -> Built:
    """`PruningTrainer(ffn_sparsity=0.5)`, 4 steps: FFN neurons masked on the schedule, sliced from 64 to 32 at the
    save."""
    model = ctx.model()
    args = ctx.args(
        PruningTrainingArguments, target_sparsity=0.0, ffn_sparsity=0.5, pruning_start=1, pruning_end=3,
        pruning_frequency=1,
    )  # fmt: skip
    trainer = PruningTrainer(model=model, args=args, train_dataset=ctx.dataset())
    trainer.train()
    assert intermediate_size(trainer.model.config) == 32
    assert all(layer.size == 32 for layer in trainer.ffn_pruner.layers)
    return ctx.save_trainer(trainer)


def albert_feature(ctx: Context) -> Built:
    """`to_albert(model, embedding_size=16, num_hidden_groups=1)`: a stock `albert` checkpoint, one shared layer."""
    model = ctx.model(num_layers=2)
    albert = to_albert(model, embedding_size=16, num_hidden_groups=1)
    assert albert.config.model_type == "albert" and type(albert).__name__.endswith(HEAD_SUFFIX[ctx.case.head])
    assert len(albert.base_model.encoder.albert_layer_groups) == 1
    assert sum(p.numel() for p in albert.parameters()) < sum(p.numel() for p in model.parameters())
    return ctx.save(albert)


def vocabulary_feature(ctx: Context) -> Built:
    """`prune_vocabulary_` to the training texts' tokens: smaller embeddings and tokenizer, the same logits."""
    model = ctx.model()
    before = outputs(model, ctx.tokenizer)
    new_tokenizer = prune_vocabulary_(model, ctx.tokenizer, ctx.tokenizer(TRAIN_TEXTS)["input_ids"])
    assert len(new_tokenizer) == model.config.vocab_size < len(ctx.tokenizer)
    after = outputs(model, new_tokenizer)
    assert max_diff(before, after) <= TOLERANCE  # text made of kept tokens: the same logits
    return ctx.save(model, new_tokenizer)


def int8_feature(ctx: Context) -> Built:
    """`quantize_(model)`: int8 Linears and word embeddings; reloaded in a process that imports hf_compress."""
    model = ctx.model()
    before = outputs(model, ctx.tokenizer)
    quantize_(model)
    assert type(model.get_input_embeddings()).__name__ == "Int8Embedding"
    after = outputs(model, ctx.tokenizer)
    # Within int8's error, and not the float model: a broken kernel or a no-op quantization both fail.
    assert 0 < max_diff(before, after) < 0.1 * max(v.abs().max().item() for v in before.values())
    return ctx.save(model, loader=True)


def low_rank_feature(ctx: Context) -> Built:
    """`factorize_linear_(model, rank_ratio=0.5)`: every encoder Linear a LowRankLinear of at most half its weights
    (truncated SVD); reloaded in a process that imports hf_compress."""
    model = ctx.model()
    before = outputs(model, ctx.tokenizer)
    dense = {name: linear.weight.numel() for name, linear in encoder_linears(model).items()}
    factorize_linear_(model, rank_ratio=0.5)
    modules = dict(model.named_modules())
    assert dense and all(isinstance(modules[name], LowRankLinear) for name in dense)
    assert all(0 < modules[name].weight.numel() <= 0.5 * size for name, size in dense.items())
    assert not any(isinstance(m, torch.nn.Linear) for name in dense for m in modules[name].modules())
    # An approximation, not the float model, and not a broken one.
    after = outputs(model, ctx.tokenizer)
    assert 0 < max_diff(before, after) < max(v.abs().max().item() for v in before.values())
    return ctx.save(model, loader=True)


def low_bit_feature(ctx: Context) -> Built:
    """`CompressionTrainer(weight_bits=4, weight_quantization_modules="encoder_embeddings")`, 4 steps distilling a
    4-layer teacher into its 2-layer student with 4-bit fake-quantized encoder Linears and word embeddings, packed at
    the save (LowBitLinear, LowBitEmbedding); reloaded in a process that imports hf_compress."""
    teacher = ctx.model(num_layers=4, seed=1)
    student = create_student(teacher, num_hidden_layers=2)
    args = ctx.args(
        CompressionTrainingArguments, target_sparsity=0.0, weight_bits=4,
        weight_quantization_modules="encoder_embeddings",
    )  # fmt: skip
    trainer = CompressionTrainer(model=student, teacher_model=teacher, args=args, train_dataset=ctx.dataset())
    fakes = {name: m for name, m in trainer.model.named_modules() if isinstance(m, FakeQuantLinear)}
    assert set(fakes) == set(encoder_linears(trainer.model)) and fakes
    masters = {name: m.weight.detach().clone() for name, m in fakes.items()}
    trainer.train()
    assert any(not torch.equal(masters[name], m.weight) for name, m in fakes.items())  # the STE trained them
    built = ctx.save_trainer(trainer, loader=True)
    modules = dict(trainer.model.named_modules())
    assert all(isinstance(modules[name], LowBitLinear) and modules[name].bits == 4 for name in fakes)
    embeddings = trainer.model.get_input_embeddings()
    assert isinstance(embeddings, LowBitEmbedding) and embeddings.bits == 4
    return built


# feature id -> (column title in the README's table, the function; its docstring is the table's legend)
FEATURES: dict[str, tuple[str, Callable[[Context], Built]]] = {
    "student": ("`create_student`", student_feature),
    "distil": ("distillation", distillation_feature),
    "prune": ("unstructured pruning", pruning_feature),
    "ffn": ("`prune_ffn_`", ffn_transform_feature),
    "ffn-trainer": ("`ffn_sparsity`", ffn_trainer_feature),
    "albert": ("`to_albert`", albert_feature),
    "vocabulary": ("`prune_vocabulary_`", vocabulary_feature),
    "int8": ("int8", int8_feature),
    "low-rank": ("`factorize_linear_`", low_rank_feature),
    "low-bit": ("`weight_bits`", low_bit_feature),
}

_NO_LOSS = Refusal(
    "a base model has no loss of its own: prune it while distilling (CompressionTrainer)", "CompressionTrainer"
)
_NO_TAYLOR = Refusal("Taylor scores need a head's loss: use magnitude", "'magnitude'")
_RELATIVE = Refusal("relative (disentangled) attention", "disentangled")
_RELATIVE_BIAS = Refusal("relative-position bias in its attention", "relative-position bias")
_GELU = Refusal("dense → GELU head has no ALBERT counterpart", "GELU")
_RELU = Refusal("pre_classifier → ReLU head has no ALBERT counterpart", "ReLU")
# (feature, family, head) -> the documented refusal; head None means every head of the family.
REFUSED: dict[tuple[str, str, str | None], Refusal] = {
    ("albert", "deberta-v2", None): _RELATIVE,
    ("albert", "mpnet", None): _RELATIVE_BIAS,
    **{(feature, family, EMBEDDING): _NO_LOSS for feature in ("prune", "ffn-trainer") for family in FAMILIES},
    **{("ffn", family, EMBEDDING): _NO_TAYLOR for family in FAMILIES},
    ("albert", "electra", SEQUENCE): _GELU,
    ("albert", "distilbert", SEQUENCE): _RELU,
}


def refusal(feature: str, family: str, head: str) -> Refusal | None:
    return REFUSED.get((feature, family, head)) or REFUSED.get((feature, family, None))


CASES = [
    Case(family, feature, head, refusal(feature, family, head))
    for feature in FEATURES
    for family in FAMILIES
    for head in HEADS
]


# ---------------------------------------------------------------------------------------------------------------------
# Building the selected cases, and reloading them all in two fresh processes.


def outputs(model: PreTrainedModel, tokenizer, texts: list[str] = EVAL_TEXTS) -> dict[str, torch.Tensor]:
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return head_outputs(model.eval()(**encoded))


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


RELOAD_SCRIPT = """
import json, sys
if {import_hf_compress}:
    import hf_compress  # noqa: F401  the loader of int8, low-bit and low-rank checkpoints
import torch, transformers
from transformers import AutoTokenizer

results = {{}}
for job in json.load(open({jobs!r})):
    tokenizer = AutoTokenizer.from_pretrained(job["path"])
    model = getattr(transformers, job["auto"]).from_pretrained(job["path"]).eval()
    encoded = tokenizer(job["texts"], padding=True, return_tensors="pt")
    with torch.no_grad():
        output = model(**encoded)
    names = ("logits", "start_logits", "end_logits") if hasattr(output, "logits") or hasattr(output, "start_logits") \
        else ("last_hidden_state",)
    parameters = dict(model.named_parameters())
    results[job["case"]] = {{
        "tokenizer": type(tokenizer).__name__, "input_ids": encoded["input_ids"].tolist(),
        "class": type(model).__name__, "config": json.loads(model.config.to_json_string()),
        "modules": sorted({{type(m).__name__ for m in model.modules()}}),
        "ours": sorted({{type(m).__name__ for m in model.modules() if type(m).__module__.startswith("hf_compress")}}),
        "outputs": {{n: getattr(output, n).tolist() for n in names if getattr(output, n, None) is not None}},
        "zeros": {{name: int((parameters[name] == 0).sum()) for name in job["zeros"]}},
    }}
if not {import_hf_compress}:
    assert not any(name.startswith("hf_compress") for name in sys.modules), "hf_compress was imported"
print(json.dumps(results))
"""


def reload(jobs: list[dict], root: Path, import_hf_compress: bool) -> dict[str, dict]:
    """Load each job's saved model and tokenizer in one fresh process and run it on the job's texts.

    A job: {"case", "path", "auto" (the Auto class name), "texts", "zeros" (parameter names to count zeros of)}.
    Without `import_hf_compress` the process asserts it never imported hf_compress.
    """
    path = root / f"jobs-{'hf_compress' if import_hf_compress else 'stock'}.json"
    path.write_text(json.dumps(jobs))
    run = run_python(RELOAD_SCRIPT.format(jobs=str(path), import_hf_compress=import_hf_compress), cwd=str(root))
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def job(case_id: str, built: Built, head: str, texts: list[str] = EVAL_TEXTS) -> dict:
    return {"case": case_id, "path": str(built.directory), "auto": HEADS[head].__name__, "texts": texts,
            "zeros": sorted(built.zeros)}  # fmt: skip


@dataclass
class Outcome:
    case: Case
    root: Path  # the folder every case of the matrix saves under
    built: Built | None = None
    error: BaseException | None = None
    reloaded: dict | None = None


def selected_cases(request) -> list[Case]:
    """The matrix cases this session runs (all of them, or those -k / node ids picked), so a single case is fast."""
    picked = [
        item.callspec.params["case"]
        for item in request.session.items
        if getattr(item, "originalname", None) == "test_family_feature_head" and hasattr(item, "callspec")
    ]
    return picked or CASES


@pytest.fixture(scope="module")
def matrix(request, tmp_path_factory) -> dict[str, Outcome]:
    """Every selected case built (or refused), saved, and reloaded in two fresh processes (stock, and one that imports
    hf_compress for the cases that need its loader)."""
    root = tmp_path_factory.mktemp("families")
    tokenizers: dict[str, object] = {}
    outcomes: dict[str, Outcome] = {}
    for case in selected_cases(request):
        if case.family not in tokenizers:
            tokenizers[case.family] = family_tokenizer(case.family, root / f"tokenizer-{case.family}")
        outcome = outcomes[case.id] = Outcome(case, root)
        ctx = Context(case, copy.deepcopy(tokenizers[case.family]), root / case.id)
        try:
            outcome.built = FEATURES[case.feature][1](ctx)
        except Exception as error:  # recorded per case: the case's test asserts or re-raises it
            outcome.error = error
    for loader in (False, True):
        jobs = [job(i, o.built, o.case.head) for i, o in outcomes.items() if o.built and o.built.loader == loader]
        for case_id, result in (reload(jobs, root, loader) if jobs else {}).items():
            outcomes[case_id].reloaded = result
    return outcomes


def assert_saved_cleanly(built: Built, root: Path) -> None:
    """No pickle, no machine path in what describes the model, and our trainers' saves readable as the umask says.

    training_args.json is left out of the path check: it records the output_dir the caller gave, as given.
    """
    files = sorted(os.listdir(built.directory))
    assert "model.safetensors" in files and not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl"))]
    for name in files:
        if name.endswith(".json") and name != "training_args.json":
            assert str(root) not in (built.directory / name).read_text(encoding="utf-8"), name
    if built.by_trainer:
        umask = os.umask(0)
        os.umask(umask)
        paths = [p for p in built.directory.rglob("*")]  # sentence-transformers' module folders too
        modes = {str(p): stat.S_IMODE(os.stat(p).st_mode) for p in paths}
        assert modes == {str(p): (0o777 if p.is_dir() else 0o666) & ~umask for p in paths}, modes


def assert_reloaded_as_saved(built: Built, result: dict | None, texts: list[str] = EVAL_TEXTS) -> None:
    """The fresh process saw the saved model as it was in memory: class, tokenizer, config, logits, zeros, and the
    same hf_compress modules (int8, low-bit, low-rank), which only a model loaded with hf_compress holds."""
    assert result is not None, "the fresh process did not reload this model"
    assert result["class"] == type(built.model).__name__
    assert result["tokenizer"] == type(built.tokenizer).__name__
    assert result["input_ids"] == built.tokenizer(texts, padding=True)["input_ids"]
    config = json.loads(built.model.config.to_json_string())
    size_field = "hidden_dim" if config["model_type"] == "distilbert" else "intermediate_size"
    for key in ("model_type", "vocab_size", "compression", size_field):
        assert result["config"][key] == config[key], key
    got = {name: torch.tensor(values) for name, values in result["outputs"].items()}
    assert max(v.abs().max().item() for v in got.values()) > 1e-3  # a non-trivial output
    assert max_diff(outputs(built.model, built.tokenizer, texts), got) <= TOLERANCE
    assert result["zeros"] == built.zeros
    ours = sorted({type(m).__name__ for m in built.model.modules() if type(m).__module__.startswith("hf_compress")})
    assert result["ours"] == ours and bool(ours) == built.loader, (result["ours"], ours)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_family_feature_head(case: Case, matrix: dict[str, Outcome]):
    outcome = matrix[case.id]
    if case.refusal is not None:
        assert isinstance(outcome.error, ValueError), f"expected a refusal, got {outcome.error!r}"
        message = str(outcome.error)
        assert case.family in message, message
        assert case.head in message or HEAD_SUFFIX[case.head] in message, message
        assert case.refusal.says in message, message
        return
    if outcome.error is not None:
        raise outcome.error
    assert_saved_cleanly(outcome.built, outcome.root)
    assert_reloaded_as_saved(outcome.built, outcome.reloaded)


# ---------------------------------------------------------------------------------------------------------------------
# DistilBERT end to end, and students of another family than their teacher.


def test_distilbert_end_to_end_student_distilled_ffn_pruned_int8_reloads_as_stock_distilbert(tmp_path):
    tokenizer = family_tokenizer("distilbert", tmp_path / "tokenizer")
    teacher = family_model("distilbert", tokenizer, SEQUENCE, num_layers=6, perturb=True, seed=1)
    student = create_student(teacher, num_hidden_layers=3)
    assert student.config.compression["student"]["layers"] == [0, 2, 4]  # every other layer, as DistilBERT
    # LayerNorms stay float: the Linears are int8 once train() has finalized the model.
    before = {name: p.detach().clone() for name, p in student.named_parameters() if "layer_norm" in name}
    args = training_args(
        CompressionTrainingArguments, tmp_path / "run", max_steps=4, hidden_loss_weight=1.0,
        attention_loss_weight=1.0, ffn_sparsity=0.5, pruning_start=1, pruning_end=3, pruning_frequency=1,
        quantization="dynamic-int8",
    )  # fmt: skip
    data = Dataset.from_dict(task_encoding(tokenizer, SEQUENCE, TRAIN_TEXTS))
    trainer = CompressionTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
    trainer.train()
    assert len(before) == 12 and changed(before, trainer.model)  # 3 layers × 2 LayerNorms × (weight, bias): trained
    logged = [h for h in trainer.state.log_history if "kd_loss" in h]
    assert all(h["hidden_loss"] > 0 and h["attention_loss"] > 0 for h in logged) and logged[-1]["ffn_sparsity"] == 0.5
    path = tmp_path / "model"
    trainer.save_model(str(path))
    tokenizer.save_pretrained(path)
    model = trainer.model
    assert type(model) is DistilBertForSequenceClassification
    # Attention distillation ran eager attention (it returns the maps) only inside the loss: the student is back on
    # SDPA, which a stock load picks too. Eager and SDPA floats differ at ~1e-7, and int8 activation rounding can turn
    # that into a whole code (measured: up to 2.8e-3 in the logits over 300 random inputs): compare the same kernel.
    assert model.config._attn_implementation == "sdpa"
    assert (model.config.n_layers, model.config.hidden_dim) == (3, 32)  # 6 -> 3 layers, FFN 64 -> 32
    assert {"student", "distillation", "pruning", "quantization"} <= model.config.compression.keys()
    assert model.config.compression["pruning"]["ffn"]["intermediate_size"] == {"before": 64, "after": 32}
    built = Built(model, tokenizer, path, loader=True, by_trainer=True)
    assert_saved_cleanly(built, tmp_path)
    result = reload([job("distilbert", built, SEQUENCE)], tmp_path, import_hf_compress=True)["distilbert"]
    assert result["config"]["model_type"] == "distilbert"
    assert result["config"]["quantization_config"]["quant_method"] == "hf_compress_int8"
    assert_reloaded_as_saved(built, result)


def assert_loads_back(built: Built, head: str, family: str) -> PreTrainedModel:
    """The saved student loads as a stock model of its family with the same logits (fresh processes: the matrix)."""
    model = HEADS[head].from_pretrained(built.directory).eval()
    assert model.config.model_type == family and type(model) is type(built.model)
    texts = TRAIN_TEXTS[:3]
    assert max_diff(outputs(model, built.tokenizer, texts), outputs(built.model, built.tokenizer, texts)) <= TOLERANCE
    return model


def sharpen(teacher: PreTrainedModel, factor: float = 20.0) -> PreTrainedModel:
    """Scale the head's output layer: random tiny models give near-uniform logits, which any student matches."""
    with torch.no_grad():
        for module in teacher.modules():
            if isinstance(module, torch.nn.Linear) and module.out_features == teacher.config.num_labels:
                module.weight.mul_(factor)
    return teacher


def kl_to_teacher(student, teacher, tokenizer, head: str) -> float:
    """Mean KL(teacher ‖ student) of the head's distributions on the training texts (T = 1)."""
    encoded = tokenizer(TRAIN_TEXTS, padding=True, return_tensors="pt")
    if not student_takes_token_types(student):
        encoded.pop("token_type_ids", None)
    with torch.no_grad():
        s, t = head_outputs(student.eval()(**encoded)), head_outputs(teacher.eval()(**encoded))
    rows = encoded["attention_mask"].bool() if head == TOKEN else slice(None)
    return sum(
        torch.nn.functional.kl_div(s[k][rows].log_softmax(-1), t[k][rows].log_softmax(-1), log_target=True,
                                   reduction="batchmean").item()
        for k in s
    )  # fmt: skip


def student_takes_token_types(model) -> bool:
    return "token_type_ids" in inspect.signature(model.forward).parameters


# teacher family -> student family sharing its tokenizer: a DistilRoBERTa-shaped student (RoBERTa with fewer layers,
# built fresh, not from the teacher's layers), and BERT's classic DistilBERT student.
CROSS = [("roberta", "roberta"), ("bert", "distilbert"), ("distilbert", "bert"), ("electra", "bert")]


@pytest.mark.parametrize("head", TASK_HEADS, ids=[HEAD_IDS[h] for h in TASK_HEADS])
@pytest.mark.parametrize("teacher_family, student_family", CROSS, ids=[f"{t}-to-{s}" for t, s in CROSS])
def test_logit_distillation_into_a_student_of_another_shape_or_family(tmp_path, teacher_family, student_family, head):
    tokenizer = family_tokenizer(teacher_family, tmp_path / "tokenizer")
    teacher = sharpen(family_model(teacher_family, tokenizer, head, num_layers=4, perturb=True, seed=1))
    student = family_model(student_family, tokenizer, head, num_layers=2, perturb=True, seed=2)
    assert student.config.vocab_size == teacher.config.vocab_size  # one tokenizer
    start = kl_to_teacher(student, teacher, tokenizer, head)
    args = training_args(DistillationTrainingArguments, tmp_path / "run", max_steps=8, alpha=1.0, learning_rate=5e-3)
    data = Dataset.from_dict(task_encoding(tokenizer, head, TRAIN_TEXTS))
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
    trainer.train()
    assert kl_to_teacher(trainer.model, teacher, tokenizer, head) < 0.7 * start  # it learns the teacher
    built = Built(trainer.model, tokenizer, tmp_path / "model")
    trainer.save_model(str(built.directory))
    tokenizer.save_pretrained(built.directory)
    assert_loads_back(built, head, student_family)


def test_hidden_state_distillation_maps_widths_with_a_learned_projection(tmp_path):
    tokenizer = family_tokenizer("bert", tmp_path / "tokenizer")
    teacher = family_model("bert", tokenizer, SEQUENCE, num_layers=4, perturb=True, seed=1)  # hidden 32
    student = family_model("distilbert", tokenizer, SEQUENCE, num_layers=2, perturb=True, seed=2, dim=16)
    args = training_args(
        DistillationTrainingArguments, tmp_path / "run", max_steps=8, learning_rate=5e-3, hidden_loss_weight=1.0,
        attention_loss_weight=1.0,
    )  # fmt: skip
    data = Dataset.from_dict(task_encoding(tokenizer, SEQUENCE, TRAIN_TEXTS))
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data)
    projection = trainer.hidden_projection
    assert [(p.in_features, p.out_features) for p in projection] == [(16, 32), (16, 32)]
    assert trainer.layer_mapping == [1, 3]  # last student layer <-> last teacher layer
    initial = [p.weight.detach().clone() for p in projection]
    trainer.train()
    hidden = [h["hidden_loss"] for h in trainer.state.log_history if "hidden_loss" in h]
    assert hidden[-1] < hidden[0]  # the mapped student states approach the teacher's
    assert all(not torch.equal(p.weight, w) for p, w in zip(trainer.hidden_projection, initial))  # trained
    path = tmp_path / "model"
    trainer.save_model(str(path))
    tokenizer.save_pretrained(path)
    assert not any("hf_compress" in key for key in load_file(path / "model.safetensors"))  # not in the student
    assert assert_loads_back(Built(trainer.model, tokenizer, path), SEQUENCE, "distilbert").config.dim == 16


@pytest.mark.parametrize(
    "teacher_family, student_family", [("roberta", "bert"), ("bert", "xlm-roberta"), ("electra", "deberta-v2")]
)
def test_different_vocabularies_are_refused_naming_teacher_and_student(tmp_path, teacher_family, student_family):
    teacher_tokenizer = family_tokenizer(teacher_family, tmp_path / "teacher-tokenizer")
    student_tokenizer = family_tokenizer(student_family, tmp_path / "student-tokenizer")
    teacher = family_model(teacher_family, teacher_tokenizer, SEQUENCE, num_layers=4)
    student = family_model(student_family, student_tokenizer, SEQUENCE, num_layers=2)
    t, s = teacher.config.vocab_size, student.config.vocab_size
    assert t != s
    args = training_args(DistillationTrainingArguments, tmp_path / "run", max_steps=1)
    with pytest.raises(ValueError) as info:
        DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=None)
    message = str(info.value)
    assert f"vocab_size: teacher {t} vs student {s}" in message
    assert f"teacher {teacher_family}, student {student_family}" in message


@pytest.mark.parametrize("head", [SEQUENCE, QA], ids=["seq", "qa"])
def test_a_teacher_gets_the_token_types_its_student_family_has_none_of(tmp_path, head):
    # BERT's segment embeddings tell question from context (SQuAD) and premise from hypothesis (MNLI). A DistilBERT
    # student takes no token_type_ids, so Trainer would drop that column for it; the BERT teacher still needs it.
    tokenizer = family_tokenizer("bert", tmp_path / "tokenizer")
    teacher = family_model("bert", tokenizer, head, num_layers=4, perturb=True, seed=1)
    student = family_model("distilbert", tokenizer, head, num_layers=2, perturb=True, seed=2)
    pairs = tokenizer(TRAIN_TEXTS[:8], TRAIN_TEXTS[8:], padding="max_length", max_length=48, truncation=True)
    labels = {"labels": [i % 3 for i in range(8)]} if head == SEQUENCE else {}
    labels = labels or {"start_positions": [1] * 8, "end_positions": [3] * 8}
    data = Dataset.from_dict({**pairs, **labels})
    seen: dict[str, list] = {"teacher": [], "student": []}
    for name, model in (("teacher", teacher), ("student", student)):
        model.register_forward_pre_hook(lambda m, a, kwargs, name=name: seen[name].append(kwargs), with_kwargs=True)
    args = training_args(DistillationTrainingArguments, tmp_path / "run", max_steps=1, hidden_loss_weight=1.0)
    DistillationTrainer(model=student, teacher_model=teacher, args=args, train_dataset=data).train()
    (teacher_inputs,), (student_inputs,) = seen["teacher"], seen["student"]
    assert "token_type_ids" in teacher_inputs and "token_type_ids" not in student_inputs
    assert teacher_inputs["token_type_ids"].max() == 1  # the second segment
    rows = [pairs["input_ids"].index(ids) for ids in teacher_inputs["input_ids"].tolist()]
    assert teacher_inputs["token_type_ids"].tolist() == [pairs["token_type_ids"][i] for i in rows]
