"""Inference speed: napari_unet's predict_volume vs MONAI's sliding_window_inference.

Both run the same network weights on the same synthetic CT-like volume:

* network: ``preset_spec("unet")`` (MONAI UNet 16-32-64-128, batch norm) trained to
  convergence by `train` (Dice+CE with batch-wide Dice, Adam, one-cycle learning rate
  peaking at 1e-2, batch 8 of 32³ patches for 3000 steps 3D / of 96² slices for 3000
  steps 2D) on 32 phantoms other than the test volume, to Dice ≥ 0.99 vs truth tile-free
  on the test volume, and cached with its lineage (recipe, final loss, Dice vs truth) in
  ``benchmarks/weights/phantom-unet-{2,3}d.safetensors``, so that reruns are fast and use
  the very same weights. A weak net (the earlier 100-step one had Dice 0.5 vs truth; the
  800-step batch-2 one 0.93) flips labels on small context changes and measures
  tile-border noise, not the inference engine; ``dice_net_truth`` in the results shows
  the net is a real segmenter of the phantom;
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
(input + model + increase) / (input + model), our tile and batch sizes.

Run: ``python benchmarks/bench_inference.py [--quick] [--retrain] [--json] [--out FILE]``
or ``napari-unet bench [--quick] [--json]`` (both call `run_benchmark`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

from napari_unet.inference.bench_measure import machine, measure, worker
from napari_unet.inference.bench_nets import (  # noqa: F401 - train: the recipe's name
    TRAIN_PHANTOMS,
    benchmark_net,
    dice,
    phantom,
    tile_free,
    train,
)

QUICK = [("3d-128x128x64", "3d", (128, 128, 64)), ("2d-128x128x64", "2d", (128, 128, 64))]
FULL = [("3d-512x512x128", "3d", (512, 512, 128)), ("2d-512x512x128", "2d", (512, 512, 128))]


def run_case(name: str, mode: str, shape: tuple[int, int, int], device: str, log=print) -> dict:
    """One case: each method in its own fresh process (timing and peak memory), then the
    Dice of the two label maps, of each against the tile-free reference and the truth."""
    import tempfile

    dims = 3 if mode == "3d" else 2
    net, spec, lineage, weights = benchmark_net(dims, log=log)
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
    base = img.nbytes + model_bytes

    def mem(m: dict) -> dict:
        inc = int(m["peak_rss"] - m["rss_before"])
        return {"increase": inc, "ratio": round((base + inc) / base, 2), "exact": m["peak_reset"]}

    mo, mm = mem(m_ours), mem(m_monai)
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
        "dice": round(dice(ours, ref, 2), 4),
        "ours_voxels_per_s": round(nvox / ours_s),
        "monai_voxels_per_s": round(nvox / monai_s),
        "dice_per_class": [round(dice(ours == c, ref == c, 1), 4) for c in (1, 2)],
        "dice_ours_tilefree": round(dice(ours, full, 2), 4),
        "dice_monai_tilefree": round(dice(ref, full, 2), 4),
        "dice_net_truth": round(dice(full, truth, 2), 4),
        "dice_net_truth_per_class": [round(dice(full == c, truth == c, 1), 4) for c in (1, 2)],
        "dice_ours_truth": round(dice(ours, truth, 2), 4),
        "dice_monai_truth": round(dice(ref, truth, 2), 4),
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
        "weights": f"benchmarks/weights/{weights.name}",
        "train_steps": lineage.get("steps"),
        "train_s": lineage.get("train_s"),
    }


def run_benchmark(
    *,
    quick: bool = False,
    device: str = "cpu",
    retrain: bool = False,
    cases: list | None = None,
    log=print,
    partial: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark cases; returns the JSON-ready result (DESIGN.md `bench` keys).

    The nets are the cached, trained ones of `benchmark_net`; ``retrain`` trains them
    again first (a few minutes each on 2 CPU cores).
    """
    if retrain:
        for dims in (3, 2):
            benchmark_net(dims, retrain=True, log=log)
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
        case = run_case(name, mode, shape, device, log=log)
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
    "net": "preset 'unet' trained by napari_unet.inference.bench.train on "
    f"{TRAIN_PHANTOMS} other phantoms; weights cached in benchmarks/weights/; "
    "dice_net_truth = its tile-free label map vs the phantom's truth",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small cases")
    parser.add_argument("--full-only", action="store_true", help="only the 512×512×128 cases")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--retrain", action="store_true", help="retrain the cached nets")
    parser.add_argument("--note", help="free text stored in the JSON (e.g. machine load)")
    parser.add_argument("--json", action="store_true", help="print the JSON result")
    parser.add_argument("--out", help="write the JSON result to this file")
    parser.add_argument("--worker", choices=["ours", "monai"], help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--volume", help=argparse.SUPPRESS)
    parser.add_argument("--labels-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
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
