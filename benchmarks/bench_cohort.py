"""Cohort throughput: scans per minute with 1 and 2 workers, and the per-case overhead of
calling ``napari-unet predict`` once per scan instead.

Every figure is wall time of a fresh ``napari-unet`` process, as a user would run it:

* ``per_scan_cli``: ``napari-unet predict MODEL SCAN -o OUT.nii.gz`` once per scan
  (each call starts Python, imports torch and MONAI, loads the model, predicts);
* ``cohort_w1``: ``napari-unet predict MODEL SCANS/ -o OUT/ --workers 1`` (in this
  process, model loaded once, torch on all cores);
* ``cohort_w2``: the same with ``--workers 2`` (a Dask LocalCluster of 2 processes with
  one torch thread each; the cluster's start is included).

The per-case overhead saved is ``(per_scan_cli - cohort_w1) / N``; the records of the
cohort runs split each case into network time (``predict_seconds``) and the rest.

    python benchmarks/bench_cohort.py [--scans 12] [--shape 128 128 40] [--device cpu]

Writes benchmarks/results/cohort_<device>.json (machine, versions, sizes, figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    import dask
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    try:
        import distributed

        dist_version = distributed.__version__
    except ImportError:
        dist_version = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other jobs on the machine
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "dask": dask.__version__,
        "distributed": dist_version,
    }


def make_scans(folder: Path, n: int, shape: tuple[int, int, int]) -> list[Path]:
    """MR-like scans (a bright ellipsoid in noise), 1×1×3 mm, each a little different."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n):
        rng = np.random.default_rng(k)
        grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
        r = 0.4 + 0.1 * rng.random()
        ball = sum(g**2 for g in grid) < r**2
        image = (100 + 300 * ball + rng.normal(0, 20, shape)).astype(np.float32)
        path = folder / f"scan{k:03d}.nii.gz"
        nib.save(nib.Nifti1Image(image, np.diag([1.0, 1.0, 3.0, 1.0])), path)
        paths.append(path)
    return paths


def run(args: list[str]) -> tuple[float, str]:
    """Wall time of ``napari-unet ARGS`` in a fresh process, and its stdout."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "napari_unet.cli", *args], capture_output=True,
                          text=True)  # fmt: skip
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"napari-unet {' '.join(args[:2])} failed: {done.stderr[-2000:]}")
    return wall, done.stdout


def cohort_figures(wall: float, stdout: str, n: int) -> dict:
    summary = json.loads(stdout.strip().splitlines()[-1])
    predict = [r["predict_seconds"] for r in summary["records"] if r["status"] == "done"]
    return {
        "wall_s": round(wall, 2),
        "scans_per_minute": round(60.0 * n / wall, 2),
        "run_seconds": summary["seconds"],
        "workers": summary["workers"],
        "model_loads": summary["model_loads"],
        "network_s_per_scan_median": round(statistics.median(predict), 3),
        "other_s_per_scan": round((wall - sum(predict) / max(summary["workers"], 1)) / n, 3),
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=12)
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 128, 40))
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--per-scan", type=int, default=None,
                        help="scans timed one CLI call each (default: all)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None)
    opts = parser.parse_args()
    n, shape = opts.scans, tuple(opts.shape)
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="bench-cohort-") as tmp:
        root = Path(tmp)
        scans = make_scans(root / "scans", n, shape)
        model = root / "model.safetensors"
        run(["new-model", str(model), "--dims", "2", "--labels", "ball", "--modality", "MR"])
        device = ["--device", opts.device]
        results: dict = {}

        per_scan = scans[: opts.per_scan or n]
        walls = []
        for k, scan in enumerate(per_scan):
            wall, _ = run(["predict", str(model), str(scan), "-o",
                           str(root / f"single{k:03d}.nii.gz"), *device])  # fmt: skip
            walls.append(wall)
        results["per_scan_cli"] = {
            "scans": len(per_scan),
            "wall_s_per_scan_median": round(statistics.median(walls), 3),
            "wall_s_per_scan_mean": round(statistics.mean(walls), 3),
            "scans_per_minute": round(60.0 * len(walls) / sum(walls), 2),
        }
        print("per-scan CLI:", results["per_scan_cli"], flush=True)
        for workers in (1, 2):
            out = root / f"cohort_w{workers}"
            wall, stdout = run(["predict", str(model), str(root / "scans"), "-o", str(out),
                                "--workers", str(workers), "--json", *device])  # fmt: skip
            results[f"cohort_w{workers}"] = cohort_figures(wall, stdout, n)
            print(f"cohort, {workers} worker(s):", results[f"cohort_w{workers}"], flush=True)

    single = results["per_scan_cli"]["wall_s_per_scan_mean"]
    w1, w2 = results["cohort_w1"], results["cohort_w2"]
    report = {
        "benchmark": "cohort",
        "machine": {**machine(), "load_average_1min_before": load_before},
        "device": opts.device,
        "scans": n,
        "shape": list(shape),
        "model": "recommended 2D U-Net (new-model --dims 2), untrained weights",
        "results": results,
        "overhead_saved_s_per_scan": round(single - w1["wall_s"] / n, 3),
        "speedup_w1_vs_per_scan_cli": round(single * n / w1["wall_s"], 2),
        "speedup_w2_vs_w1": round(w1["wall_s"] / w2["wall_s"], 2),
        "note": (
            "wall times of fresh processes; cohort_w2 includes starting a 2-process Dask "
            "LocalCluster (one torch thread per worker) while cohort_w1 runs torch on all "
            "cores in one process"
        ),
    }
    out = opts.out or RESULTS / f"cohort_{opts.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "results"}, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
