import copy
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForSequenceClassification

from hf_compress import DistillationTrainer, DistillationTrainingArguments, create_student, quantize_
from hf_compress.methods.int8.modules import Int8Linear
from hf_compress.trainer.distillation_trainer import int8_teacher
from tests.testing_utils import tiny_batch, tiny_bert, tiny_dataset, training_args


def make_args(tmp_path, **overrides) -> DistillationTrainingArguments:
    return training_args(DistillationTrainingArguments, tmp_path / "out", **{"num_train_epochs": 1, **overrides})


def make_trainer(tmp_path, student=None, teacher=None, dataset=None, **overrides) -> DistillationTrainer:
    teacher = teacher if teacher is not None else tiny_bert(seed=1, num_hidden_layers=4)
    student = student if student is not None else create_student(teacher, num_hidden_layers=2)
    return DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=make_args(tmp_path, **overrides),
        train_dataset=dataset if dataset is not None else tiny_dataset(32),
    )


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.5), (2.0, 0.9), (4.0, 0.0), (0.5, 1.0)])
def test_loss_equals_reference_formula(tmp_path, temperature, alpha):
    teacher, student = tiny_bert(seed=1), tiny_bert(seed=2)
    with torch.no_grad():  # random tiny models give near-uniform logits: sharpen them so the KL is far from zero
        teacher.classifier.weight.mul_(100)
        student.classifier.weight.mul_(100)
    trainer = make_trainer(tmp_path, student=student, teacher=teacher, temperature=temperature, alpha=alpha)
    batch = tiny_batch(batch_size=6)
    loss = trainer.compute_loss(trainer.model.eval(), batch)
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        s, t = trainer.model(**inputs).logits, trainer.teacher(**inputs).logits
    kl = F.kl_div(F.log_softmax(s / temperature, -1), F.softmax(t / temperature, -1), reduction="batchmean")
    expected = alpha * temperature**2 * kl + (1 - alpha) * F.cross_entropy(s, batch["labels"])
    assert kl.item() > 0.01
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradient_flows_only_to_student(tmp_path):
    trainer = make_trainer(tmp_path, hidden_loss_weight=1.0, attention_loss_weight=1.0)
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which this test bypasses
    trainer.training_step(trainer.model, tiny_batch())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.bert.encoder.parameters())
    assert all(p.grad is None and not p.requires_grad for p in trainer.teacher.parameters())
    assert not trainer.teacher.training


def _weights_after_one_step(tmp_path, name, batch_size, accumulation, **extra):
    torch.manual_seed(0)
    trainer = make_trainer(
        tmp_path / name,
        dataset=tiny_dataset(8),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=1e-2,
        optim="sgd",
        max_grad_norm=0.0,
        **extra,
    )
    trainer.train()
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


@pytest.mark.parametrize("extra", [{"alpha": 0.5}, {"alpha": 0.3, "hidden_loss_weight": 1.0}])
def test_gradient_accumulation_matches_one_large_batch(tmp_path, extra):
    big = _weights_after_one_step(tmp_path, "big", batch_size=8, accumulation=1, **extra)
    accumulated = _weights_after_one_step(tmp_path, "acc", batch_size=2, accumulation=4, **extra)
    init = tiny_bert(seed=1, num_hidden_layers=4)
    moved = 0
    for key, value in big.items():
        assert torch.allclose(value, accumulated[key], atol=1e-6), key
        moved += key.endswith("classifier.weight") and not torch.equal(value, init.classifier.weight)
    assert moved  # the step really changed the weights


def test_intermediate_terms_vanish_for_identical_models(tmp_path):
    teacher = tiny_bert(seed=3)
    trainer = make_trainer(
        tmp_path, student=copy.deepcopy(teacher), teacher=teacher, hidden_loss_weight=1.0, attention_loss_weight=1.0
    )
    trainer.compute_loss(trainer.model.eval(), tiny_batch())
    metrics = trainer._terms.eval_means()
    assert metrics["hidden_loss"] == pytest.approx(0.0, abs=1e-7)
    assert metrics["attention_loss"] == pytest.approx(0.0, abs=1e-7)
    assert metrics["kd_loss"] == pytest.approx(0.0, abs=1e-7)


def test_intermediate_terms_positive_for_different_models(tmp_path):
    trainer = make_trainer(tmp_path, hidden_loss_weight=1.0, attention_loss_weight=1.0, attention_loss_type="mse")
    trainer.compute_loss(trainer.model.eval(), tiny_batch())
    assert trainer._terms.eval_means()["hidden_loss"] > 1e-4
    assert trainer._terms.eval_means()["attention_loss"] > 1e-6


@pytest.mark.parametrize("activation_checkpointing", [False, True])
def test_attention_term_runs_eager_attention_and_gives_each_model_its_own_back(tmp_path, activation_checkpointing):
    """The attention term needs eager attention (SDPA returns no maps), only inside the loss: through training
    (forward and, with gradient checkpointing, the recomputed forward in backward) and evaluation; afterwards the
    user's student and teacher run their own implementation again (SDPA here, as from_pretrained gives)."""
    teacher = tiny_bert(seed=1, num_hidden_layers=4)
    student = create_student(teacher, num_hidden_layers=2)
    teacher.set_attn_implementation("sdpa")
    student.set_attn_implementation("sdpa")
    seen = []
    record = lambda module, args, kwargs: seen.append(module.config._attn_implementation)  # noqa: E731
    for model in (student, teacher):
        model.bert.encoder.layer[0].attention.self.register_forward_pre_hook(record, with_kwargs=True)
    trainer = make_trainer(
        tmp_path, student=student, teacher=teacher, attention_loss_weight=1.0, max_steps=2,
        activation_checkpointing=activation_checkpointing, logging_steps=1,
    )  # fmt: skip
    assert (student.config._attn_implementation, teacher.config._attn_implementation) == ("sdpa", "sdpa")
    trainer.train()
    metrics = trainer.evaluate(tiny_dataset(8))
    assert all(h["attention_loss"] > 0 for h in trainer.state.log_history if "kd_loss" in h)
    assert metrics["eval_attention_loss"] > 0
    assert seen and set(seen) == {"eager"}  # every forward of either model, the recomputed ones included
    assert student.config._attn_implementation == "sdpa" and teacher.config._attn_implementation == "sdpa"
    with torch.no_grad():  # and the student outside the loss is the SDPA model a stock load gives
        batch = {k: v for k, v in tiny_batch().items() if k != "labels"}
        maps = student(**batch, output_attentions=True).attentions
    assert not [m for m in maps or () if m is not None]


def test_cached_logits_give_the_same_loss_and_skip_the_teacher(tmp_path):
    dataset = tiny_dataset(16)
    plain = make_trainer(tmp_path / "a", dataset=dataset, num_train_epochs=3, max_grad_norm=0.0)
    cached = make_trainer(
        tmp_path / "b", dataset=dataset, num_train_epochs=3, max_grad_norm=0.0, cache_teacher_logits=True
    )
    calls = []
    cached.teacher.register_forward_hook(
        lambda module, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    plain.train()
    cached.train()
    plain_losses = [h["loss"] for h in plain.state.log_history if "loss" in h]
    cached_losses = [h["loss"] for h in cached.state.log_history if "loss" in h]
    assert plain_losses == pytest.approx(cached_losses, rel=1e-4)
    assert len(cached._logit_cache) == 16
    assert sum(calls) == 16  # every example went through the teacher once, over three epochs
    rates = [h["teacher_cache_hit_rate"] for h in cached.state.log_history if "teacher_cache_hit_rate" in h]
    assert rates[0] == 0.0 and rates[-1] == 1.0


def test_each_loss_term_is_logged(tmp_path):
    trainer = make_trainer(tmp_path, student=tiny_bert(seed=2), hidden_loss_weight=0.5, max_steps=2)
    trainer.train()
    logged = trainer.state.log_history[0]
    for key in ("loss", "kd_loss", "ce_loss", "hidden_loss"):
        assert key in logged and logged[key] > 0


def test_unlabelled_data_with_alpha_one(tmp_path):
    trainer = make_trainer(tmp_path, dataset=tiny_dataset(16, labels=False), alpha=1.0, max_steps=2)
    before = trainer.model.classifier.weight.clone()
    trainer.train()
    assert not torch.equal(before, trainer.model.classifier.weight)
    assert "ce_loss" not in trainer.state.log_history[0]


def test_unlabelled_data_with_alpha_below_one_says_so(tmp_path):
    trainer = make_trainer(tmp_path, dataset=tiny_dataset(16, labels=False), alpha=0.0, max_steps=1)
    with pytest.raises(ValueError, match="alpha"):
        trainer.train()


def test_projection_learns_when_widths_differ(tmp_path):
    teacher = tiny_bert(seed=1, num_hidden_layers=4)
    student = tiny_bert(seed=2, hidden_size=16, intermediate_size=32)
    trainer = make_trainer(tmp_path, student=student, teacher=teacher, hidden_loss_weight=1.0, max_steps=4)
    before = trainer.hidden_projection[0].weight.clone()
    batch = {k: torch.tensor(v) for k, v in tiny_dataset(2)[:2].items() if k != "label"}
    # Only the trainer's own forward projects (inside the forward, for DDP); any other caller gets the student's width.
    assert trainer.model(**batch, output_hidden_states=True).hidden_states[-1].shape[-1] == 16
    inputs = {**batch, "labels": torch.tensor([0, 1])}
    seen = []
    hook = trainer.model.register_forward_hook(lambda m, a, out: seen.append(out.hidden_states[-1].shape[-1]))
    trainer.compute_loss(trainer.model, inputs)
    hook.remove()
    assert seen == [32]
    trainer.train()
    assert trainer.hidden_projection[0].weight.shape == (32, 16)
    assert not torch.equal(before, trainer.hidden_projection[0].weight)
    assert trainer.layer_mapping == [1, 3]  # 0-based teacher layer ids (1-based [2, 4] before 0.2)


def test_teacher_never_saved_and_student_reloads_stock(tmp_path):
    trainer = make_trainer(tmp_path, max_steps=2, hidden_loss_weight=1.0)
    trainer.train()
    trainer.save_model(str(tmp_path / "final"))
    files = sorted(os.listdir(tmp_path / "final"))
    assert "model.safetensors" in files and "training_args.json" in files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final")
    assert reloaded.config.num_hidden_layers == 2
    assert set(reloaded.state_dict()) == set(trainer.model.state_dict())


def test_checkpoint_keeps_projection_for_resume(tmp_path):
    student = tiny_bert(seed=2, hidden_size=16, intermediate_size=32)
    trainer = make_trainer(
        tmp_path, student=student, hidden_loss_weight=1.0, max_steps=2, save_strategy="steps", save_steps=2
    )
    trainer.train()
    # The projection trains as a submodule of the student, so it is in the checkpoint's weights (not the final model).
    saved = load_file(str(tmp_path / "out" / "checkpoint-2" / "model.safetensors"))
    assert torch.equal(saved["hf_compress_hidden_projection.0.weight"], trainer.hidden_projection[0].weight)
    final = trainer.model.state_dict()
    assert not any(k.startswith("hf_compress_hidden_projection") for k in final)


def test_incompatible_vocabularies_are_refused(tmp_path):
    with pytest.raises(ValueError, match="vocab_size: teacher 1000 vs student 500"):
        make_trainer(tmp_path, student=tiny_bert(vocab_size=500))


def test_incompatible_label_counts_are_refused(tmp_path):
    with pytest.raises(ValueError, match="num_labels: teacher 3 vs student 2"):
        make_trainer(tmp_path, student=tiny_bert(num_labels=2))


def test_plain_training_arguments_are_refused(tmp_path):
    from transformers import TrainingArguments

    with pytest.raises(ValueError, match="DistillationTrainingArguments"):
        DistillationTrainer(model=tiny_bert(), teacher_model=tiny_bert(), args=TrainingArguments(str(tmp_path)))


def test_teacher_loaded_by_name(tmp_path):
    teacher = tiny_bert(seed=1)
    teacher.save_pretrained(tmp_path / "teacher")
    trainer = DistillationTrainer(
        model=tiny_bert(seed=2),
        args=make_args(tmp_path, teacher_model_name_or_path=str(tmp_path / "teacher")),
        train_dataset=tiny_dataset(8),
    )
    assert torch.equal(trainer.teacher.classifier.weight, teacher.classifier.weight)


@pytest.mark.parametrize(
    "field,value",
    [
        ("temperature", 0.0),
        ("temperature", -1.0),
        ("alpha", 1.5),
        ("alpha", -0.1),
        ("hidden_loss_weight", -1.0),
        ("attention_loss_type", "cosine"),
        ("layer_mapping", []),
        ("teacher_quantization", "int4"),
        ("teacher_quantization", True),
    ],
)
def test_bad_arguments_name_the_field(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        make_args(tmp_path, **{field: value})


def test_int8_teacher_gives_the_soft_targets_and_leaves_the_passed_teacher_float(tmp_path):
    teacher, student = tiny_bert(seed=1, num_hidden_layers=4), tiny_bert(seed=2)
    with torch.no_grad():  # sharpen the near-uniform logits of a random model, so the two teachers' KL differ
        teacher.classifier.weight.mul_(100)
    original = copy.deepcopy(teacher.state_dict())
    trainer = make_trainer(tmp_path, student=student, teacher=teacher, teacher_quantization="int8", alpha=1.0)
    assert isinstance(trainer.teacher.bert.encoder.layer[0].intermediate.dense, Int8Linear)
    assert isinstance(teacher.bert.encoder.layer[0].intermediate.dense, torch.nn.Linear)  # the caller's is untouched
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in original.items())
    batch = tiny_batch(batch_size=6)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        int8_logits = quantize_(copy.deepcopy(teacher))(**inputs).logits
        float_logits = teacher(**inputs).logits
        s = trainer.model(**inputs).logits
    assert not torch.allclose(int8_logits, float_logits, atol=1e-4)  # the int8 teacher is really another teacher

    def kd(t):
        return 4 * F.kl_div(F.log_softmax(s / 2, -1), F.softmax(t / 2, -1), reduction="batchmean")

    loss = trainer.compute_loss(trainer.model.eval(), batch)
    assert loss.item() == pytest.approx(kd(int8_logits).item(), rel=1e-5)
    assert abs(kd(int8_logits).item() - kd(float_logits).item()) > 1e-5 * kd(float_logits).item()


@pytest.mark.parametrize("extra", [{"hidden_loss_weight": 1.0}, {"cache_teacher_logits": True, "num_train_epochs": 2}])
def test_int8_teacher_trains_with_hidden_states_or_the_logit_cache_and_is_recorded(tmp_path, extra):
    trainer = make_trainer(tmp_path, dataset=tiny_dataset(16), teacher_quantization="int8", **extra)
    assert isinstance(trainer.teacher.bert.encoder.layer[0].output.dense, Int8Linear)
    calls = []
    trainer.teacher.register_forward_hook(
        lambda module, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    trainer.train()
    if "hidden_loss_weight" in extra:
        assert trainer.state.log_history[0]["hidden_loss"] > 0
        assert sum(calls) == 16  # one epoch, the int8 teacher on every example
    else:
        assert sum(calls) == 16 and len(trainer._logit_cache) == 16  # filled by the int8 teacher, once per example
    trainer.save_model(str(tmp_path / "final"))
    config = AutoConfig.from_pretrained(tmp_path / "final")
    assert config.compression["distillation"]["teacher_quantization"] == "int8"


@pytest.mark.parametrize("case", ["cuda", "bfloat16", "already int8"])
def test_int8_teacher_refuses_what_it_cannot_quantize(case):
    teacher = tiny_bert(seed=1)
    device = "cuda" if case == "cuda" else "cpu"
    if case == "bfloat16":
        teacher = teacher.to(torch.bfloat16)
    if case == "already int8":
        teacher = quantize_(teacher)
    with pytest.raises(ValueError, match="teacher_quantization='int8' is invalid; allowed: null"):
        int8_teacher(teacher, torch.device(device))


def test_int8_teacher_is_refused_when_the_trainer_is_built(tmp_path):
    teacher = tiny_bert(seed=1).to(torch.bfloat16)
    with pytest.raises(ValueError, match="teacher_quantization='int8' is invalid; allowed: null for a torch.bfloat16"):
        make_trainer(tmp_path, student=tiny_bert(seed=2), teacher=teacher, teacher_quantization="int8")
    assert teacher.bert.encoder.layer[0].output.dense.weight.dtype == torch.bfloat16  # left as it was


def test_caching_with_intermediate_terms_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cache_teacher_logits"):
        make_args(tmp_path, cache_teacher_logits=True, hidden_loss_weight=1.0)


def test_bad_layer_mapping_for_the_models_is_refused(tmp_path):
    with pytest.raises(ValueError, match="layer_mapping"):
        make_trainer(tmp_path, hidden_loss_weight=1.0, layer_mapping=[1, 2, 3])


def test_projection_gradient_is_fresh_at_every_step_and_trains_as_part_of_the_student(tmp_path):
    from transformers import TrainerCallback

    class GradAtStepBegin(TrainerCallback):
        def __init__(self):
            self.norms = []

        def on_step_begin(self, args, state, control, model=None, **kwargs):
            grads = [p.grad for p in trainer.hidden_projection.parameters()]
            self.norms.append(sum(float(g.norm()) for g in grads if g is not None))

    teacher = tiny_bert(seed=1, num_hidden_layers=4, hidden_size=48)
    student = tiny_bert(seed=2, num_hidden_layers=2)
    trainer = make_trainer(
        tmp_path, student=student, teacher=teacher, hidden_loss_weight=1.0, max_steps=6, gradient_accumulation_steps=2
    )
    # Part of the module tree while training: Trainer's optimizer, zero_grad, clipping and DDP see it as the student's.
    projection = {id(p) for p in trainer.hidden_projection.parameters()}
    assert projection <= {id(p) for p in trainer.model.parameters()}
    watch = GradAtStepBegin()
    trainer.add_callback(watch)
    before = [p.detach().clone() for p in trainer.hidden_projection.parameters()]
    trainer.train()
    assert watch.norms == [0.0] * 6  # zeroed after every optimizer step, like the student's own gradients
    assert all(not torch.equal(p, b) for p, b in zip(trainer.hidden_projection.parameters(), before))
    assert not projection & {id(p) for p in trainer.model.parameters()}  # finalize() detached it


def _varied_token_dataset(n: int = 24):
    """Token classification rows of different lengths and label counts (so items per micro-batch vary)."""
    from datasets import Dataset

    g = torch.Generator().manual_seed(0)
    ids, labels = [], []
    for i in range(n):
        k = 3 + (i * 5) % 9
        row = torch.randint(5, 1000, (k,), generator=g).tolist()
        ids.append(row)
        labels.append([-100] + [t % 3 if j % 2 else -100 for j, t in enumerate(row[1:])])
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids], "labels": labels})


def test_logged_terms_are_item_weighted_whatever_the_accumulation_and_recombine_to_the_loss(tmp_path):
    from transformers import BertForTokenClassification, DataCollatorForTokenClassification

    from tests.testing_utils import tiny_bert_config, tiny_tokenizer

    collator = DataCollatorForTokenClassification(tiny_tokenizer(tmp_path / "tok"))
    logs = {}
    for accumulation, batch in ((1, 8), (4, 2)):
        torch.manual_seed(0)
        teacher = BertForTokenClassification(tiny_bert_config(num_hidden_layers=4, hidden_size=48))
        torch.manual_seed(1)
        student = BertForTokenClassification(tiny_bert_config())
        trainer = DistillationTrainer(
            model=student,
            teacher_model=teacher,
            args=make_args(
                tmp_path / str(accumulation),
                max_steps=3,
                per_device_train_batch_size=batch,
                gradient_accumulation_steps=accumulation,
                hidden_loss_weight=0.5,
                alpha=0.6,
            ),  # fmt: skip
            train_dataset=_varied_token_dataset(),
            data_collator=collator,
        )
        trainer.train()
        logs[accumulation] = [h for h in trainer.state.log_history if "loss" in h]
        for h in logs[accumulation]:  # the terms recombine to Trainer's logged loss
            total = 0.6 * h["kd_loss"] + 0.4 * h["ce_loss"] + 0.5 * h["hidden_loss"]
            assert total == pytest.approx(h["loss"], rel=1e-4)
    for one, four in zip(logs[1], logs[4]):
        for key in ("loss", "kd_loss", "ce_loss", "hidden_loss"):
            assert one[key] == pytest.approx(four[key], rel=1e-4), key


def test_evaluate_returns_each_term_per_item_and_their_total(tmp_path):
    trainer = make_trainer(tmp_path, student=tiny_bert(seed=2), hidden_loss_weight=0.5, alpha=0.7, max_steps=1)
    metrics = trainer.evaluate(tiny_dataset(12))
    for key in ("eval_kd_loss", "eval_ce_loss", "eval_hidden_loss"):
        assert key in metrics and metrics[key] > 0
    total = 0.7 * metrics["eval_kd_loss"] + 0.3 * metrics["eval_ce_loss"] + 0.5 * metrics["eval_hidden_loss"]
    assert metrics["eval_loss"] == pytest.approx(total, rel=1e-6)
    # Per item: evaluating in batches of 5 or of 12 gives the same terms.
    trainer.args.per_device_eval_batch_size = 5
    again = trainer.evaluate(tiny_dataset(12))
    assert again["eval_kd_loss"] == pytest.approx(metrics["eval_kd_loss"], rel=1e-5)


# Each Trainer option our trainers replace or cannot honour: (trainer, option, "honoured" | "refused").
TRAINER_OPTIONS = [
    *[(t, "model_init", "refused") for t in ("distillation", "pruning", "compression")],
    *[(t, "compute_loss_func", "refused") for t in ("distillation", "compression")],
    ("pruning", "compute_loss_func", "honoured"),
    *[(t, "label_smoothing_factor", "refused") for t in ("distillation", "compression")],
    ("pruning", "label_smoothing_factor", "honoured"),
    *[(t, "label_names", "refused") for t in ("distillation", "compression")],
    ("distillation_projection", "optimizers", "refused"),
    *[(t, "optimizers", "honoured") for t in ("distillation", "pruning")],
    *[(t, "optimizer_cls_and_kwargs", "honoured") for t in ("distillation_projection", "pruning", "compression")],
    *[(t, "preprocess_logits_for_metrics", "honoured") for t in ("distillation", "pruning", "compression")],
    *[(t, "include_for_metrics", "honoured") for t in ("distillation", "pruning", "compression")],
]


def _options_trainer(tmp_path, kind, options, **fields):
    from hf_compress import CompressionTrainer, CompressionTrainingArguments, PruningTrainer, PruningTrainingArguments

    teacher = tiny_bert(seed=1, num_hidden_layers=4)
    common = dict(train_dataset=tiny_dataset(16), eval_dataset=tiny_dataset(8, seed=1), **options)
    fields = {"max_steps": 2, "pruning_start": 0, "pruning_end": 2, "pruning_frequency": 1, **fields}
    if kind == "pruning":
        args = training_args(PruningTrainingArguments, tmp_path / "out", target_sparsity=0.5, **fields)
        return PruningTrainer(model=tiny_bert(seed=0), args=args, **common)
    if kind == "compression":
        args = training_args(CompressionTrainingArguments, tmp_path / "out", target_sparsity=0.5, **fields)
        return CompressionTrainer(model=create_student(teacher, num_hidden_layers=2), teacher_model=teacher,
                                  args=args, **common)  # fmt: skip
    fields = {k: v for k, v in fields.items() if not k.startswith("pruning_")}
    student = create_student(teacher, num_hidden_layers=2)
    if kind == "distillation_projection":
        student = tiny_bert(seed=2, num_hidden_layers=2, hidden_size=16, num_attention_heads=2, intermediate_size=32)
        fields["hidden_loss_weight"] = 1.0
    return DistillationTrainer(model=student, teacher_model=teacher, args=make_args(tmp_path, **fields), **common)


@pytest.mark.parametrize("kind,option,outcome", TRAINER_OPTIONS)
def test_trainer_options_are_honoured_or_refused_by_name(tmp_path, kind, option, outcome):
    calls = []
    if option == "model_init":
        options, fields = {"model_init": lambda: tiny_bert(seed=3)}, {}
    elif option == "compute_loss_func":

        def loss_func(outputs, labels, num_items_in_batch=None):
            calls.append(1)
            return F.cross_entropy(outputs.logits, labels, reduction="sum") / num_items_in_batch

        options, fields = {"compute_loss_func": loss_func}, {}
    elif option == "label_smoothing_factor":
        options, fields = {}, {"label_smoothing_factor": 0.3}
    elif option == "label_names":
        options, fields = {}, {"label_names": ["my_labels"]}
    elif option == "optimizers":
        options, fields = {"optimizers": (None, None)}, {}  # the optimizer is built below, over the model
    elif option == "optimizer_cls_and_kwargs":
        options, fields = {"optimizer_cls_and_kwargs": (torch.optim.SGD, {"lr": 0.125})}, {}
    elif option == "preprocess_logits_for_metrics":

        def preprocess(logits, labels):
            calls.append(1)
            return logits.argmax(-1)

        def metrics(pred):
            return {"right": float((pred.predictions == pred.label_ids).mean()), "ndim": pred.predictions.ndim}

        options, fields = {"preprocess_logits_for_metrics": preprocess, "compute_metrics": metrics}, {}
    else:

        def metrics(pred):
            return {"inputs": int(pred.inputs is not None), "losses": int(pred.losses is not None)}

        options, fields = {"compute_metrics": metrics}, {"include_for_metrics": ["inputs", "loss"]}

    if option == "optimizers":
        model_probe = _options_trainer(tmp_path, kind, {}, **fields).model  # same seeds: same parameter shapes
        optimizer = torch.optim.SGD(model_probe.parameters(), lr=0.5)
        options = {"optimizers": (optimizer, None)}
    if outcome == "refused":
        with pytest.raises(ValueError, match=rf"^{option}=.* is invalid; allowed: "):
            _options_trainer(tmp_path, kind, options, **fields)
        return

    trainer = _options_trainer(tmp_path, kind, options, **fields)
    if option == "compute_loss_func":
        trainer.train()
        assert calls  # used for every training step
    elif option == "label_smoothing_factor":
        plain = _options_trainer(tmp_path, kind, {}).evaluate()["eval_loss"]
        assert trainer.evaluate()["eval_loss"] != pytest.approx(plain, rel=1e-4)
    elif option == "optimizers":
        assert trainer.optimizer is optimizer
    elif option == "optimizer_cls_and_kwargs":
        trainer.create_optimizer()
        assert isinstance(trainer.optimizer, torch.optim.SGD)
        assert trainer.optimizer.param_groups[0]["lr"] == 0.125
        trained = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
        assert {id(p) for p in trainer.model.parameters() if p.requires_grad} <= trained  # the projection too
    elif option == "preprocess_logits_for_metrics":
        metrics = trainer.evaluate()
        assert calls and metrics["eval_ndim"] == 1
    else:
        metrics = trainer.evaluate()
        assert metrics["eval_inputs"] == 1 and metrics["eval_losses"] == 1
