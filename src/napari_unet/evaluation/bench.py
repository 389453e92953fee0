"""Inference speed: napari_unet's predict_volume against MONAI, with its defaults and as a
knowledgeable user tunes it, side by side in one run.

All methods run the same network weights on the same synthetic CT-like volume, on the
same device, under the same dtype, and end in the same post-processing (argmax to
uint8, `baselines.to_labels`):

* network: ``preset_spec("unet")`` (MONAI UNet 16-32-64-128, batch norm), trained to
  convergence by `bench_nets.train` on 32 phantoms other than the test volume and
  cached with its lineage (see `bench_nets`); ``dice_net_truth`` shows it is a real
  segmenter of the phantom;
* volume: a body ellipse (~40 HU, noise σ 20 HU) in air (-1000 HU) with bright
  "organ" and dark "lesion" ellipsoids of fixed voxel size (`bench_nets.phantom`);
* ``ours``: ``predict_volume(model, spec, volume, device=…, precision=…)`` end to end;
* ``monai`` (defaults): the CT normalisation of the whole volume, then
  ``sliding_window_inference(x, roi_size=spec.patch_size, sw_batch_size=1)`` with every
  other argument at its default (overlap 0.25, mode "constant"); 2D: the slices along
  the through-plane axis as a batch through the same call with the 2D patch;
* ``monai_tuned``: 3D: ``sliding_window_inference`` with ``roi_size`` = our tile,
  128×128×64, 80×80×128 (the fastest MONAI window of earlier runs) and the patch (each
  clipped to the volume), ``sw_batch_size`` = 4, cuDNN autotuning on CUDA; 2D: whole
  slices straight through the net (`baselines.slices_batched`) in batches of 1, 2, 4 and
  16 (16 and 64 on a GPU). The fastest candidate is ``monai_tuned_s``; all are listed
  under ``monai_tuned_candidates``.

Timing (`timing.timed_calls`): each method (each tuned candidate) in its own fresh
process: load the weights and the volume, one warm-up call on the whole volume (its time
is ``*_first_s``), then ``repeats`` (≥ 3) timed calls; ``*_s`` is their median and
``*_runs_s`` all of them. CUDA is synchronised before and after every call; peak GPU
memory is torch's ``max_memory_allocated`` above what was allocated before the call.
Peak host memory: the kernel's peak-RSS mark is reset before every timed call and read
after it (VmHWM), the largest increase is reported.

Arithmetic (`flops`): FLOPs per voxel of each net by torch's ``FlopCounterMode``; a
method's effective GFLOP/s is one tile-free pass's FLOPs over the whole volume divided
by its median time; the conv peak is a plain ``Conv3d``/``Conv2d`` (16–64 channels,
3×3(×3)) timed in a fresh process of the same run, same device and dtype.

Agreement: ``dice`` is ours vs MONAI defaults (DESIGN.md), ``dice_vs_tuned`` ours vs the
fastest tuned candidate; each map is also compared with a tile-free reference (the whole
volume, or whole slices, in one forward pass: no tile borders) and with the phantom's
truth. Cases with ``tiled`` true cut the volume into several tiles, so
``dice_ours_tilefree`` there tests the claim that our tiling gives the one-pass answer.
Every Dice is `evaluation.metrics.dice_per_class` (mean over the two foreground classes).

Run: ``python benchmarks/bench_inference.py [--quick] [--device cuda] [--repeats N]
[--precision P] [--json] [--out FILE]`` or ``napari-unet bench [--quick] [--json]`` (both
call `run_benchmark`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import numpy as np

from napari_unet.evaluation.bench_figures import (
    agreement_figures,
    arithmetic_figures,
    candidate,
    display_path,
    memory_figures,
    tiling_figures,
    timing_figures,
)
from napari_unet.evaluation.bench_nets import (
    TRAIN_PHANTOMS,
    Log,
    benchmark_net,
    default_weights_dir,
    phantom,
    tile_free,
)
from napari_unet.evaluation.timing import machine, measure, measure_methods, serve, worker

#: (name, mode, shape). ``3d-256x256x96`` is larger than one CPU tile: it really tiles.
QUICK = [
    ("3d-128x128x64", "3d", (128, 128, 64)),
    ("3d-256x256x96", "3d", (256, 256, 96)),
    ("2d-128x128x64", "2d", (128, 128, 64)),
]
#: The issue's 512×512×128 cases, and a 2D case whose slices need several tiles.
FULL = [
    ("3d-512x512x128", "3d", (512, 512, 128)),
    ("2d-512x512x128", "2d", (512, 512, 128)),
    ("2d-1536x1536x16", "2d", (1536, 1536, 16)),
]
#: Added on CUDA: the GPU targets' 512×512×300.
GPU = [("3d-512x512x300", "3d", (512, 512, 300)), ("2d-512x512x300", "2d", (512, 512, 300))]
#: Windows a knowledgeable MONAI user tries besides our tile and the patch (clipped to
#: the volume): a larger slab, and the fastest MONAI window of earlier runs on the 512
#: cases (our tile of then), kept so that a change of our tile does not change the peer.
TUNED_ROIS = ((128, 128, 64), (80, 80, 128))
TUNED_SW_BATCH = 4


def tuned_candidates(mode: str, shape, our_tile, device: str, patch=None) -> list[dict[str, Any]]:
    """The tuned MONAI settings tried for a case (see the module docstring)."""
    if mode == "2d":
        return [{"batch": b} for b in ((16, 64) if device.startswith("cuda") else (1, 2, 4, 16))]
    rois = [list(our_tile)]
    for roi in (*TUNED_ROIS, *([patch] if patch is not None else [])):
        clipped = [min(r, -(-n // 8) * 8) for r, n in zip(roi, shape, strict=True)]
        if clipped not in rois:
            rois.append(clipped)
    return [{"roi_size": roi, "sw_batch_size": TUNED_SW_BATCH} for roi in rois]


def _load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _tile_free_or_none(net, spec, img, device: str, log: Log) -> np.ndarray | None:
    """The tile-free reference, or None when it does not fit in memory."""
    from napari_unet.inference.device import is_oom

    try:
        return tile_free(net.to(device), spec, img, device)
    except Exception as e:
        if not is_oom(e):
            raise
        log(f"  tile-free reference skipped: out of memory ({str(e)[:80]})")
        return None
    finally:
        net.cpu()
        if device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


def run_case(
    name: str,
    mode: str,
    shape: tuple[int, int, int],
    device: str,
    *,
    weights_dir: str | os.PathLike | None = None,
    log: Log = print,
    repeats: int = 3,
    precision: str = "fp32",
    conv_peak: dict[str, Any] | None = None,
    interleave: bool | None = None,
) -> dict[str, Any]:
    """One case: each method (and tuned candidate) in its own fresh process, then the
    ratios, effective GFLOP/s and the Dice of the label maps.

    Args:
        name: the case's name in the results.
        mode: "2d" or "3d".
        shape: the phantom's ``(i, j, k)`` in voxels.
        device: torch device name.
        weights_dir: the benchmark nets' cache folder (see `bench_nets.benchmark_net`).
        log: called with progress lines.
        repeats: timed calls per method after the warm-up.
        precision: a `Precision` for every method.
        conv_peak: the conv peak of this run for ``mode`` (`flops.conv_peak`), if any.
        interleave: time the methods in turn (`timing.measure_methods`); None = on the
            CPU only (GPU processes would share the GPU's memory).

    Returns:
        The case's JSON-ready dict (DESIGN.md `bench` keys and more).
    """
    import tempfile

    dims = 3 if mode == "3d" else 2
    net, spec, lineage, weights = benchmark_net(dims, weights_dir=weights_dir, log=log)
    img, truth = phantom(shape, seed=42)
    if interleave is None:
        interleave = not device.startswith("cuda")

    candidates: list[dict[str, Any]] = []

    def tuned_jobs(ready: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        # tuned MONAI's window is our tile, known from ours' warm-up
        candidates.extend(tuned_candidates(mode, shape, ready[0]["info"]["tile"], device,
                                           patch=list(spec.patch_size)))  # fmt: skip
        return [("monai_tuned", c) for c in candidates]

    with tempfile.TemporaryDirectory() as tmp:
        volume = os.path.join(tmp, "volume.npy")
        np.save(volume, img)
        measured = measure_methods([("ours", None), ("monai", None)], weights, volume, tmp,
                                   device, repeats=repeats, precision=precision,
                                   interleave=interleave, more=tuned_jobs)  # fmt: skip
    (m_ours, ours), (m_monai, ref), *rest = measured
    tuned = [(m, labels, c) for (m, labels), c in zip(rest, candidates, strict=True)]
    m_tuned, tuned_labels, tuned_settings = min(tuned, key=lambda t: t[0]["median_s"])
    full = _tile_free_or_none(net, spec, img, device, log)
    methods = {"ours": m_ours, "monai": m_monai, "monai_tuned": m_tuned}
    case: dict[str, Any] = {"name": name, "mode": mode, "shape": list(shape),
                            "device": m_ours["info"]["device"]}  # fmt: skip
    case.update(timing_figures(methods, tuned_settings, spec))
    case["monai_tuned_candidates"] = [candidate(m, lab, s, ours) for m, lab, s in tuned]
    case.update(agreement_figures(ours, ref, tuned_labels, full, truth))
    case.update(arithmetic_figures(net, spec, shape, methods, conv_peak))
    case.update(tiling_figures(m_ours["info"], methods))
    case.update(memory_figures(methods, img.nbytes, net))
    case.update(weights=display_path(weights), train_steps=lineage.get("steps"),
                train_s=lineage.get("train_s"))  # fmt: skip
    if mode == "2d":
        case["ours_slices_per_s"] = round(shape[2] / case["ours_s"], 1)
        case["monai_tuned_slices_per_s"] = round(shape[2] / case["monai_tuned_s"], 1)
    return case


def run_benchmark(
    *,
    quick: bool = False,
    device: str = "cpu",
    retrain: bool = False,
    cases: list | None = None,
    weights_dir: str | os.PathLike | None = None,
    log: Log = print,
    partial: str | None = None,
    repeats: int = 3,
    precision: str = "fp32",
    interleave: bool | None = None,
) -> dict[str, Any]:
    """Run the benchmark cases; returns the JSON-ready result (DESIGN.md `bench` keys).

    Args:
        quick: only the small cases (`QUICK`).
        device: torch device name.
        retrain: train the benchmark nets again first (minutes each on 2 CPU cores).
        cases: ``(name, mode, shape)`` triples instead of the standard ones.
        weights_dir: where the trained nets are cached; None = a user cache folder
            (`bench_nets.default_weights_dir`), where they are trained on first use.
        log: called with progress lines.
        partial: a JSON file rewritten after every case.
        repeats: timed calls per method after the warm-up (≥ 3 for a reported figure).
        precision: a `Precision` for every method ("fp32" by default; "auto" resolves
            as our engine does, and the baselines use the same dtype).
        interleave: time a case's methods in turn (see `timing.measure_methods`);
            None = on the CPU, not on a GPU.

    Returns:
        ``machine``, ``versions``, ``method``, ``settings``, ``conv_peak``, ``cases``
        (see `run_case`).
    """
    if retrain:
        for dims in (3, 2):
            benchmark_net(dims, weights_dir=weights_dir, retrain=True, log=log)
    import monai
    import torch

    from napari_unet.models.files import package_versions

    gpu = GPU if device.startswith("cuda") else []
    chosen = cases or (QUICK if quick else QUICK + FULL + gpu)
    out: dict[str, Any] = {
        "machine": machine(),
        "versions": {**package_versions(), "monai": monai.__version__, "torch": torch.__version__},
        "method": METHOD,
        "settings": {
            "device": device,
            "repeats": repeats,
            "precision": precision,
            "interleave": (not device.startswith("cuda")) if interleave is None else interleave,
        },
        "conv_peak": {},
        "cases": [],
    }
    if device.startswith("cuda"):
        out["machine"]["device_name"] = torch.cuda.get_device_name(torch.device(device))
    for mode in sorted({m for _, m, _ in chosen}, reverse=True):
        r = measure(device, precision=precision, dims=3 if mode == "3d" else 2)
        out["conv_peak"][mode] = r["info"]
        log(f"conv peak {mode} on {device}: {r['info']['gflops']} GFLOP/s {r['info']}")
    out["machine"]["load_average_before"] = _load_average()
    for name, mode, shape in chosen:
        log(f"running {name} on {device} ({repeats} timed runs each after a warm-up) …")
        before = _load_average()
        case = run_case(name, mode, shape, device, weights_dir=weights_dir, log=log,
                        repeats=repeats, precision=precision, interleave=interleave,
                        conv_peak=out["conv_peak"].get(mode))  # fmt: skip
        _log_case(case, log)
        # a busy machine slows methods unequally (ours does more small operations, each
        # a barrier for the thread pool): the load during the case is part of the result
        case["load_average_before_after"] = [before, _load_average()]
        out["cases"].append(case)
        if partial:
            with open(partial, "w") as f:
                json.dump(out, f, indent=2)
    return out


def _log_case(case: dict[str, Any], log: Log) -> None:
    """One progress line with a case's headline figures."""
    log(
        f"  ours {case['ours_s']} s; MONAI defaults {case['monai_s']} s "
        f"({case['speedup']}×); MONAI tuned {case['monai_tuned_s']} s "
        f"({case['speedup_vs_tuned']}×, {case['monai_tuned']}); Dice {case['dice']} / "
        f"tuned {case['dice_vs_tuned']}; tiled {case['tiled']} ({case['ours_n_tiles']} "
        f"tiles), Dice ours vs tile-free {case['dice_ours_tilefree']}; ours "
        f"{case['ours_gflops']} GFLOP/s = {case['ours_fraction_of_conv_peak']} of the "
        f"conv peak; peak +{case['ours_peak_rss_increase_bytes'] / 2**20:.0f} MiB "
        f"(input {case['input_bytes'] / 2**20:.0f} MiB)"
    )


METHOD = {
    "timing": "each method (each tuned candidate) in its own fresh process (same weights "
    "file, same volume, device and dtype): one warm-up call on the whole volume, then "
    "`repeats` timed calls; *_s is their median, *_runs_s all of them, *_first_s the "
    "warm-up call; CUDA synchronised before and after every call. With settings.interleave "
    "(the CPU default) all processes stay alive and are timed in turn, round r in an order "
    "rotated by r, one computing at a time, so that load changes on a shared machine hit "
    "every method alike",
    "baselines": "monai = sliding_window_inference(roi_size=spec.patch_size, "
    "sw_batch_size=1, other arguments at their defaults); monai_tuned = the fastest of "
    "monai_tuned_candidates: 3D sliding_window_inference with roi_size = our tile, "
    f"{[list(r) for r in TUNED_ROIS]} and the patch (clipped to the volume), "
    f"sw_batch_size={TUNED_SW_BATCH}, cuDNN "
    "autotuning on CUDA; 2D whole slices batched straight through the net. Every method "
    "ends in the same argmax to uint8 (napari_unet.inference.stitch.argmax0); speedup = "
    "monai_s / ours_s, speedup_vs_tuned = monai_tuned_s / ours_s",
    "memory": "peak RSS mark reset (Linux /proc/self/clear_refs 5) before every timed "
    "call, then VmHWM (/proc/self/status) after it, minus VmRSS before it (the input "
    "volume and the model are already resident); the largest of the timed calls. "
    "*_peak_over_input_plus_model = (input + model + increase) / (input + model). "
    "*_peak_gpu_bytes: torch.cuda.max_memory_allocated above the allocation before the call",
    "flops": "flop_per_voxel: torch.utils.flop_counter.FlopCounterMode over one forward "
    "pass (multiply-add = 2); gflop_per_pass = flop_per_voxel x voxels (one tile-free "
    "pass); *_gflops = gflop_per_pass / median seconds; conv_peak: plain Conv3d/Conv2d "
    "c->c (c = 16, 32, 64; 128 measured no faster), 3x3(x3), median of 3 timed calls, "
    "in a fresh process of this run, same device and dtype",
    "net": "preset 'unet' trained by napari_unet.evaluation.bench_nets.train on "
    f"{TRAIN_PHANTOMS} other phantoms; weights cached in the folder named by 'weights'; "
    "dice_net_truth = its tile-free label map vs the phantom's truth",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small cases")
    parser.add_argument("--full-only", action="store_true", help="only the large cases")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after a warm-up")
    parser.add_argument("--precision", default="fp32", help="fp32 (default), auto, bf16, fp16")
    parser.add_argument(
        "--interleave",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time the methods in turn (default: on the CPU, not on a GPU)",
    )
    parser.add_argument("--case", action="append", help="only this case (by name; repeatable)")
    parser.add_argument("--retrain", action="store_true", help="retrain the cached nets")
    parser.add_argument(
        "--weights-dir",
        help=f"cache folder of the trained benchmark nets (default {default_weights_dir()})",
    )
    parser.add_argument("--note", help="free text stored in the JSON (e.g. machine load)")
    parser.add_argument("--json", action="store_true", help="print the JSON result")
    parser.add_argument("--out", help="write the JSON result to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--volume", help=argparse.SUPPRESS)
    parser.add_argument("--labels-out", help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
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
    if args.worker == "conv_peak":
        dims = int(json.loads(args.settings)["dims"])
        print(json.dumps(worker(args.device, precision=args.precision, dims=dims)))
        return 0
    if args.worker:
        serve(args.worker, args.weights, args.volume, args.labels_out, args.device,
              precision=args.precision, settings=json.loads(args.settings))  # fmt: skip
        return 0
    if args.repeats < 1:
        print("bench: --repeats must be >= 1", file=sys.stderr)
        return 2
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("bench: --device cuda but torch sees no CUDA GPU", file=sys.stderr)
            return 2
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    full = FULL + (GPU if args.device.startswith("cuda") else [])
    if args.case:
        known = {c[0]: c for c in QUICK + full}
        unknown = sorted(set(args.case) - set(known))
        if unknown:
            print(f"bench: unknown case(s) {unknown}; choose from {sorted(known)}", file=sys.stderr)
            return 2
        full = [known[c] for c in args.case]
    result = run_benchmark(
        quick=args.quick,
        device=args.device,
        retrain=args.retrain,
        cases=full if args.full_only or args.case else None,
        weights_dir=args.weights_dir or weights_dir,
        partial=args.out,
        log=log,
        repeats=args.repeats,
        precision=args.precision,
        interleave=args.interleave,
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
