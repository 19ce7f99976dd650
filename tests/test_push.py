"""Every artifact kind round-trips through a (local) Hub with its card; push errors are huggingface_hub's own."""

from __future__ import annotations

import copy
import json
import os
import shutil

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from hf_compress import PruningTrainer, PruningTrainingArguments, create_student, to_albert
from hf_compress.data import load_text_classification, tokenize
from hf_compress.evaluation.table import build_report, write_report
from hf_compress.hub import push_compressed, write_model_card
from tests.testing_utils import tiny_bert, tiny_checkpoint, tiny_dataset, tiny_text_csv

try:  # built in parallel: its round trip is tested once the package exists and quantizes
    from hf_compress.methods.int8.transform import quantize_
except ImportError:
    quantize_ = None

TEXTS = ["w1 w2 w3", "w10 w20 w30 w40 w50 w60", "w7 w994"]
PUSHED = {"config.json", "model.safetensors", "README.md", "recipe.yaml", "compression_report.json"}
PUSHED |= {"compression_report.md", "tokenizer.json", "tokenizer_config.json"}


@torch.no_grad()
def logits(model, tokenizer) -> np.ndarray:
    return model.eval()(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.numpy()


def encoder_sparsity(model) -> float:
    weights = [p for n, p in model.named_parameters() if ".encoder." in f".{n}" and p.ndim == 2]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def publish(model, out_dir: str, reference: tuple, tokenizer, data, repo_id: str) -> list:
    """What `hf-compress` does at the end of a run: save, report against the teacher, write the card, push."""
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    rows = build_report({"teacher": reference, "compressed": (model, out_dir)}, tokenizer, data, (1,), repeats=1)
    write_report(rows, out_dir)
    recipe = {"teacher_model_name_or_path": reference[1], "dataset_name": "data.csv", "eval_split": "train"}
    write_model_card(out_dir, rows, model.config, recipe, "hf-compress compress recipe.yaml", repo_id=repo_id)
    push_compressed(out_dir, repo_id)
    return rows


def assert_card_on_hub(repo_id: str, rows: list, tags: list[str]) -> ModelCard:
    card = ModelCard.load(repo_id)  # downloaded from the Hub
    me = rows[-1]
    assert set(["hf_compress", *tags]) <= set(card.data.tags), (repo_id, card.data.tags)
    for figure in (f"{me.parameters:,}", f"{me.bytes_on_disk:,}", f"{me.accuracy:.4f}", f"{me.sparsity:.2%}"):
        assert figure in card.text, (repo_id, figure)
    assert card.data.eval_results[0].metric_value == me.accuracy
    assert f'from_pretrained("{repo_id}")' in card.text and "hf-compress compress recipe.yaml" in card.text
    return card


def test_every_artifact_kind_round_trips_with_its_card(local_hub, tmp_path):
    teacher_dir = tiny_checkpoint(tmp_path / "teacher", num_hidden_layers=4)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    data = tokenize(load_text_classification(tiny_text_csv(tmp_path / "data.csv", n=32)), tokenizer)[
        "train"
    ]  # >= MIN_EXAMPLES: scored
    reference = (teacher, teacher_dir)
    api = HfApi()

    # Pruned: a few PruningTrainer steps, pushed first by Trainer.push_to_hub as usual (with Trainer's own card).
    args = PruningTrainingArguments(
        output_dir=str(tmp_path / "pruned"), max_steps=4, per_device_train_batch_size=8, learning_rate=1e-2,
        weight_decay=0.1, pruning_method="magnitude", target_sparsity=0.5, pruning_start=0, pruning_end=2,
        pruning_frequency=1, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
        push_to_hub=True, hub_model_id="user/pruned",
    )  # fmt: skip
    trainer = PruningTrainer(
        model=create_student(teacher, num_hidden_layers=2), args=args, train_dataset=tiny_dataset(n=32),
        processing_class=tokenizer,
    )  # fmt: skip
    trainer.train()
    trainer.push_to_hub()
    pruned = trainer.model.eval()
    assert encoder_sparsity(pruned) == pytest.approx(0.5, abs=0.01)
    assert "generated_from_trainer" in ModelCard.load("user/pruned").data.tags  # Trainer's card, replaced below

    artifacts = {
        "pruned": pruned,
        "distilled": create_student(teacher, num_hidden_layers=2).eval(),
        "albert": to_albert(copy.deepcopy(teacher), embedding_size=16, num_hidden_groups=1).eval(),
    }
    if quantize_ is not None:
        artifacts["int8"] = quantize_(create_student(teacher, num_hidden_layers=2).eval())
    tags = {"pruned": ["pruning"], "distilled": ["distillation"], "albert": ["albert"], "int8": ["int8"]}
    rows, expected = {}, {}
    for kind, model in artifacts.items():
        out = str(tmp_path / kind) if kind != "pruned" else args.output_dir
        if kind == "distilled":  # what must not be pushed from an output dir
            for junk in ("checkpoint-2/model.safetensors", "teacher/config.json", "training_args.bin"):
                os.makedirs(os.path.dirname(os.path.join(out, junk)) or out, exist_ok=True)
                shutil.copy(os.path.join(teacher_dir, "config.json"), os.path.join(out, junk))
        # The compressed card replaces Trainer's on the same repo; the others get new repos.
        rows[kind] = publish(model, out, reference, tokenizer, data, f"user/{kind}")
        model.push_to_hub(f"user/{kind}-model")  # the plain transformers way, to its own repo
        expected[kind] = logits(model, tokenizer)

    for kind in artifacts:
        files = set(api.list_repo_files(f"user/{kind}"))
        assert PUSHED <= files, (kind, PUSHED - files)
        assert not any(f.startswith(("checkpoint-", "teacher/")) or f.endswith(".bin") for f in files), files
        assert_card_on_hub(f"user/{kind}", rows[kind], tags[kind])
    assert {"pruning_report.json", "training_args.json"} <= set(api.list_repo_files("user/pruned"))
    # model.push_to_hub onto a repo that has our card keeps it (transformers loads the Hub's README and re-tags it).
    artifacts["distilled"].push_to_hub("user/distilled")
    assert_card_on_hub("user/distilled", rows["distilled"], ["distillation"])

    stock = [r for kind in artifacts if kind != "int8" for r in (f"user/{kind}", f"user/{kind}-model")]
    int8 = ["user/int8", "user/int8-model"] if "int8" in artifacts else []
    out = local_hub.run_python(
        f"""
        import json, sys, torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        def load(repo):
            model = AutoModelForSequenceClassification.from_pretrained(repo).eval()
            tokenizer = AutoTokenizer.from_pretrained("user/distilled" if repo.endswith("-model") else repo)
            with torch.no_grad():
                logits = model(**tokenizer({TEXTS!r}, padding=True, return_tensors="pt")).logits
            weights = [p for n, p in model.named_parameters() if ".encoder." in "." + n and p.ndim == 2]
            zeros = sum(int((w == 0).sum()) for w in weights) / max(sum(w.numel() for w in weights), 1)
            return {{"logits": logits.tolist(), "class": type(model).__name__, "sparsity": zeros}}

        result = {{repo: load(repo) for repo in {stock!r}}}
        result["stock loads without hf_compress"] = not any(m.startswith("hf_compress") for m in sys.modules)
        import hf_compress.quantization  # registers the int8 loader
        result.update({{repo: load(repo) for repo in {int8!r}}})
        print(json.dumps(result))
        """
    )
    loaded = json.loads(out.strip().splitlines()[-1])
    assert loaded.pop("stock loads without hf_compress") is True
    assert set(loaded) == set(stock + int8)
    for repo, result in loaded.items():
        kind = repo.split("/")[1].removesuffix("-model")
        np.testing.assert_allclose(np.array(result["logits"]), expected[kind], atol=1e-5, err_msg=repo)
        assert result["class"] == (
            "AlbertForSequenceClassification" if kind == "albert" else type(artifacts[kind]).__name__
        )
    for repo in ("user/pruned", "user/pruned-model"):
        assert loaded[repo]["sparsity"] == pytest.approx(encoder_sparsity(pruned))  # the zeros are in the weights
    if quantize_ is not None:
        assert rows["int8"][-1].bytes_on_disk < rows["distilled"][-1].bytes_on_disk / 2


def test_trainer_cards_and_model_push_carry_the_trainers_tags(tmp_path):
    """Trainer.push_to_hub and model.push_to_hub tag the card with `model.model_tags`; our trainers must fill it."""
    args = PruningTrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True, target_sparsity=0.5)
    trainer = PruningTrainer(model=tiny_bert(), args=args, train_dataset=tiny_dataset(n=8))
    assert set(PruningTrainer._tag_names) <= set(trainer.model.model_tags or [])


def test_push_errors_are_huggingface_hubs_own(local_hub, tmp_path, monkeypatch):
    out = tiny_checkpoint(tmp_path / "model")
    for repo_id, token, status in (
        (f"{local_hub.other_user}/mine", None, 403),  # another user's namespace
        ("user/bad-token", "hf_not_a_token", 401),
    ):
        with pytest.raises(HfHubHTTPError) as error:
            push_compressed(out, repo_id, token=token)
        assert error.value.response.status_code == status
        assert "huggingface_hub" in str(error.traceback[-1].path)  # raised by the client, not by our code
        assert repo_id not in local_hub.server.repos

    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HfHubHTTPError) as error:
        push_compressed(out, "user/anonymous")
    assert error.value.response.status_code == 401 and "user/anonymous" not in local_hub.server.repos

    with pytest.raises(ValueError, match="holds no saved model"):
        push_compressed(str(tmp_path), "user/empty", token=local_hub.token)


def test_push_to_an_org_and_privately(local_hub, tmp_path):
    out = tiny_checkpoint(tmp_path / "model")
    commit = push_compressed(out, f"{local_hub.org}/private-model", private=True)
    repo = local_hub.server.repos[f"{local_hub.org}/private-model"]
    assert repo.private and commit.oid == repo.branches["main"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(repo.commits[commit.oid].files)


def test_a_second_push_leaves_exactly_the_pushed_folder(local_hub, tmp_path):
    first = tiny_checkpoint(tmp_path / "first")
    (tmp_path / "first" / "recipe.yaml").write_text("temperature: 2.0\n")
    (tmp_path / "first" / "compression_report.json").write_text("[]")
    push_compressed(first, f"{local_hub.user}/twice")
    second = tiny_checkpoint(tmp_path / "second", seed=3)
    commit = push_compressed(second, f"{local_hub.user}/twice")
    files = set(local_hub.server.repos[f"{local_hub.user}/twice"].commits[commit.oid].files)
    assert files == {*os.listdir(second), ".gitattributes"}
    assert "recipe.yaml" not in files and "compression_report.json" not in files

    (tmp_path / "second" / "notes.txt").write_text("kept")
    push_compressed(second, f"{local_hub.user}/twice")
    os.remove(tmp_path / "second" / "notes.txt")
    commit = push_compressed(second, f"{local_hub.user}/twice", keep_remote_files=True)
    assert "notes.txt" in local_hub.server.repos[f"{local_hub.user}/twice"].commits[commit.oid].files
