"""The inference benchmark's figures: what `bench.run_case` measured, turned into the
JSON keys of a case (timing and ratios, agreement, arithmetic, tiling, memory)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.evaluation.metrics import dice_per_class, mean_dice


def json_dice(a: np.ndarray | None, b: np.ndarray | None) -> float | None:
    """Mean foreground Dice of two organ/lesion maps, rounded for the JSON (1.0: both
    empty; None when a map is missing)."""
    if a is None or b is None:
        return None
    m = mean_dice(dice_per_class(a, b, 3))
    return round(1.0 if m is None else m, 4)


def json_dice_per_class(a: np.ndarray, b: np.ndarray) -> list[float]:
    """Dice of organ and of lesion, rounded for the JSON (1.0 where both lack the class)."""
    return [round(1.0 if d is None else d, 4) for d in dice_per_class(a, b, 3)]


def display_path(path: Path) -> str:
    """``path`` relative to the working folder when under it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def candidate(m: dict, labels: np.ndarray, settings: dict, ours: np.ndarray) -> dict:
    """One tuned candidate's figures for the JSON."""
    return {
        "settings": settings,
        "median_s": round(m["median_s"], 3),
        "runs_s": [round(x, 3) for x in m["seconds"]],
        "dice_vs_ours": json_dice(ours, labels),
    }


def gflops_rate(gflop: float, seconds: float) -> float:
    return round(gflop / seconds, 1)


def timing_figures(methods: dict[str, dict], tuned_settings: dict, spec) -> dict[str, Any]:
    """Medians, every run, warm-up times, ratios and the baselines' settings."""
    ours_s, monai_s, tuned_s = (methods[k]["median_s"] for k in ("ours", "monai", "monai_tuned"))
    out: dict[str, Any] = {
        "ours_s": round(ours_s, 4),
        "monai_s": round(monai_s, 4),
        "monai_tuned_s": round(tuned_s, 4),
        "monai_tuned": tuned_settings,
        "speedup": round(monai_s / ours_s, 2),
        "speedup_vs_tuned": round(tuned_s / ours_s, 2),
    }
    for key, m in methods.items():
        out[f"{key}_runs_s"] = [round(s, 4) for s in m["seconds"]]
    for key, m in methods.items():
        out[f"{key}_first_s"] = round(m["first_s"], 3)
    out["monai_args"] = "roi_size=spec.patch_size, sw_batch_size=1, defaults otherwise"
    out["monai_roi"] = list(spec.patch_size)
    return out


def agreement_figures(ours, ref, tuned_labels, full, truth) -> dict[str, Any]:
    """Dice of ours vs MONAI (defaults and tuned), vs the tile-free pass and vs truth."""
    return {
        "dice": json_dice(ours, ref),
        "dice_vs_tuned": json_dice(ours, tuned_labels),
        "dice_per_class": json_dice_per_class(ours, ref),
        "dice_ours_tilefree": json_dice(ours, full),
        "dice_monai_tilefree": json_dice(ref, full),
        "dice_monai_tuned_tilefree": json_dice(tuned_labels, full),
        "dice_net_truth": json_dice(full, truth),
        "dice_net_truth_per_class": None if full is None else json_dice_per_class(full, truth),
        "dice_ours_truth": json_dice(ours, truth),
        "dice_monai_truth": json_dice(ref, truth),
    }


def arithmetic_figures(net, spec, shape, methods: dict[str, dict], conv_peak) -> dict[str, Any]:
    """Voxels/s, FLOPs per voxel and pass, effective GFLOP/s and share of the conv peak."""
    from napari_unet.evaluation.flops import flops_per_voxel

    nvox = int(np.prod(shape))
    fpv = flops_per_voxel(net, spec)
    gflop = fpv * nvox / 1e9
    peak = (conv_peak or {}).get("gflops")
    out: dict[str, Any] = {}
    for key, m in methods.items():
        out[f"{key}_voxels_per_s"] = round(nvox / m["median_s"])
    out.update(flop_per_voxel=round(fpv, 1), gflop_per_pass=round(gflop, 2))
    for key, m in methods.items():
        out[f"{key}_gflops"] = gflops_rate(gflop, m["median_s"])
    out["conv_peak_gflops"] = peak
    for key in ("ours", "monai_tuned"):
        rate = gflop / methods[key]["median_s"]
        out[f"{key}_fraction_of_conv_peak"] = round(rate / peak, 3) if peak else None
    return out


def tiling_figures(info: dict[str, Any], methods: dict[str, dict]) -> dict[str, Any]:
    """How ours tiled the volume, its messages, and the dtype of every method."""
    dtypes = {m["info"]["dtype"] for m in methods.values()}
    return {
        "tiled": info["n_tiles"] > 1,
        "ours_tile": info["tile"],
        "ours_batch_size": info["batch_size"],
        "ours_n_tiles": info["n_tiles"],
        "ours_messages": info.get("messages", []),
        "precision": info["dtype"],
        "same_dtype": len(dtypes) == 1,
    }


def memory_figures(methods: dict[str, dict], input_bytes: int, net) -> dict[str, Any]:
    """Peak host memory above input + model, and peak GPU memory, of every method."""
    model_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    base = input_bytes + model_bytes
    out: dict[str, Any] = {
        "input_bytes": int(input_bytes),
        "model_bytes": int(model_bytes),
        "peak_mark_reset": all(m["peak_reset"] for m in methods.values()),
    }
    for key, m in methods.items():
        inc = int(m["peak_rss_increase"])
        out[f"{key}_peak_rss_increase_bytes"] = inc
        out[f"{key}_peak_over_input_plus_model"] = round((base + inc) / base, 2)
        out[f"{key}_peak_gpu_bytes"] = m["peak_gpu_bytes"]
    out["ours_peak_over_input"] = round(out["ours_peak_rss_increase_bytes"] / input_bytes, 2)
    return out
