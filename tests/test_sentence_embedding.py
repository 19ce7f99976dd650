"""hf_compress.tasks.sentence_embedding and embedding distillation: pooling as sentence-transformers computes it, the
loss terms against an independent computation, padding invariance, and a distilled student that loads with
`SentenceTransformer(path)` and with `AutoModel` in a fresh process, giving the embeddings it gave in training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import Dataset
from transformers import AutoModel, AutoModelForSequenceClassification, DataCollatorWithPadding

from hf_compress import DistillationTrainer, DistillationTrainingArguments, create_student
from hf_compress.methods.distillation.losses import embedding_terms
from hf_compress.tasks.sentence_embedding import (
    Pooling,
    read_pooling,
    sentence_embeddings,
    write_sentence_transformers_files,
)
from tests.family_models import CORPUS, family_config, family_tokenizer
from tests.testing_utils import run_python, training_args

POOLINGS = [Pooling("mean"), Pooling("mean", True), Pooling("cls"), Pooling("max", True)]


def base_model(family: str, tokenizer, num_layers: int = 4, seed: int = 1):
    torch.manual_seed(seed)
    model = AutoModel.from_config(family_config(family, tokenizer, num_layers)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model


ST_SCRIPT = """
import json, sys
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer
import torch
results = []
for path in paths:
    st = SentenceTransformer(path, device="cpu")
    model = AutoModel.from_pretrained(path)
    tokens = AutoTokenizer.from_pretrained(path)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**tokens).last_hidden_state
    results.append({"st": st.encode(texts).tolist(), "modules": [type(m).__name__ for m in st],
                    "hidden": hidden[:, 0].tolist()})
assert not any(name.startswith("hf_compress") for name in sys.modules), "hf_compress was imported"
print(json.dumps(results))
"""


def fresh_load(paths: list, texts: list[str]) -> list[dict]:
    """SentenceTransformer(path).encode and AutoModel.from_pretrained(path) of each path, in one process that never
    imports hf_compress."""
    code = f"paths, texts = {[str(p) for p in paths]!r}, {texts!r}\n" + ST_SCRIPT
    run = run_python(code, cwd=str(paths[0]))
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_pooling_is_what_sentence_transformers_computes_from_the_files_we_write(tmp_path):
    tokenizer = family_tokenizer("bert", tmp_path / "tokenizer")
    model = base_model("bert", tokenizer)
    texts, folders = CORPUS[:5], []
    for i, pooling in enumerate(POOLINGS):
        folders.append(tmp_path / f"model-{i}")
        model.save_pretrained(folders[-1])
        tokenizer.save_pretrained(folders[-1])
        write_sentence_transformers_files(str(folders[-1]), pooling, 32, 62)
        assert read_pooling(str(folders[-1])) == pooling
    for pooling, loaded in zip(POOLINGS, fresh_load(folders, texts)):
        assert loaded["modules"][:2] == ["Transformer", "Pooling"], pooling
        assert ("Normalize" in loaded["modules"]) == pooling.normalize, pooling
        ours = sentence_embeddings(model, tokenizer, texts, pooling)
        assert np.allclose(np.array(loaded["st"]), ours, atol=1e-5), pooling


def test_a_pooling_we_do_not_compute_is_refused(tmp_path):
    write_sentence_transformers_files(str(tmp_path), Pooling("mean"), 32, 62)
    config_path = tmp_path / "1_Pooling" / "config.json"
    config = json.loads(config_path.read_text())
    config.update(pooling_mode_mean_tokens=False, pooling_mode_weightedmean_tokens=True)
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"1_Pooling/config.json=.* is invalid; allowed: exactly one of"):
        read_pooling(str(tmp_path))
    with pytest.raises(ValueError, match=r"embedding_pooling='lasttoken' is invalid; allowed: mean, cls, max"):
        Pooling("lasttoken")


def test_embedding_terms_equal_an_independent_computation():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))
    terms = embedding_terms(torch.tensor(s), torch.tensor(t), ("embedding_mse", "embedding_cosine", "similarity_loss"))
    cos = lambda a, b: a @ b / np.linalg.norm(a) / np.linalg.norm(b)  # noqa: E731
    assert float(terms["embedding_mse"]) == pytest.approx(sum(np.mean((s[i] - t[i]) ** 2) for i in range(5)))
    assert float(terms["embedding_cosine"]) == pytest.approx(sum(1 - cos(s[i], t[i]) for i in range(5)))
    similarity = sum(np.mean([(cos(s[i], s[j]) - cos(t[i], t[j])) ** 2 for j in range(5)]) for i in range(5))
    assert float(terms["similarity_loss"]) == pytest.approx(similarity, rel=1e-5)
    assert float(embedding_terms(torch.tensor(t), torch.tensor(t), ("similarity_loss",))["similarity_loss"]) < 1e-12


def unlabelled(tokenizer, texts: list[str]) -> Dataset:
    return Dataset.from_dict(dict(tokenizer(texts, truncation=True, max_length=24)))


def make_trainer(tmp_path, family="bert", **fields) -> DistillationTrainer:
    tokenizer = family_tokenizer(family, tmp_path / "tokenizer")
    teacher = base_model(family, tokenizer)
    teacher.save_pretrained(tmp_path / "teacher")  # a sentence-transformers teacher: its pooling is read from here
    tokenizer.save_pretrained(tmp_path / "teacher")
    write_sentence_transformers_files(str(tmp_path / "teacher"), Pooling("mean", True), 32, 62)
    teacher = AutoModel.from_pretrained(tmp_path / "teacher")
    student = create_student(teacher, num_hidden_layers=2)
    args = training_args(DistillationTrainingArguments, tmp_path / "run", **{"max_steps": 12, "learning_rate": 3e-3,
                                                                           **fields})  # fmt: skip
    return DistillationTrainer(
        model=student, teacher_model=teacher, args=args, train_dataset=unlabelled(tokenizer, CORPUS),
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
    )  # fmt: skip


def test_the_loss_does_not_depend_on_padding(tmp_path):
    trainer = make_trainer(tmp_path, embedding_cosine_weight=1.0, similarity_loss_weight=1.0)
    tokenizer = trainer.processing_class
    short = tokenizer(CORPUS[:4], padding=True, return_tensors="pt")
    long = tokenizer(CORPUS[:4], padding="max_length", max_length=40, return_tensors="pt")
    model = trainer.model.eval()
    assert short["input_ids"].shape[1] < 40
    with torch.no_grad():
        assert float(trainer.compute_loss(model, dict(short))) == pytest.approx(
            float(trainer.compute_loss(model, dict(long))), rel=1e-5
        )


@pytest.mark.parametrize("family", ["bert", "mpnet"])
def test_a_distilled_student_loads_with_sentence_transformers_and_automodel(tmp_path, family):
    trainer = make_trainer(tmp_path, family, embedding_cosine_weight=1.0, cache_teacher_logits=True,
                           num_train_epochs=3, max_steps=-1)  # fmt: skip
    assert trainer.pooling == Pooling("mean", True)  # read from the teacher's 1_Pooling and 2_Normalize
    texts = CORPUS[20:26]  # not trained on
    tokenizer = trainer.processing_class

    def cosine_to_teacher(model) -> float:
        s, t = (
            sentence_embeddings(model, tokenizer, texts, trainer.pooling),
            sentence_embeddings(trainer.teacher, tokenizer, texts, trainer.pooling),
        )
        return float((s * t).sum(1).mean())

    before = cosine_to_teacher(trainer.model)
    trainer.train()
    logged = [h for h in trainer.state.log_history if "embedding_mse" in h]
    assert logged and all(h["embedding_cosine"] > 0 for h in logged)
    assert logged[-1]["teacher_cache_hit_rate"] == 1.0  # the teacher's embeddings cached from the second epoch on
    assert cosine_to_teacher(trainer.model) > before
    trainer.save_model(str(tmp_path / "student"))
    tokenizer.save_pretrained(tmp_path / "student")
    record = json.loads((tmp_path / "student" / "config.json").read_text())["compression"]["distillation"]
    assert record["embedding_pooling"] == {"mode": "mean", "normalize": True}
    (loaded,) = fresh_load([tmp_path / "student"], texts)
    assert loaded["modules"] == ["Transformer", "Pooling", "Normalize"]
    ours = sentence_embeddings(trainer.model, tokenizer, texts, trainer.pooling)
    assert np.allclose(np.array(loaded["st"]), ours, atol=1e-5)
    with torch.no_grad():
        encoded = tokenizer(texts, padding=True, return_tensors="pt")
        encoded = {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = trainer.model(**encoded).last_hidden_state[:, 0]
    assert np.allclose(np.array(loaded["hidden"]), hidden.numpy(), atol=1e-5)  # AutoModel: the same model


def test_embedding_fields_are_refused_where_they_would_be_ignored(tmp_path):
    tokenizer = family_tokenizer("bert", tmp_path / "tokenizer")
    config = family_config("bert", tokenizer, 2)
    classifier = AutoModelForSequenceClassification.from_config(config)
    args = training_args(DistillationTrainingArguments, tmp_path / "run", embedding_cosine_weight=1.0)
    with pytest.raises(ValueError, match=r"embedding_cosine_weight=1.0 is invalid; allowed: 0.0 for Bert"):
        DistillationTrainer(model=classifier, teacher_model=classifier, args=args, train_dataset=None)
    teacher, narrow = base_model("bert", tokenizer), AutoModel.from_config(family_config("bert", tokenizer, 2,
                                                                                        hidden_size=16))  # fmt: skip
    with pytest.raises(ValueError, match=r"hidden_size: teacher 32 vs student 16"):
        DistillationTrainer(model=narrow, teacher_model=teacher, args=training_args(
            DistillationTrainingArguments, tmp_path / "run"), train_dataset=None)  # fmt: skip
    with pytest.raises(ValueError, match=r"embedding_mse_weight=0.0 is invalid; allowed: > 0 for one of"):
        DistillationTrainer(model=create_student(teacher, num_hidden_layers=1), teacher_model=teacher,
                            args=training_args(DistillationTrainingArguments, tmp_path / "run",
                                               embedding_mse_weight=0.0), train_dataset=None)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------------
# `task: sentence-embedding` through a recipe and the command line.


def embedding_recipe(tmp_path, command_fields: dict | None = None) -> str:
    from tests.testing_utils import tiny_bert, tiny_text_csv, tiny_tokenizer

    teacher_dir = tmp_path / "teacher"
    AutoModel.from_config(tiny_bert(seed=1, num_hidden_layers=4).config).save_pretrained(teacher_dir)
    tiny_tokenizer(teacher_dir).save_pretrained(teacher_dir)
    write_sentence_transformers_files(str(teacher_dir), Pooling("mean", True), 32, 64)
    fields = {
        "task": "sentence-embedding", "teacher_model_name_or_path": str(teacher_dir),
        "dataset_name": tiny_text_csv(tmp_path / "data.csv", n=120), "eval_split": "train",
        "student_num_hidden_layers": 2,
        "embedding_cosine_weight": 1.0, "cache_teacher_logits": True, "num_train_epochs": 2,
        "per_device_train_batch_size": 16, "learning_rate": 1e-3, "report_to": "none", "use_cpu": True,
        "disable_tqdm": True, "save_strategy": "no", "report_latency_repeats": 2, "output_dir": str(tmp_path / "out"),
        **(command_fields or {}),
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in fields.items()) + "\n")
    return str(path)


def test_an_embedding_recipe_distils_saves_for_sentence_transformers_and_reports(tmp_path, capsys):
    from hf_compress.cli import main

    assert main(["distill", embedding_recipe(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| teacher |" in out and "| student |" in out and "probe_accuracy" in out
    report = json.loads((tmp_path / "out" / "compression_report.json").read_text())
    teacher, student = report
    assert teacher["metrics"]["mean_cosine"] == pytest.approx(1.0) and teacher["metrics"]["top10_overlap"] == 1.0
    assert 0 < student["metrics"]["mean_cosine"] < 1 and 0 <= student["metrics"]["top10_overlap"] <= 1
    assert 0 <= student["metrics"]["probe_accuracy"] <= 1 and student["agreement_with_reference"] == pytest.approx(
        student["metrics"]["mean_cosine"]
    )
    card = (tmp_path / "out" / "README.md").read_text()
    assert "pipeline_tag: sentence-similarity" in card
    (loaded,) = fresh_load([tmp_path / "out"], CORPUS[:3])
    assert loaded["modules"] == ["Transformer", "Pooling", "Normalize"]


@pytest.mark.parametrize("command,fields,says", [
    ("prune", {}, "task='sentence-embedding' is invalid"),
    ("distill", {"finetune_teacher": True}, "finetune_teacher=True is invalid"),
])  # fmt: skip
def test_an_embedding_recipe_that_would_train_a_head_is_refused_before_work(tmp_path, capsys, command, fields, says):
    from hf_compress.cli import main

    recipe = embedding_recipe(tmp_path, fields)
    if command == "prune":  # prune names its model model_name_or_path and takes no distillation fields
        text = (tmp_path / "recipe.yaml").read_text().replace("teacher_model_name_or_path", "model_name_or_path")
        text = "\n".join(line for line in text.splitlines() if not line.startswith(("embedding_", "cache_teacher")))
        (tmp_path / "recipe.yaml").write_text(text + "\n")
    assert main([command, recipe]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("how", ["python", "cli"])
def test_int8_quantization_keeps_the_sentence_transformers_files(tmp_path, how):
    """`quantize_pretrained` / `hf-compress quantize` of a sentence-transformers folder: the int8 folder pools and
    normalises as the source did when `SentenceTransformer(path)` loads it (with hf_compress imported, as int8 needs),
    where without the module files it would fall back to plain mean pooling."""
    from sentence_transformers import SentenceTransformer

    from hf_compress import quantize_pretrained
    from hf_compress.cli.main import main
    from hf_compress.loading import load_saved_model

    tokenizer = family_tokenizer("bert", tmp_path / "source")
    source = tmp_path / "source"
    base_model("bert", tokenizer).save_pretrained(source)
    write_sentence_transformers_files(str(source), Pooling("cls", True), 32, 62)
    out = tmp_path / "int8"
    if how == "python":
        quantize_pretrained(str(source), str(out))
    else:
        assert main(["quantize", str(source), str(out)]) == 0
    assert read_pooling(str(out)) == Pooling("cls", True)
    st = SentenceTransformer(str(out), device="cpu")
    assert [type(m).__name__ for m in st] == ["Transformer", "Pooling", "Normalize"]
    texts = CORPUS[:5]
    model = load_saved_model(str(out))
    assert type(model.encoder.layer[0].intermediate.dense).__name__ == "Int8Linear"
    want = sentence_embeddings(model, tokenizer, texts, Pooling("cls", True))
    np.testing.assert_allclose(st.encode(texts), want, atol=1e-5)


def test_the_report_scores_an_exported_embedding_model_in_its_runtime(tmp_path, capsys):
    """`hf-compress report` of a sentence-transformers model and of its ONNX export (pooling inside the graph): the
    file's row scores what the PyTorch model scores (same probe accuracy, cosine 1 to it)."""
    from hf_compress.cli import main
    from hf_compress.export import export
    from tests.testing_utils import tiny_bert, tiny_text_csv, tiny_tokenizer

    model_dir = tmp_path / "embedder"
    AutoModel.from_config(tiny_bert(seed=1, num_hidden_layers=2).config).save_pretrained(model_dir)
    tiny_tokenizer(model_dir).save_pretrained(model_dir)
    write_sentence_transformers_files(str(model_dir), Pooling("max", True), 32, 64)
    record = export(str(model_dir), str(tmp_path / "onnx"), format="onnx")
    assert record["outputs"] == ["sentence_embedding"]
    data = tiny_text_csv(tmp_path / "data.csv", n=60)
    argv = ["report", str(model_dir), str(tmp_path / "onnx"), "--dataset", data, "--task", "sentence-embedding",
            "--split", "train", "--repeats", "1", "--output", str(tmp_path / "report")]  # fmt: skip
    assert main(argv) == 0
    assert "probe_accuracy" in capsys.readouterr().out
    model, exported = json.loads((tmp_path / "report" / "compression_report.json").read_text())
    assert exported["metrics"]["probe_accuracy"] == model["metrics"]["probe_accuracy"]
    assert exported["metrics"]["mean_cosine"] == pytest.approx(1.0, abs=1e-5)
    assert exported["metrics"]["top10_overlap"] == 1.0


def test_an_int8_embedding_model_exports_as_compressed_tensors_for_sentence_transformers(tmp_path):
    """`export --format compressed-tensors` of an int8 sentence-transformers model: a fresh process that never imports
    hf_compress loads it with `SentenceTransformer(path)`, pooling as the source did, and embeds as the hf_compress
    int8 model does (the export's own check ran the same way on its sample). Without `dequantize` in the written
    config, sentence-transformers' direct `forward` call skips compressed-tensors' decompression hook and fails."""
    from hf_compress import quantize_pretrained
    from hf_compress.export import export
    from hf_compress.loading import load_saved_model

    tokenizer = family_tokenizer("bert", tmp_path / "source")
    source, int8 = tmp_path / "source", tmp_path / "int8"
    base_model("bert", tokenizer).save_pretrained(source)
    write_sentence_transformers_files(str(source), Pooling("mean", True), 32, 62)
    quantize_pretrained(str(source), str(int8))
    record = export(str(int8), str(tmp_path / "ct"), format="compressed-tensors")
    assert record["outputs"] == ["sentence_embedding"] and "without hf_compress" in record["check"]["runtime"]
    assert record["check"]["sqnr_db"] is None or record["check"]["sqnr_db"] >= 15
    texts = CORPUS[:6]
    (loaded,) = fresh_load([tmp_path / "ct"], texts)
    assert loaded["modules"] == ["Transformer", "Pooling", "Normalize"]
    ours = sentence_embeddings(load_saved_model(str(int8)), tokenizer, texts, Pooling("mean", True))
    stock = np.array(loaded["st"])
    assert stock.shape == ours.shape
    assert (stock * ours).sum(1).min() > 0.99  # unit vectors: cosine
    assert "SentenceTransformer" in (tmp_path / "ct" / "README.md").read_text()
