"""`hf-compress report`: its numbers against independent computations, the plot, and one-line errors."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertModel

from hf_compress import create_student
from hf_compress.cli.report import main
from hf_compress.evaluation.table import pareto_front
from tests.test_model_card import fit_head
from tests.testing_utils import tiny_bert_config, tiny_checkpoint, tiny_text_csv

N = 30  # --max-samples


def hand_count(config) -> int:
    """Parameters of BertForSequenceClassification from its config, by the shapes of its layers."""
    V, P, T, H, I, L = (  # noqa: E741
        config.vocab_size,
        config.max_position_embeddings,
        config.type_vocab_size,
        config.hidden_size,
        config.intermediate_size,
        config.num_hidden_layers,
    )
    embeddings = (V + P + T) * H + 2 * H  # three tables and a LayerNorm
    layer = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H  # q k v o, LayerNorm, FFN in/out, LayerNorm
    pooler, classifier = H * H + H, H * config.num_labels + config.num_labels
    return embeddings + L * layer + pooler + classifier


def zeros_in_encoder_linears(model_dir: str) -> float:
    """Sparsity straight from the saved tensors: the 2-D weights under `encoder.` are the encoder's Linear layers."""
    tensors = [t for k, t in load_file(os.path.join(model_dir, "model.safetensors")).items() if ".encoder." in k]
    matrices = [t for t in tensors if t.ndim == 2]
    return sum(int((t == 0).sum()) for t in matrices) / sum(t.numel() for t in matrices)


@torch.no_grad()
def predictions_one_by_one(model_dir: str, tokenizer, texts: list[str]) -> np.ndarray:
    """Predicted classes from unpadded single-example forward passes (the report batches and pads)."""
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    out = [model(**tokenizer(t, truncation=True, max_length=64, return_tensors="pt")).logits.argmax(-1) for t in texts]
    return torch.cat(out).numpy()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A 4-layer teacher (with tokenizer) and a 2-layer student with a third of its FFN rows zeroed (no tokenizer)."""
    tmp = tmp_path_factory.mktemp("report")
    data = tiny_text_csv(tmp / "data.csv", n=48)
    with open(data) as f:
        rows = list(csv.DictReader(f))
    texts, labels = [r["text"] for r in rows], [int(r["label"]) for r in rows]
    teacher_dir = tiny_checkpoint(tmp / "teacher", num_hidden_layers=4)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = fit_head(
        AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval(), tokenizer, texts, labels
    )
    teacher.save_pretrained(teacher_dir)
    student = create_student(teacher, num_hidden_layers=2)
    with torch.no_grad():
        for layer in student.bert.encoder.layer:
            layer.intermediate.dense.weight[::3] = 0  # rows 0, 3, ..., 63: 22 of 64
    student = fit_head(student.eval(), tokenizer, texts[:32], labels[:32])
    student_dir = str(tmp / "student")
    student.save_pretrained(student_dir)
    return tmp, teacher_dir, student_dir, data, texts, labels, tokenizer


def test_report_numbers_match_independent_computations(models, capsys):
    tmp, teacher_dir, student_dir, data, texts, labels, tokenizer = models
    out = tmp / "out"
    argv = [student_dir, "--teacher", teacher_dir, "--dataset", data, "--split", "train", "--max-samples", str(N)]
    assert main([*argv, "--output", str(out), "--repeats", "2", "--batch-sizes", "1", "4", "--plot"]) == 0
    printed = capsys.readouterr().out
    teacher, student = json.loads((out / "compression_report.json").read_text())
    assert [teacher["name"], student["name"]] == ["teacher", "student"]  # teacher first: the reference

    for row, model_dir, layers in ((teacher, teacher_dir, 4), (student, student_dir, 2)):
        assert row["parameters"] == hand_count(tiny_bert_config(num_hidden_layers=layers))
        assert row["bytes_on_disk"] == os.path.getsize(os.path.join(model_dir, "model.safetensors"))
        assert row["sparsity"] == pytest.approx(zeros_in_encoder_linears(model_dir), abs=1e-12)
    # Zeroed rows: 22 of 64 in each 64x32 FFN-in matrix; per layer 4 attention (32x32) + FFN in + FFN out (64x32 each).
    assert student["sparsity"] == pytest.approx(22 * 32 / (4 * 32 * 32 + 2 * 64 * 32)) and teacher["sparsity"] == 0

    truth = np.array(labels[:N])
    teacher_pred = predictions_one_by_one(teacher_dir, tokenizer, texts[:N])
    student_pred = predictions_one_by_one(student_dir, tokenizer, texts[:N])
    assert teacher["accuracy"] == pytest.approx((teacher_pred == truth).mean())
    assert student["accuracy"] == pytest.approx((student_pred == truth).mean())
    assert student["agreement_with_reference"] == pytest.approx((student_pred == teacher_pred).mean())
    assert student["accuracy_vs_reference"] == pytest.approx(student["accuracy"] / teacher["accuracy"])
    assert 1 / 3 < teacher["accuracy"] < 1 and student["agreement_with_reference"] < 1  # informative, not constant
    for row in (teacher, student):
        assert set(row["latency_ms"]) == {"batch_1", "batch_4"} and all(v > 0 for v in row["latency_ms"].values())
    assert student["speedup"]["batch_1"] == pytest.approx(
        teacher["latency_ms"]["batch_1"] / student["latency_ms"]["batch_1"]
    )

    table = (out / "compression_report.md").read_text()
    assert table.strip() in printed and f"| student | {student['accuracy']:.4f} |" in table
    assert f"{N} examples of the 'train' split" in printed

    png = (out / "compression_report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    image = imread(out / "compression_report.png")
    assert image.shape[0] > 200 and image.shape[1] > 2 * image.shape[0]  # two panels side by side
    assert image[..., :3].std() > 0.05  # something is drawn, not a blank canvas


@pytest.mark.parametrize("format", ["onnx", "openvino"])
def test_exported_rows_are_measured_in_their_runtime(models, tmp_path, format):
    """A folder of `hf-compress export` is a row run by its runtime: its accuracy is what that runtime's file
    predicts (checked by running the file here, one example at a time), its bytes are the file's, and its parameter
    count and sparsity are the PyTorch model's, recorded at export."""
    from hf_compress.evaluation.exported import ExportedModel
    from hf_compress.export import export

    tmp, teacher_dir, student_dir, data, texts, labels, tokenizer = models
    source = tmp_path / "student"
    AutoModelForSequenceClassification.from_pretrained(student_dir).save_pretrained(source)
    tokenizer.save_pretrained(source)  # export ships the tokenizer beside the file
    exported = tmp_path / f"student-{format}"
    record = export(str(source), str(exported), format=format)
    out = tmp_path / "out"
    argv = [str(source), str(exported), "--teacher", teacher_dir, "--dataset", data, "--split", "train"]
    argv += ["--max-samples", str(N), "--output", str(out), "--repeats", "2", "--batch-sizes", "1", "4"]
    assert main(argv) == 0
    teacher, student, runtime = json.loads((out / "compression_report.json").read_text())
    assert runtime["name"] == f"student-{format}"

    served = ExportedModel(str(exported))
    only_ids = tokenizer(texts[0], return_tensors="pt")["input_ids"]
    with pytest.raises(ValueError, match=r"^inputs=\['input_ids'\] is invalid; allowed: the exported inputs \["):
        served(input_ids=only_ids)  # the file needs its attention mask (and token types): named, not a runtime error
    with torch.no_grad():
        pred = np.array(
            [
                served(**tokenizer(t, truncation=True, max_length=64, return_tensors="pt")).logits.argmax(-1).item()
                for t in texts[:N]
            ]
        )
    truth, student_pred = np.array(labels[:N]), predictions_one_by_one(str(source), tokenizer, texts[:N])
    assert runtime["accuracy"] == pytest.approx((pred == truth).mean())
    assert runtime["agreement_with_reference"] == pytest.approx(
        (pred == predictions_one_by_one(teacher_dir, tokenizer, texts[:N])).mean()
    )
    assert (pred == student_pred).mean() >= 0.95  # a float export computes what PyTorch computes (ties aside)
    files = [f for f in os.listdir(exported) if f.endswith((".onnx", ".xml", ".bin", ".data"))]
    assert runtime["bytes_on_disk"] == sum(os.path.getsize(exported / f) for f in files) != student["bytes_on_disk"]
    assert runtime["parameters"] == student["parameters"] == record["parameters"]
    assert runtime["sparsity"] == pytest.approx(student["sparsity"]) and runtime["sparsity"] > 0.05
    assert set(runtime["latency_ms"]) == {"batch_1", "batch_4"} and all(v > 0 for v in runtime["latency_ms"].values())


def test_a_folder_not_written_by_export_is_refused_by_the_runtime_model(models):
    from hf_compress.evaluation.exported import ExportedModel

    _, _, student_dir, *_ = models  # a PyTorch checkpoint: its config.json has no 'export' record
    message = r"is invalid; allowed: a folder written by hf-compress export \(config.json with 'export'\)"
    with pytest.raises(ValueError, match=rf"^model_dir='.*/student[^/]*' {message}"):
        ExportedModel(student_dir)


def test_report_without_data_measures_size_and_latency_only(models, tmp_path, capsys):
    _, teacher_dir, student_dir, *_ = models
    assert main([teacher_dir, student_dir, "--output", str(tmp_path), "--repeats", "1", "--batch-sizes", "1"]) == 0
    rows = json.loads((tmp_path / "compression_report.json").read_text())
    assert [r["accuracy"] for r in rows] == [None, None] and rows[1]["bytes_on_disk"] < rows[0]["bytes_on_disk"]
    assert not (tmp_path / "compression_report.png").exists()


def test_report_reads_a_vocabulary_pruned_model_with_its_own_tokenizer(models, tmp_path):
    """A model saved with its pruned tokenizer (prune_vocabulary_) is scored and timed on its own token ids; with the
    teacher's ids it would index rows it no longer has."""
    from hf_compress import prune_vocabulary_

    tmp, teacher_dir, student_dir, data, texts, labels, tokenizer = models
    model = AutoModelForSequenceClassification.from_pretrained(student_dir)
    pruned_tokenizer = prune_vocabulary_(model, tokenizer, tokenizer(texts[:20])["input_ids"])
    pruned_dir = str(tmp_path / "pruned")
    model.save_pretrained(pruned_dir)
    pruned_tokenizer.save_pretrained(pruned_dir)
    assert model.config.vocab_size < len(tokenizer)  # the teacher's ids would be out of range

    argv = [teacher_dir, pruned_dir, "--dataset", data, "--split", "train", "--max-samples", str(N)]
    assert main([*argv, "--output", str(tmp_path / "out"), "--repeats", "1", "--batch-sizes", "2"]) == 0
    teacher, pruned = json.loads((tmp_path / "out" / "compression_report.json").read_text())
    own_ids = predictions_one_by_one(pruned_dir, pruned_tokenizer, texts[:N])
    assert pruned["accuracy"] == pytest.approx((own_ids == np.array(labels[:N])).mean())
    assert pruned["latency_ms"]["batch_2"] > 0


class ThreadProbe(torch.nn.Module):
    """Records torch's CPU thread count at every forward pass; raises on the pass numbered `fail_at`."""

    def __init__(self, fail_at: int | None = None):
        super().__init__()
        self.seen: list[int] = []
        self.fail_at = fail_at

    def forward(self, input_ids, **kwargs):
        self.seen.append(torch.get_num_threads())
        if self.fail_at is not None and len(self.seen) > self.fail_at:
            raise RuntimeError("probe failure")
        return input_ids.float()


@pytest.mark.parametrize("num_threads", [1, None])
def test_latency_runs_at_the_asked_thread_count_and_restores_it(models, num_threads):
    from hf_compress.evaluation.measure import latency_ms

    tokenizer = AutoTokenizer.from_pretrained(models[1])
    before = torch.get_num_threads()
    if num_threads is None or before == 1:
        torch.set_num_threads(2)  # a setting the call must leave alone (or, with num_threads=1, change and restore)
    outside = torch.get_num_threads()
    probe = ThreadProbe()
    try:
        latency_ms({"probe": probe}, tokenizer, batch_size=2, repeats=3, num_threads=num_threads)
        assert probe.seen == [num_threads or outside] * 4  # the warm-up pass and three timed ones
        assert torch.get_num_threads() == outside
        with pytest.raises(RuntimeError, match="probe failure"):
            latency_ms({"probe": ThreadProbe(fail_at=1)}, tokenizer, batch_size=2, repeats=3, num_threads=num_threads)
        assert torch.get_num_threads() == outside  # restored on the error path too
    finally:
        torch.set_num_threads(before)


def test_recipe_report_threads_reach_the_timer(models, monkeypatch):
    """report_latency_threads is what the recipe report hands to the timer; a bad value fails at parse time."""
    import hf_compress.evaluation.table as table
    from hf_compress.cli.recipe import RecipeArguments

    assert RecipeArguments(dataset_name="tweets", report_latency_threads=1).report_latency_threads == 1
    with pytest.raises(ValueError, match=r"report_latency_threads=0 is invalid; allowed: "):
        RecipeArguments(dataset_name="tweets", report_latency_threads=0)
    seen = []

    def timer(*args, **kwargs):
        seen.append(kwargs["num_threads"])
        return {"t": 1.0}

    monkeypatch.setattr(table, "latency_ms", timer)
    _, teacher_dir, *_ = models
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir)
    rows = table.build_report({"t": (model, teacher_dir)}, AutoTokenizer.from_pretrained(teacher_dir), num_threads=1)
    assert seen == [1, 1] and rows[0].latency_ms == {"batch_1": 1.0, "batch_32": 1.0}


def one_line_error(capsys) -> str:
    """The error line; anything before it on stderr is progress bars (datasets), never a traceback."""
    err = capsys.readouterr().err
    assert err.endswith("\n") and "Traceback" not in err and err.count("hf-compress report: error: ") == 1
    last = err.splitlines()[-1]
    assert last.startswith("hf-compress report: error: ")
    return last


def test_bad_input_is_one_line_and_exit_code_2(models, tmp_path, capsys):
    tmp, teacher_dir, student_dir, *_ = models
    missing = str(tmp_path / "nowhere")
    assert main([student_dir, "--teacher", missing, "--output", str(tmp_path)]) == 2
    assert repr(missing) in one_line_error(capsys)

    no_text = tmp_path / "sentences.csv"
    no_text.write_text("sentence,label\nw1 w2,0\nw3,1\n")
    assert main([student_dir, "--teacher", teacher_dir, "--dataset", str(no_text), "--split", "train"]) == 2
    assert "text_column='text'" in one_line_error(capsys)

    sentences = ["--dataset", str(no_text), "--text-column", "sentence", "--output", str(tmp_path)]
    assert main([student_dir, "--teacher", teacher_dir, *sentences, "--split", "test"]) == 2
    assert "--split 'test' is not a split" in one_line_error(capsys)

    assert main([student_dir, *sentences, "--split", "train"]) == 2  # the student was saved without a tokenizer
    assert "no tokenizer in any of" in one_line_error(capsys)

    assert main([student_dir, "--plot", "--output", str(tmp_path)]) == 2
    assert "--plot" in one_line_error(capsys)

    BertModel(tiny_bert_config()).save_pretrained(tmp_path / "base")
    assert main([str(tmp_path / "base"), "--teacher", teacher_dir, *sentences, "--split", "train"]) == 2
    assert "BertModel" in one_line_error(capsys)
    assert not (tmp_path / "compression_report.json").exists()  # nothing half-written


def test_pareto_front_keeps_the_models_nothing_beats():
    # (size, accuracy): b is beaten by a (smaller and more accurate); d is the largest but the most accurate.
    points = [(1.0, 0.80), (2.0, 0.75), (0.5, 0.60), (4.0, 0.90), (1.0, 0.70)]
    assert pareto_front(points) == [2, 0, 3]


def _with_zeroed_rows(seed: int = 0):
    from tests.testing_utils import tiny_bert

    model = tiny_bert(seed=seed)
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            for m in layer.modules():
                if isinstance(m, torch.nn.Linear):
                    m.weight[::3] = 0  # a third of the rows of every encoder Linear
    return model


def _probed_zero_fraction(model) -> float:
    """Exact zeros of the weight each encoder Linear computes with, read through its forward: f(I) - f(0)."""
    zeros = total = 0
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            for m in layer.modules():
                if hasattr(m, "in_features") and not isinstance(m, torch.nn.Embedding):
                    eye = torch.eye(m.in_features)
                    weight_t = m(eye) - m(torch.zeros(1, m.in_features))
                    zeros += int((weight_t == 0).sum())
                    total += weight_t.numel()
    return zeros / total


@pytest.mark.parametrize("kind", ["fp32", "int8", "low-bit", "low-rank"])
def test_sparsity_means_the_same_for_every_artifact_kind(kind):
    from hf_compress import bake_low_bit_, factorize_linear_, fake_quantize_, quantize_
    from hf_compress.evaluation.measure import linear_sparsity

    model = _with_zeroed_rows()
    if kind == "int8":
        model = quantize_(model)
    elif kind == "low-bit":
        model = bake_low_bit_(fake_quantize_(model, 2, None, "encoder"))  # ternary: many more exact zeros
    elif kind == "low-rank":
        model = factorize_linear_(model, rank_ratio=0.5)
    model.eval()
    sparsity = linear_sparsity(model)
    assert sparsity == pytest.approx(_probed_zero_fraction(model), abs=1e-12)
    if kind != "low-rank":  # the pruned zeros survive quantization; a product of factors does not keep them
        assert sparsity >= 1 / 3 - 0.02
    if kind == "low-bit":
        assert sparsity > 0.4  # ternary codes add zeros of their own


def test_scores_from_too_few_examples_are_flagged_with_their_standard_error(models, capsys):
    from hf_compress.evaluation.table import MIN_EXAMPLES, ReportRow, score_stderr
    from hf_compress.hub import build_model_card

    tmp, teacher_dir, student_dir, data, texts, labels, tokenizer = models
    out = tmp / "few"
    argv = [student_dir, "--teacher", teacher_dir, "--dataset", data, "--split", "train", "--max-samples", "3"]
    assert main([*argv, "--output", str(out), "--repeats", "1", "--batch-sizes", "1"]) == 0
    printed = capsys.readouterr().out
    for row in json.loads((out / "compression_report.json").read_text()):
        assert row["examples"] == 3 and row["too_few_examples"] and row["accuracy_vs_reference"] is None
        assert row["score_stderr"] == pytest.approx(score_stderr(row["accuracy"], 3)) and row["score_stderr"] > 0.15
        flag = f"too few examples (n=3, below {MIN_EXAMPLES}): {row['accuracy']:.4f} ± {row['score_stderr']:.2f}"
        assert flag in printed and f"| {row['name']} | {row['accuracy']:.4f} |" not in printed
    assert score_stderr(1.0, 1) == pytest.approx((0.6 * 0.4 / 5) ** 0.5)  # 1 of 1 right is not certainty
    row = ReportRow(
        name="m",
        parameters=1,
        bytes_on_disk=1,
        accuracy=1.0,
        metric="accuracy",
        score=1.0,
        metrics={"accuracy": 1.0},
        examples=1,
        score_stderr=score_stderr(1.0, 1),
        too_few_examples=True,
    )
    card = build_model_card([row], AutoModelForSequenceClassification.from_pretrained(student_dir).config, dataset="d")
    assert card.data.eval_results is None and "too few examples (n=1" in str(card) and "not a result" in str(card)
    assert "| accuracy | 1.0000 |" not in str(card)


def test_latency_inputs_stop_at_the_models_position_limit(tmp_path):
    from transformers import BertForSequenceClassification

    from hf_compress.evaluation.measure import latency_ms, timing_length
    from hf_compress.evaluation.table import build_report, markdown_table

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint(tmp_path / "tok"))
    short = BertForSequenceClassification(tiny_bert_config(max_position_embeddings=32)).eval()
    assert timing_length({"short": short}, 48) == 32
    assert latency_ms({"short": short}, tokenizer, batch_size=2, repeats=1)["short"] > 0
    rows = build_report({"short": (short, None)}, tokenizer, batch_sizes=(2,), repeats=1)
    assert rows[0].latency_tokens == 32 and rows[0].latency_ms["batch_2"] > 0
    assert "Latency inputs: 32 tokens (the models' position limit; 48 otherwise)." in markdown_table(rows)
