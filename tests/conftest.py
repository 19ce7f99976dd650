"""Shared fixtures. `local_hub`: a local Hub-compatible server (tests/hub_server.py) that the real client talks to."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from huggingface_hub import constants, hf_api

from tests.hub_server import HubServer

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One CPU thread per test worker (and per process a test starts): the workers already use every core, and the
    # tiny models here gain nothing from intra-op threads that would then compete with the other worker's.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _teacher_cache_per_test(tmp_path_factory, monkeypatch):
    """Each test its own teacher-output cache: an entry another test left would turn its teacher calls into hits."""
    monkeypatch.setenv("HF_COMPRESS_TEACHER_CACHE", str(tmp_path_factory.mktemp("teacher-outputs")))


USER, ORG, OTHER_USER = "user", "user-org", "other"
TOKEN, OTHER_TOKEN = "hf_local_user_token", "hf_local_other_token"
# Set in the environment, these would send the client elsewhere or change what it does.
_OVERRIDING_ENV = [
    "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_XET_CACHE", "HF_ASSETS_CACHE", "HF_TOKEN_PATH",
    "HF_STORED_TOKENS_PATH", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HF_OIDC_RESOURCE",
    "TRANSFORMERS_CACHE",
]  # fmt: skip


@dataclass
class LocalHub:
    """What a test needs to push to and pull from the local Hub; the client is already pointed at it."""

    server: HubServer  # its state: server.repos[repo_id].commits / .branches / .lfs; server.requests
    url: str  # also in HF_ENDPOINT
    user: str  # owner of `token`, which is also in HF_TOKEN
    token: str
    org: str  # an org `user` can write to
    other_user: str  # another user, whose namespace `user` cannot write to
    other_token: str
    env: dict[str, str]  # the whole environment of the test, for subprocesses
    home: Path  # HF_HOME; the download cache is home / "hub"

    def run_python(self, code: str, cwd: Path | None = None, timeout: float = 300) -> str:
        """Run `code` in a fresh interpreter configured only by the environment; return stdout, raise on failure."""
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            env=self.env, cwd=cwd or self.home.parent, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        return proc.stdout


@pytest.fixture
def local_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    """A fresh in-memory Hub on 127.0.0.1 for one test, with the real client pointed at it in this process and in
    subprocesses (HF_ENDPOINT, HF_TOKEN, HF_HOME under tmp_path, HF_HUB_DISABLE_XET=1)."""
    server = HubServer(tokens={TOKEN: USER, OTHER_TOKEN: OTHER_USER}, orgs={USER: [ORG]}).start()
    home = tmp_path / "hf_home"
    for name in _OVERRIDING_ENV:
        monkeypatch.delenv(name, raising=False)
    env = {
        "HF_ENDPOINT": server.url, "HF_TOKEN": TOKEN, "HF_HOME": str(home), "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }  # fmt: skip
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # huggingface_hub reads these at import time, so in this process the env vars alone come too late.
    patched = {
        "ENDPOINT": server.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
    }
    for name, value in patched.items():
        monkeypatch.setattr(constants, name, value)
    # Module-level HfApi instances captured the endpoint when they were built.
    monkeypatch.setattr(hf_api.api, "endpoint", server.url)
    try:
        import transformers.utils.hub as transformers_hub

        monkeypatch.setattr(transformers_hub, "_hf_api", None)  # rebuilt lazily with the patched endpoint
    except ImportError:
        pass
    yield LocalHub(server, server.url, USER, TOKEN, ORG, OTHER_USER, OTHER_TOKEN, dict(os.environ), home)
    server.stop()
    assert not server.errors, "the local Hub hit internal errors:\n" + "\n".join(server.errors)
