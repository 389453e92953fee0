"""Inference speed: napari_unet's predict_volume vs MONAI's sliding_window_inference.

Both run the same network weights on the same synthetic CT-like volume:

* network: ``preset_spec("unet")`` (MONAI UNet 16-32-64-128, batch norm) trained to
  convergence by `train` (Dice+CE with batch-wide Dice, Adam, one-cycle learning rate
  peaking at 1e-2, batch 8 of 32³ patches for 3000 steps 3D / of 96² slices for 3000
  steps 2D) on 32 phantoms other than the test volume, to Dice ≥ 0.99 vs truth tile-free
  on the test volume, and cached with its lineage (recipe, final loss, Dice vs truth) as
  ``phantom-unet-{2,3}d.safetensors`` in a weights folder (``weights_dir``: the
  repository's ``benchmarks/weights`` from ``benchmarks/bench_inference.py``, else a user
  cache folder), so that reruns are fast and use the very same weights. A weak net (the
  earlier 100-step one had Dice 0.5 vs truth; the 800-step batch-2 one 0.93) flips labels
  on small context changes and measures tile-border noise, not the inference engine;
  ``dice_net_truth`` in the results shows the net is a real segmenter of the phantom;
* volume: a body ellipse (~40 HU, noise σ 20 HU) in air (-1000 HU) with bright
  "organ" ellipsoids (+340 HU) and dark "lesion" ellipsoids (-210 HU) of fixed voxel size;
* ours: ``predict_volume(model, spec, volume, device="cpu")`` end to end (normalisation,
  tiling, stitching, argmax, label Volume);
* MONAI 3D: the same CT normalisation on the whole volume, then
  ``sliding_window_inference(x, roi_size=spec.patch_size, sw_batch_size=1, predictor=net)``
  with every other argument at its default (overlap 0.25, mode "constant"), then argmax;
* MONAI 2D: the slices along the through-plane axis as a batch ``(N, 1, H, W)`` through
  ``sliding_window_inference`` with the same defaults (roi = the 2D patch), then argmax.

Each method runs in its own fresh process (``--worker``): load the weights file and the
volume, warm up on a small crop, reset the kernel's peak-RSS mark, one timed call, then
read the peak mark (VmHWM). Reported per case: seconds and voxels/s of each,
speedup = monai_s / ours_s, Dice between the two label maps (mean over foreground classes,
and per class), Dice of each against a tile-free reference (the whole volume / whole
slices in one forward pass, no tile borders) and against the phantom's truth, the net's
own tile-free Dice vs truth, peak resident-memory increase of each call and
(input + model + increase) / (input + model), our tile and batch sizes. Every Dice is
`evaluation.metrics.dice_per_class` (mean over the two foreground classes).

Run: ``python benchmarks/bench_inference.py [--quick] [--retrain] [--json] [--out FILE]``
or ``napari-unet bench [--quick] [--json]`` (both call `run_benchmark`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.evaluation.bench_nets import (
    TRAIN_PHANTOMS,
    Log,
    benchmark_net,
    default_weights_dir,
    phantom,
    tile_free,
)
from napari_unet.evaluation.metrics import dice_per_class, mean_dice
from napari_unet.evaluation.timing import machine, measure, worker

QUICK = [("3d-128x128x64", "3d", (128, 128, 64)), ("2d-128x128x64", "2d", (128, 128, 64))]
FULL = [("3d-512x512x128", "3d", (512, 512, 128)), ("2d-512x512x128", "2d", (512, 512, 128))]


def _json_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean foreground Dice of two organ/lesion maps, rounded for the JSON (1.0: both empty)."""
    m = mean_dice(dice_per_class(a, b, 3))
    return round(1.0 if m is None else m, 4)


def _json_dice_per_class(a: np.ndarray, b: np.ndarray) -> list[float]:
    """Dice of organ and of lesion, rounded for the JSON (1.0 where both lack the class)."""
    return [round(1.0 if d is None else d, 4) for d in dice_per_class(a, b, 3)]


def _display_path(path: Path) -> str:
    """``path`` relative to the working folder when under it, else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _memory(m: dict, base: int) -> dict:
    """Peak-RSS increase of one measurement and (base + increase) / base."""
    inc = int(m["peak_rss"] - m["rss_before"])
    return {"increase": inc, "ratio": round((base + inc) / base, 2), "exact": m["peak_reset"]}


def run_case(
    name: str,
    mode: str,
    shape: tuple[int, int, int],
    device: str,
    *,
    weights_dir: str | os.PathLike | None = None,
    log: Log = print,
) -> dict:
    """One case: each method in its own fresh process (timing and peak memory), then the
    Dice of the two label maps, of each against the tile-free reference and the truth.

    Args:
        name: the case's name in the results.
        mode: "2d" or "3d".
        shape: the phantom's ``(i, j, k)`` in voxels.
        device: torch device name.
        weights_dir: the benchmark nets' cache folder (see `bench_nets.benchmark_net`).
        log: called with progress lines.

    Returns:
        The case's JSON-ready dict (DESIGN.md `bench` keys and more).
    """
    import tempfile

    dims = 3 if mode == "3d" else 2
    net, spec, lineage, weights = benchmark_net(dims, weights_dir=weights_dir, log=log)
    img, truth = phantom(shape, seed=42)
    with tempfile.TemporaryDirectory() as tmp:
        volume = os.path.join(tmp, "volume.npy")
        np.save(volume, img)
        m_ours, ours = measure("ours", weights, volume, tmp, device)
        m_monai, ref = measure("monai", weights, volume, tmp, device)
    # Tile-free reference: the whole volume (3D) or whole slices (2D) in one forward pass,
    # so no tile borders at all. Shows how far each tiled answer is from it.
    full = tile_free(net.to(device), spec, img, device)
    ours_s, monai_s = m_ours["seconds"], m_monai["seconds"]
    swi_s = m_monai["sliding_window_only_s"]
    nvox = int(np.prod(shape))
    model_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    mo = _memory(m_ours, img.nbytes + model_bytes)
    mm = _memory(m_monai, img.nbytes + model_bytes)
    info = m_ours["info"]
    return {
        "name": name,
        "mode": mode,
        "shape": list(shape),
        "device": info["device"],
        "ours_s": round(ours_s, 3),
        "monai_s": round(monai_s, 3),
        "speedup": round(monai_s / ours_s, 2),
        "monai_sliding_window_only_s": round(swi_s, 3),
        "speedup_vs_sliding_window_only": round(swi_s / ours_s, 2),
        "dice": _json_dice(ours, ref),
        "ours_voxels_per_s": round(nvox / ours_s),
        "monai_voxels_per_s": round(nvox / monai_s),
        "dice_per_class": _json_dice_per_class(ours, ref),
        "dice_ours_tilefree": _json_dice(ours, full),
        "dice_monai_tilefree": _json_dice(ref, full),
        "dice_net_truth": _json_dice(full, truth),
        "dice_net_truth_per_class": _json_dice_per_class(full, truth),
        "dice_ours_truth": _json_dice(ours, truth),
        "dice_monai_truth": _json_dice(ref, truth),
        "input_bytes": int(img.nbytes),
        "model_bytes": int(model_bytes),
        "ours_peak_rss_increase_bytes": mo["increase"],
        "monai_peak_rss_increase_bytes": mm["increase"],
        "ours_peak_over_input": round(mo["increase"] / img.nbytes, 2),
        "ours_peak_over_input_plus_model": mo["ratio"],
        "monai_peak_over_input_plus_model": mm["ratio"],
        "peak_mark_reset": mo["exact"] and mm["exact"],
        "ours_tile": info["tile"],
        "ours_batch_size": info["batch_size"],
        "ours_n_tiles": info["n_tiles"],
        "precision": info["precision"],
        "monai_roi": list(spec.patch_size),
        "monai_args": "sw_batch_size=1, defaults otherwise",
        "weights": _display_path(weights),
        "train_steps": lineage.get("steps"),
        "train_s": lineage.get("train_s"),
    }


def run_benchmark(
    *,
    quick: bool = False,
    device: str = "cpu",
    retrain: bool = False,
    cases: list | None = None,
    weights_dir: str | os.PathLike | None = None,
    log: Log = print,
    partial: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark cases; returns the JSON-ready result (DESIGN.md `bench` keys).

    Args:
        quick: only the 128×128×64 cases.
        device: torch device name.
        retrain: train the benchmark nets again first (minutes each on 2 CPU cores).
        cases: ``(name, mode, shape)`` triples instead of the standard ones.
        weights_dir: where the trained nets are cached; None = a user cache folder
            (`bench_nets.default_weights_dir`), where they are trained on first use.
        log: called with progress lines.
        partial: a JSON file rewritten after every case.

    Returns:
        ``machine``, ``versions``, ``method`` and ``cases`` (see `run_case`).
    """
    if retrain:
        for dims in (3, 2):
            benchmark_net(dims, weights_dir=weights_dir, retrain=True, log=log)
    import monai
    import torch

    from napari_unet.models.files import package_versions

    chosen = cases or (QUICK if quick else QUICK + FULL)
    out: dict[str, Any] = {
        "machine": machine(),
        "versions": {**package_versions(), "monai": monai.__version__},
        "method": METHOD,
        "cases": [],
    }
    out["versions"]["torch"] = torch.__version__
    for name, mode, shape in chosen:
        log(f"running {name} on {device} …")
        case = run_case(name, mode, shape, device, weights_dir=weights_dir, log=log)
        log(
            f"  ours {case['ours_s']} s, MONAI {case['monai_s']} s, speedup {case['speedup']}×, "
            f"Dice {case['dice']} (tile-free: ours {case['dice_ours_tilefree']}, MONAI "
            f"{case['dice_monai_tilefree']}; net vs truth {case['dice_net_truth']}), "
            f"peak +{case['ours_peak_rss_increase_bytes'] / 2**20:.0f} MiB "
            f"(input {case['input_bytes'] / 2**20:.0f} MiB)"
        )
        out["cases"].append(case)
        if partial:
            with open(partial, "w") as f:
                json.dump(out, f, indent=2)
    return out


METHOD = {
    "timing": "each method in its own fresh process (same weights file, same volume), after a "
    "warm-up on a 48x48x24 crop; one timed call each",
    "memory": "in the fresh worker process: peak RSS mark reset (Linux /proc/self/clear_refs "
    "5) just before the call, then VmHWM (/proc/self/status) after it, minus VmRSS before it "
    "(the input volume and the model are already resident). Not ru_maxrss: after fork/exec it "
    "keeps the parent's RSS as a floor that the reset does not lower. "
    "*_peak_over_input_plus_model = (input + model + increase) / (input + model)",
    "net": "preset 'unet' trained by napari_unet.evaluation.bench_nets.train on "
    f"{TRAIN_PHANTOMS} other phantoms; weights cached in the folder named by 'weights'; "
    "dice_net_truth = its tile-free label map vs the phantom's truth",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small cases")
    parser.add_argument("--full-only", action="store_true", help="only the 512×512×128 cases")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--retrain", action="store_true", help="retrain the cached nets")
    parser.add_argument(
        "--weights-dir",
        help=f"cache folder of the trained benchmark nets (default {default_weights_dir()})",
    )
    parser.add_argument("--note", help="free text stored in the JSON (e.g. machine load)")
    parser.add_argument("--json", action="store_true", help="print the JSON result")
    parser.add_argument("--out", help="write the JSON result to this file")
    parser.add_argument("--worker", choices=["ours", "monai"], help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--volume", help=argparse.SUPPRESS)
    parser.add_argument("--labels-out", help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None, *, weights_dir: str | os.PathLike | None = None) -> int:
    """The benchmark's command line (``python -m napari_unet.evaluation.bench --help``).

    Args:
        argv: the arguments; None = ``sys.argv[1:]``.
        weights_dir: default of ``--weights-dir`` (``benchmarks/bench_inference.py``
            passes the repository's ``benchmarks/weights``).

    Returns:
        The exit status.
    """
    args = _parser().parse_args(argv)
    if args.worker:
        r = worker(args.worker, args.weights, args.volume, args.labels_out, args.device)
        print(json.dumps(r))
        return 0
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    result = run_benchmark(
        quick=args.quick,
        device=args.device,
        retrain=args.retrain,
        cases=FULL if args.full_only else None,
        weights_dir=args.weights_dir or weights_dir,
        partial=args.out,
        log=log,
    )
    if args.note:
        result["note"] = args.note
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if args.json:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
