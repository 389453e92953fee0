"""The inference benchmark's helpers and its cached, trained networks (no timing here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_unet.evaluation import bench, bench_nets, timing

#: The repository's committed benchmark nets (benchmarks/bench_inference.py uses them).
REPO_WEIGHTS = Path(__file__).resolve().parents[2] / "benchmarks" / "weights"


def test_phantom_is_seeded_and_has_both_classes():
    img, truth = bench_nets.phantom((64, 64, 32), seed=3)
    img2, truth2 = bench_nets.phantom((64, 64, 32), seed=3)
    assert img.dtype == np.float32 and truth.dtype == np.uint8
    assert np.array_equal(img, img2) and np.array_equal(truth, truth2)
    assert set(np.unique(truth)) == {0, 1, 2}


def test_benchmark_dice_is_the_metrics_dice():
    a = np.array([0, 1, 1, 2, 2, 0])
    b = np.array([0, 1, 0, 2, 2, 2])
    assert bench._json_dice(a, a) == 1.0
    assert bench._json_dice(a, b) == round(np.mean([2 / 3, 4 / 5]), 4)
    assert bench._json_dice_per_class(a, b) == [round(2 / 3, 4), 0.8]
    assert bench._json_dice(np.zeros(4), np.zeros(4)) == 1.0


def test_default_weights_dir_is_a_user_cache_not_the_source_tree(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert bench_nets.default_weights_dir() == tmp_path / "napari-unet" / "bench-weights"
    monkeypatch.delenv("XDG_CACHE_HOME")
    default = bench_nets.default_weights_dir()
    assert default == Path.home() / ".cache" / "napari-unet" / "bench-weights"
    src = Path(bench_nets.__file__).resolve().parents[2]
    assert src not in default.resolve().parents


def test_a_missing_cache_trains_and_saves_the_net_there(tmp_path, monkeypatch):
    """Nothing is looked up outside ``weights_dir``: an empty folder means training."""
    calls = []

    def fake_train(spec, net, steps, seed, log=None):
        calls.append(steps)
        return [0.5] * steps

    monkeypatch.setattr(bench_nets, "train", fake_train)
    monkeypatch.setattr(bench_nets, "phantom", lambda shape, seed: _tiny_phantom())
    net, _, lineage, path = bench_nets.benchmark_net(
        2, weights_dir=tmp_path, steps=2, log=lambda m: None
    )
    assert not net.training
    assert calls == [2] and path == tmp_path / "phantom-unet-2d.safetensors" and path.exists()
    assert lineage["recipe"] == bench_nets.RECIPE
    messages: list[str] = []
    again = bench_nets.benchmark_net(2, weights_dir=tmp_path, steps=2, log=messages.append)
    assert calls == [2] and not messages and again[3] == path  # loaded, not retrained


def _tiny_phantom():
    truth = np.zeros((16, 16, 8), np.uint8)
    truth[4:8, 4:8] = 1
    truth[10:12, 10:12] = 2
    return np.where(truth > 0, 100.0, -1000.0).astype(np.float32), truth


@pytest.mark.parametrize("dims", [2, 3])
def test_cached_net_is_a_trained_segmenter(dims):
    """The committed weights load without retraining, are small, and their lineage shows
    a converged net (Dice vs the phantom's truth), so agreement figures are meaningful."""
    from napari_unet.models.files import read_model_header

    path = REPO_WEIGHTS / f"phantom-unet-{dims}d.safetensors"
    if not path.exists():
        pytest.skip("benchmark weights not in this checkout")
    assert path.stat().st_size < 5 * 2**20
    lineage = read_model_header(path)["lineage"]
    assert lineage["recipe"] in bench_nets.SAME_RECIPE
    assert lineage["steps"] == bench_nets.TRAIN_STEPS[dims]
    assert lineage["dice_vs_truth_128x128x64"] >= 0.99
    messages: list[str] = []
    net, spec, _, got = bench_nets.benchmark_net(
        dims, weights_dir=REPO_WEIGHTS, log=messages.append
    )
    assert got == path and not messages  # loaded, not retrained
    assert spec.spatial_dims == dims and not net.training


def test_peak_reset_reports_a_bool():
    assert isinstance(timing._reset_peak(), bool)
    assert timing._status_kib("VmRSS") is None or timing._status_kib("VmRSS") > 0
