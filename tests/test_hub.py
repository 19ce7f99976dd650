"""Push to and pull from the local Hub (tests/hub_server.py) with the real huggingface_hub and transformers clients."""

from __future__ import annotations

import base64
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.lfs import UploadInfo, post_lfs_batch_info
from transformers import AutoModelForSequenceClassification, BertTokenizerFast, Trainer, TrainingArguments

from tests.testing_utils import tiny_batch, tiny_bert, tiny_dataset

TEXTS = ["the small model is here", "hello worlds, hello hub"]
WORDS = "the small model is here hello world ##s , hub".split()


def tiny_tokenizer(tmp_path) -> BertTokenizerFast:
    """A WordPiece tokenizer built offline from a 15-token vocabulary."""
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizerFast(vocab=str(vocab))  # transformers 5 takes `vocab` (a `vocab_file` kwarg is ignored)


def logits(model, batch: dict) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k != "labels"}).logits.numpy()


def head(local_hub, repo_id: str) -> str:
    return local_hub.server.repos[repo_id].branches["main"]


def test_model_and_tokenizer_round_trip_in_a_fresh_process(local_hub, tmp_path):
    model, tokenizer = tiny_bert(seed=1), tiny_tokenizer(tmp_path)
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert len(set(encoded["input_ids"][0].tolist())) > 4, "the tokenizer should know the words, not map them to UNK"
    model.push_to_hub("user/tiny-bert")
    tokenizer.push_to_hub("user/tiny-bert")

    # Only the environment (HF_ENDPOINT, HF_TOKEN, HF_HOME) tells the fresh process where the model is.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = local_hub.run_python(
        f"""
        import json, torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained("user/tiny-bert")
        model = AutoModelForSequenceClassification.from_pretrained("user/tiny-bert").eval()
        batch = tokenizer({TEXTS!r}, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**batch).logits
        print(json.dumps({{"input_ids": batch["input_ids"].tolist(), "logits": logits.tolist()}}))
        """,
        cwd=run_dir,
    )
    loaded = json.loads(out.strip().splitlines()[-1])
    assert loaded["input_ids"] == encoded["input_ids"].tolist()
    np.testing.assert_allclose(np.array(loaded["logits"]), logits(model, encoded), atol=1e-6)
    assert (local_hub.home / "hub" / "models--user--tiny-bert").is_dir()

    # The weights went through the LFS flow (batch, PUT to the signed href, verify); JSON files are regular.
    siblings = {s.rfilename: s for s in HfApi().model_info("user/tiny-bert", files_metadata=True).siblings}
    assert siblings["model.safetensors"].lfs is not None and siblings["config.json"].lfs is None
    assert {"config.json", "model.safetensors", "README.md", "tokenizer_config.json"} <= set(siblings)
    methods = [(method, path.split("?")[0].split("/")[1]) for method, path, _ in local_hub.server.requests]
    assert ("PUT", "lfs-upload") in methods and ("GET", "lfs-cdn") in methods  # the download came via the "CDN"


def test_repush_of_unchanged_model_makes_no_commit(local_hub):
    model = tiny_bert(seed=2)
    first = model.push_to_hub("user/same")
    commits = len(local_hub.server.repos["user/same"].commits)
    assert model.push_to_hub("user/same").oid == first.oid == head(local_hub, "user/same")
    assert len(local_hub.server.repos["user/same"].commits) == commits  # preupload's oids let the client skip
    tiny_bert(seed=3).push_to_hub("user/same")
    assert head(local_hub, "user/same") != first.oid


def test_trainer_push_to_hub_round_trips(local_hub, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")  # only `hub_token` authorises the push
    repo_id = f"{local_hub.org}/trained"
    model = tiny_bert(seed=4)
    before = logits(model, tiny_batch())
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=8, learning_rate=1e-2,
        save_strategy="no", report_to="none", use_cpu=True,
        push_to_hub=True, hub_model_id=repo_id, hub_token=local_hub.token,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=tiny_dataset(n=16))
    assert repo_id in local_hub.server.repos  # created by Trainer.__init__
    trainer.train()
    trainer.push_to_hub()

    trained = logits(trainer.model.eval(), tiny_batch())
    assert not np.allclose(trained, before, atol=1e-4), "two steps at lr 1e-2 should change the model"
    reloaded = AutoModelForSequenceClassification.from_pretrained(repo_id).eval()
    np.testing.assert_allclose(logits(reloaded, tiny_batch()), trained, atol=1e-6)
    files = local_hub.server.repos[repo_id].commits[head(local_hub, repo_id)].files
    assert {"README.md", "config.json", "model.safetensors", "training_args.bin"} <= set(files)
    assert "End of training" in local_hub.server.repos[repo_id].commits[head(local_hub, repo_id)].message


def test_missing_repo_raises_repository_not_found(local_hub):
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("user/missing", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("user/missing")


def test_missing_file_and_revision_raise_entry_and_revision_not_found(local_hub):
    HfApi().create_repo("user/repo")
    with pytest.raises(RemoteEntryNotFoundError):  # not the Local one, which would mean the server's answer was lost
        hf_hub_download("user/repo", "config.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("user/repo", ".gitattributes", revision="0" * 40)
    assert b"*.safetensors filter=lfs" in Path(hf_hub_download("user/repo", ".gitattributes")).read_bytes()


def test_push_without_a_valid_token_is_refused(local_hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(HfHubHTTPError) as error:
        tiny_bert().push_to_hub("user/anonymous")
    assert error.value.response.status_code == 401
    assert "user/anonymous" not in local_hub.server.repos

    HfApi().create_repo("user/existing", token=local_hub.token)
    before = head(local_hub, "user/existing")
    for token in (None, "hf_not_a_token"):
        with pytest.raises(HfHubHTTPError) as error:
            tiny_bert().push_to_hub("user/existing", token=token)
        assert error.value.response.status_code == 401
    assert head(local_hub, "user/existing") == before


def test_push_to_another_users_namespace_is_forbidden(local_hub):
    with pytest.raises(HfHubHTTPError) as error:
        tiny_bert().push_to_hub(f"{local_hub.other_user}/mine")
    assert error.value.response.status_code == 403
    assert f"{local_hub.other_user}/mine" not in local_hub.server.repos

    theirs = f"{local_hub.other_user}/theirs"
    HfApi().create_repo(theirs, token=local_hub.other_token)
    before = head(local_hub, theirs)
    with pytest.raises(HfHubHTTPError) as error:  # the repo exists and is readable, but not writable
        tiny_bert().push_to_hub(theirs)
    assert error.value.response.status_code == 403
    assert head(local_hub, theirs) == before


def test_private_repo_looks_missing_to_other_users(local_hub):
    HfApi().create_repo("user/secret", private=True)
    assert HfApi().model_info("user/secret").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info("user/secret", token=local_hub.other_token)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("user/secret", ".gitattributes", token=False)


def test_download_by_commit_sha_returns_old_content(local_hub):
    api = HfApi()
    api.create_repo("user/versions")
    weights = b"\x00\x01" * 1000  # LFS through .gitattributes; committed once, then inherited by the second commit
    versions = [{"notes.txt": b"v1", "weights.safetensors": weights}, {"notes.txt": b"v2"}]
    commits = []
    for files in versions:
        ops = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
        commits.append(api.create_commit("user/versions", operations=ops, commit_message="update").oid)
    old, new = commits
    assert old != new and all(re.fullmatch(r"[0-9a-f]{40}", sha) for sha in commits)
    assert api.model_info("user/versions").sha == new and api.model_info("user/versions", revision=old).sha == old
    for revision, notes in ((old, b"v1"), ("main", b"v2"), (new, b"v2")):
        assert Path(hf_hub_download("user/versions", "notes.txt", revision=revision)).read_bytes() == notes
        assert Path(hf_hub_download("user/versions", "weights.safetensors", revision=revision)).read_bytes() == weights
    assert api.list_repo_files("user/versions") == [".gitattributes", "notes.txt", "weights.safetensors"]


def test_whoami_reports_the_tokens_user_and_orgs(local_hub):
    me = HfApi().whoami()
    assert me["name"] == local_hub.user and [org["name"] for org in me["orgs"]] == [local_hub.org]
    assert HfApi().whoami(token=local_hub.other_token)["name"] == local_hub.other_user
    with pytest.raises(HfHubHTTPError) as error:
        HfApi().whoami(token="hf_not_a_token")
    assert error.value.response.status_code == 401


def http_status(method: str, url: str, data: bytes, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers or {}, method=method)) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def commit_payload(*operations: tuple[str, dict]) -> bytes:
    """The ndjson body of POST /api/models/{repo}/commit/{revision}, as huggingface_hub's _commit_api builds it."""
    lines = [("header", {"summary": "raw commit"}), *operations]
    return "".join(json.dumps({"key": key, "value": value}) + "\n" for key, value in lines).encode()


def test_lfs_storage_checks_content_and_commits_need_uploaded_objects(local_hub):
    """What a well-behaved client never does, so the round trips above cannot show it: the server checks it."""
    HfApi().create_repo("user/lfs")
    info = UploadInfo.from_bytes(b"the real weights")
    actions, errors, _ = post_lfs_batch_info([info], local_hub.token, "model", "user/lfs", endpoint=local_hub.url)
    upload = actions[0]["actions"]["upload"]["href"]
    assert not errors and not upload.startswith(local_hub.url)  # a signed URL on another host, like S3
    assert http_status("PUT", upload, b"other weights!!!") == 400  # wrong sha256
    assert http_status("PUT", upload.replace("sig=", "sig=0"), b"the real weights") == 403  # bad signature

    auth = {"Authorization": f"Bearer {local_hub.token}", "Content-Type": "application/x-ndjson"}
    commit_url = f"{local_hub.url}/api/models/user/lfs/commit/main"
    lfs_file = ("lfsFile", {"path": "w.safetensors", "algo": "sha256", "oid": info.sha256.hex()})
    assert http_status("POST", commit_url, commit_payload(lfs_file), auth) == 422  # the object was never stored
    assert http_status("PUT", upload, b"the real weights") == 200
    assert http_status("POST", commit_url, commit_payload(lfs_file), auth) == 200
    binary = ("file", {"path": "x.bin", "content": base64.b64encode(b"\0").decode(), "encoding": "base64"})
    assert http_status("POST", commit_url, commit_payload(binary), auth) == 400  # must go through LFS
    assert HfApi().list_repo_files("user/lfs") == [".gitattributes", "w.safetensors"]
