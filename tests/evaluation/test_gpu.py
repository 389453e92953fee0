"""benchmarks/gpu.sh and napari_unet.evaluation.gpu without a GPU: they stop with one
clear line; the memory sweep's bookkeeping runs with torch.cuda's counters faked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_unet.evaluation import gpu

REPO = Path(__file__).resolve().parents[2]
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")


@no_gpu
def test_gpu_sh_stops_with_one_line_without_a_gpu():
    env = {**os.environ, "PYTHON": sys.executable, "OUT": "/nonexistent/never-written"}
    res = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu.sh")], capture_output=True,
                         text=True, env=env, check=False)  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "needs a CUDA GPU" in res.stderr
    assert not Path("/nonexistent/never-written").exists()


@no_gpu
@pytest.mark.parametrize("what", ["finetune", "memory"])
def test_gpu_module_stops_with_one_line_without_a_gpu(capsys, what):
    assert gpu.main([what]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs a CUDA GPU" in err


def test_memory_sweep_records_time_memory_and_tiling_per_size(monkeypatch):
    weights = REPO / "benchmarks" / "weights"
    if not (weights / "phantom-unet-3d.safetensors").exists():
        pytest.skip("benchmark weights not in this checkout")
    fake = {
        "is_available": lambda: True,
        "get_device_name": lambda device=None: "Fake GPU",
        "reset_peak_memory_stats": lambda device=None: None,
        "memory_allocated": lambda device=None: 1000,
        "max_memory_allocated": lambda device=None: 5000,
        "synchronize": lambda device=None: None,
        "empty_cache": lambda: None,
    }
    for name, fn in fake.items():
        monkeypatch.setattr(torch.cuda, name, fn)
    out = gpu.memory_vs_size(weights_dir=weights, sizes=(24, 40), device="cpu",
                             precision="fp32", log=lambda m: None)  # fmt: skip
    assert out["device_name"] == "Fake GPU" and out["sizes"] == [24, 40]
    assert [(c["mode"], c["shape"][0]) for c in out["cases"]] == [
        ("3d", 24), ("3d", 40), ("2d", 24), ("2d", 40)
    ]  # fmt: skip
    for c in out["cases"]:
        assert c["peak_gpu_increase_bytes"] == 4000 and c["seconds"] > 0 and c["tile"]
