"""The inference benchmark's helpers and its cached, trained networks (no timing here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_unet.evaluation import bench, bench_figures, bench_nets, timing

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
    assert bench_figures.json_dice(a, a) == 1.0
    assert bench_figures.json_dice(a, b) == round(np.mean([2 / 3, 4 / 5]), 4)
    assert bench_figures.json_dice_per_class(a, b) == [round(2 / 3, 4), 0.8]
    assert bench_figures.json_dice(np.zeros(4), np.zeros(4)) == 1.0


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


# ---- the harness: baselines, FLOPs, timing (issue 14 item 1) -----------------------------


def _brute_force_phantom(shape, seed):
    """The phantom as first written: every ellipsoid over the whole grid."""
    rng = np.random.default_rng(seed)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    c = [(n - 1) / 2 for n in shape]

    def ellipsoid(center, radii):
        return sum(((g - m) / r) ** 2 for g, m, r in zip(grids, center, radii, strict=True)) <= 1

    body = ellipsoid(c, [0.47 * n for n in shape])
    truth = np.zeros(shape, np.uint8)
    n = max(3, int(np.prod(shape) / 60_000))
    for _ in range(n):
        truth[ellipsoid([rng.uniform(0.15, 0.85) * s for s in shape], rng.uniform(8, 16, 3))
              & body] = 1  # fmt: skip
    for _ in range(n):
        truth[ellipsoid([rng.uniform(0.15, 0.85) * s for s in shape], rng.uniform(4, 7, 3))
              & body] = 2  # fmt: skip
    hu = np.where(body, 40.0, -1000.0) + np.choose(truth, [0.0, 300.0, -250.0])
    return (hu + rng.normal(0, 20, shape)).astype(np.float32), truth


@pytest.mark.parametrize(
    ("shape", "seed"), [((64, 64, 32), 3), ((96, 80, 40), 42), ((20, 30, 9), 1)]
)
def test_phantom_drawn_in_bounding_boxes_equals_the_whole_grid_version(shape, seed):
    img, truth = bench_nets.phantom(shape, seed)
    ref_img, ref_truth = _brute_force_phantom(shape, seed)
    np.testing.assert_array_equal(truth, ref_truth)
    np.testing.assert_array_equal(img, ref_img)


def test_tuned_candidates_are_our_tile_and_a_larger_window_or_batched_slices():
    cands = bench.tuned_candidates("3d", (512, 512, 128), [88, 88, 128], "cpu", [64, 64, 64])
    assert cands == [
        {"roi_size": [88, 88, 128], "sw_batch_size": 4},
        {"roi_size": [128, 128, 64], "sw_batch_size": 4},
        {"roi_size": [80, 80, 128], "sw_batch_size": 4},
        {"roi_size": [64, 64, 64], "sw_batch_size": 4},
    ]
    # the windows are clipped to the volume, and none is tried twice
    small = bench.tuned_candidates("3d", (128, 128, 40), [128, 128, 40], "cpu", [64, 64, 64])
    assert small == [
        {"roi_size": [128, 128, 40], "sw_batch_size": 4},
        {"roi_size": [80, 80, 40], "sw_batch_size": 4},
        {"roi_size": [64, 64, 40], "sw_batch_size": 4},
    ]
    assert bench.tuned_candidates("2d", (512, 512, 128), [512, 512], "cpu") == [
        {"batch": 1},
        {"batch": 2},
        {"batch": 4},
        {"batch": 16},
    ]
    assert [c["batch"] for c in bench.tuned_candidates("2d", (8, 8, 8), [8, 8], "cuda")] == [16, 64]


def _tiny(dims):
    import torch

    from napari_unet.models import build_model, preset_spec

    spec = preset_spec("unet", spatial_dims=dims, labels=["organ", "lesion"], modality="CT",
                       channels=[4, 8], strides=[2], patch_size=(16,) * dims)  # fmt: skip
    torch.manual_seed(0)
    return build_model(spec).eval(), spec


@pytest.mark.parametrize("dims", [2, 3])
def test_every_method_gives_uint8_labels_of_the_volume_in_the_same_post_processing(dims):
    import torch

    from napari_unet.evaluation import baselines

    net, spec = _tiny(dims)
    img, _ = bench_nets.phantom((32, 24, 16), seed=1)
    cpu = torch.device("cpu")
    maps = {
        "ours": baselines.run_method("ours", net, spec, img, cpu, None, {"precision": "fp32"}),
        "monai": baselines.run_method("monai", net, spec, img, cpu, None, {}),
    }
    tuned = {"batch": 4} if dims == 2 else {"roi_size": [32, 24, 16], "sw_batch_size": 4}
    maps["tuned"] = baselines.run_method("monai_tuned", net, spec, img, cpu, None, tuned)
    for labels, info in maps.values():
        assert labels.shape == img.shape and labels.dtype == np.uint8 and info["device"] == "cpu"
    if dims == 2:  # whole slices through the net = ours (one tile per slice here)
        np.testing.assert_array_equal(maps["tuned"][0], maps["ours"][0])
    logits = torch.randn(3, 5, 7)
    np.testing.assert_array_equal(baselines.to_labels(logits).numpy(), logits.argmax(0).numpy())
    assert baselines.to_labels(logits).dtype == torch.uint8


def test_flops_per_voxel_counts_a_convolution_as_two_flops_per_multiply_add():
    import torch

    from napari_unet.evaluation.flops import flops_per_voxel

    _, spec3 = _tiny(3)
    conv = torch.nn.Conv3d(1, 4, 3, padding=1, bias=False)
    assert flops_per_voxel(conv, spec3) == 2 * 1 * 4 * 27
    _, spec2 = _tiny(2)
    conv2 = torch.nn.Conv2d(1, 6, 3, padding=1, bias=False)
    assert flops_per_voxel(conv2, spec2) == 2 * 1 * 6 * 9


@pytest.mark.parametrize("dims", [2, 3])
def test_conv_peak_reports_gflops_per_width(dims):
    from napari_unet.evaluation.flops import conv_peak

    r = conv_peak("cpu", dims, repeats=1, widths=(4, 8))
    assert set(r["by_width"]) == {"4", "8"} and r["gflops"] == max(r["by_width"].values()) > 0
    assert r["dtype"] == "float32" and len(r["input"]) == 3


def test_timed_calls_warm_up_once_then_take_the_median_of_the_timed_calls():
    import torch

    calls = []

    def fn():
        calls.append(1)
        return len(calls)

    m = timing.timed_calls(fn, torch.device("cpu"), 3)
    assert len(calls) == 4 and m["result"] == 4 and len(m["seconds"]) == 3
    assert m["median_s"] == sorted(m["seconds"])[1] and m["first_s"] >= 0
    assert m["peak_gpu_bytes"] is None and isinstance(m["peak_reset"], bool)


@pytest.mark.slow
@pytest.mark.parametrize("interleave", [True, False])
def test_a_case_runs_every_method_in_fresh_processes_and_reports_the_design_keys(interleave):
    """The whole harness on a small volume with the committed nets (fresh processes)."""
    if not (REPO_WEIGHTS / "phantom-unet-3d.safetensors").exists():
        pytest.skip("benchmark weights not in this checkout")
    peak = {"gflops": 50.0}
    case = bench.run_case("3d-tiny", "3d", (80, 72, 40), "cpu", weights_dir=REPO_WEIGHTS,
                          log=lambda m: None, repeats=2, conv_peak=peak,
                          interleave=interleave)  # fmt: skip
    for key in ("name", "mode", "shape", "device", "ours_s", "monai_s", "monai_tuned_s",
                "monai_tuned", "speedup", "speedup_vs_tuned", "dice", "dice_vs_tuned",
                "ours_gflops", "ours_fraction_of_conv_peak", "tiled", "same_dtype"):  # fmt: skip
        assert key in case, key
    # (the ratios come from unrounded seconds)
    assert case["speedup"] == pytest.approx(case["monai_s"] / case["ours_s"], rel=0.03)
    assert case["speedup_vs_tuned"] == pytest.approx(
        case["monai_tuned_s"] / case["ours_s"], rel=0.03
    )
    assert case["same_dtype"] and case["precision"] == "float32"
    assert case["flop_per_voxel"] == pytest.approx(3780, rel=0.01)
    assert case["dice"] > 0.95 and case["dice_vs_tuned"] > 0.95
    assert len(case["ours_runs_s"]) == 2 and case["ours_messages"] == []
    assert case["monai_tuned"] in [c["settings"] for c in case["monai_tuned_candidates"]]


def test_a_served_worker_warms_up_then_times_one_call_per_run_command(tmp_path, capsys):
    """The worker protocol in-process: ready (with the warm-up's info), one line per
    ``run``, the info at ``done`` and the label map saved."""
    import json

    from napari_unet.models.files import save_model

    net, spec = _tiny(3)
    weights = tmp_path / "net.safetensors"
    save_model(weights, net, spec, {})
    img, _ = bench_nets.phantom((24, 24, 16), seed=2)
    np.save(tmp_path / "vol.npy", img)
    out = tmp_path / "labels.npy"
    timing.serve("ours", str(weights), str(tmp_path / "vol.npy"), str(out), "cpu",
                 commands=["run", "run", "done"])  # fmt: skip
    lines = [json.loads(x[len(timing._MARK) :]) for x in capsys.readouterr().out.splitlines()
             if x.startswith(timing._MARK)]  # fmt: skip
    assert lines[0]["ready"] and lines[0]["info"]["tile"] and lines[0]["first_s"] > 0
    assert [set(x) >= {"seconds", "peak_rss_increase", "peak_gpu_bytes"} for x in lines[1:3]] == [
        True,
        True,
    ]
    assert lines[3]["info"]["dtype"] == "float32" and len(lines) == 4
    assert np.load(out).shape == img.shape
    summary = timing.summarise(lines[0]["first_s"], lines[1:3])
    assert summary["median_s"] == pytest.approx(np.median([x["seconds"] for x in lines[1:3]]))
