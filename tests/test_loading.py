"""`check_path_or_id`: a model or dataset field is checked before any work, and refused naming what was looked for."""

from __future__ import annotations

import pytest
from huggingface_hub import HfApi, constants

from hf_compress.loading import check_path_or_id

# (value, kind, what the one error line says is allowed); "{tmp}" is the test's empty directory
REFUSED = {
    "empty": ("", "model", r"allowed: a local model path, pkg://<package>/<dir> or a Hub model id"),
    "no-package": ("pkg://no_such_package_here/model", "model", r"allowed: pkg://<package>/<dir> of an installed"),
    "no-folder": ("pkg://hf_compress/no_such_folder", "model", r"allowed: .* naming a folder the package ships \(no "),
    "not-saved": ("{tmp}", "model", r"allowed: a directory that save_pretrained wrote \(this one has no config.json"),
    "no-path": ("./no/such/model", "model", r"allowed: an existing local model path \(nothing is there\) or a Hub"),
    "no-file": ("missing.csv", "dataset", r"allowed: an existing local dataset path \(nothing is there\)"),
    "bad-id": ("not--a valid id", "model", r"allowed: an existing local model path or a valid Hub id \("),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_field_that_names_nothing_loadable_is_refused_before_any_request(tmp_path, monkeypatch, case):
    value, kind, allowed = REFUSED[case]
    value = value.format(tmp=tmp_path)
    # None of these may reach the Hub: the one that would is a failure of the check, not a slow test.
    monkeypatch.setattr(HfApi, "repo_exists", lambda *a, **k: pytest.fail("asked the Hub"))
    with pytest.raises(ValueError, match=rf"^teacher='{value}' is invalid; {allowed}"):
        check_path_or_id("teacher", value, kind)


def test_a_hub_id_is_refused_offline_unless_cached_and_when_the_hub_has_none(local_hub, monkeypatch):
    api = HfApi()
    api.create_repo(f"{local_hub.user}/tiny")
    assert check_path_or_id("teacher", f"{local_hub.user}/tiny") == f"{local_hub.user}/tiny"
    with pytest.raises(ValueError, match=rf"teacher='{local_hub.user}/none' is invalid; .*\(the Hub has none\)$"):
        check_path_or_id("teacher", f"{local_hub.user}/none")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"tiny' is invalid; .*a Hub id in the local cache \(HF_HUB_OFFLINE=1\)$"):
        check_path_or_id("teacher", f"{local_hub.user}/tiny")
