import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "ddp_script.py")


def run(command: list[str], tmp_path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not os.path.exists(os.path.join(os.path.dirname(sys.executable), "torchrun")),
    reason="torchrun not installed",
)
@pytest.mark.parametrize("projection", [[], ["projection"]], ids=["same-width", "with-projection"])
def test_two_process_ddp_equals_one_process_with_the_same_global_batch(tmp_path, projection):
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    run([sys.executable, SCRIPT, str(tmp_path / "single"), "8", *projection], tmp_path)
    ddp = [torchrun, "--nproc_per_node", "2", "--master_port", "29533", SCRIPT, str(tmp_path / "ddp"), "4"]
    run([*ddp, *projection], tmp_path)
    single = load_file(tmp_path / "single" / "rank0.safetensors")
    rank0 = load_file(tmp_path / "ddp" / "rank0.safetensors")
    rank1 = load_file(tmp_path / "ddp" / "rank1.safetensors")
    masks = [k for k in single if k.startswith("mask.")]
    assert masks and any(k.startswith("projection.") for k in single) == bool(projection)
    for key in single:
        # Masks and weights are identical on every rank ...
        assert torch.equal(rank0[key], rank1[key]), key
        # ... and equal to one process with the same global batch, within float tolerance (sums in another order).
        if key.startswith("mask."):
            assert (rank0[key] != single[key]).float().mean() < 1e-3, key
        else:
            assert torch.allclose(rank0[key], single[key], atol=1e-4), key
    pruned = sum(int((rank0[k] == 0).sum()) for k in masks) / sum(rank0[k].numel() for k in masks)
    assert pruned == pytest.approx(0.6, abs=1e-3)
    assert (tmp_path / "ddp" / "final" / "model.safetensors").exists()
