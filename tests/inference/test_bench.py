"""The inference benchmark's helpers and its cached, trained networks (no timing here)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.inference import bench, bench_measure, bench_nets


def test_phantom_is_seeded_and_has_both_classes():
    img, truth = bench_nets.phantom((64, 64, 32), seed=3)
    img2, truth2 = bench_nets.phantom((64, 64, 32), seed=3)
    assert img.dtype == np.float32 and truth.dtype == np.uint8
    assert np.array_equal(img, img2) and np.array_equal(truth, truth2)
    assert set(np.unique(truth)) == {0, 1, 2}


def test_dice():
    a = np.array([0, 1, 1, 2, 2, 0])
    assert bench_nets.dice(a, a, 2) == 1.0
    b = np.array([0, 1, 0, 2, 2, 2])
    assert bench_nets.dice(a, b, 2) == pytest.approx(np.mean([2 / 3, 4 / 5]))
    assert bench_nets.dice(np.zeros(4), np.zeros(4), 2) == 1.0


@pytest.mark.parametrize("dims", [2, 3])
def test_cached_net_is_a_trained_segmenter(dims):
    """The committed weights load without retraining, are small, and their lineage shows
    a converged net (Dice vs the phantom's truth), so agreement figures are meaningful."""
    from napari_unet.models.files import read_model_header

    path = bench_nets.WEIGHTS_DIR / f"phantom-unet-{dims}d.safetensors"
    if not path.exists():
        pytest.skip("benchmark weights not in this checkout")
    assert path.stat().st_size < 5 * 2**20
    lineage = read_model_header(path)["lineage"]
    assert lineage["steps"] == bench_nets.TRAIN_STEPS[dims]
    assert lineage["dice_vs_truth_128x128x64"] >= 0.99
    messages: list[str] = []
    net, spec, _, got = bench.benchmark_net(dims, log=messages.append)
    assert got == path and not messages  # loaded, not retrained
    assert spec.spatial_dims == dims and not net.training


def test_peak_reset_reports_a_bool():
    assert isinstance(bench_measure._reset_peak(), bool)
    assert bench_measure._status_kib("VmRSS") is None or bench_measure._status_kib("VmRSS") > 0
