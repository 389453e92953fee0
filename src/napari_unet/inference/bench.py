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
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

QUICK = [("3d-128x128x64", "3d", (128, 128, 64)), ("2d-128x128x64", "2d", (128, 128, 64))]
FULL = [("3d-512x512x128", "3d", (512, 512, 128)), ("2d-512x512x128", "2d", (512, 512, 128))]


def phantom(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like float32 volume (HU) and its uint8 truth (1 organ, 2 lesion), (i, j, k).

    Structures have fixed sizes in voxels (organs: radii 8–16, lesions: 4–7), their number
    grows with the volume, so the training phantom and every test size look alike.
    """
    rng = np.random.default_rng(seed)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    c = [(n - 1) / 2 for n in shape]

    def ellipsoid(center, radii):
        return sum(((g - m) / r) ** 2 for g, m, r in zip(grids, center, radii, strict=True)) <= 1

    body = ellipsoid(c, [0.47 * n for n in shape])
    truth = np.zeros(shape, np.uint8)
    n_organs = max(3, int(np.prod(shape) / 60_000))
    for _ in range(n_organs):
        center = [rng.uniform(0.15, 0.85) * n for n in shape]
        truth[ellipsoid(center, rng.uniform(8, 16, 3)) & body] = 1
    for _ in range(n_organs):
        center = [rng.uniform(0.15, 0.85) * n for n in shape]
        truth[ellipsoid(center, rng.uniform(4, 7, 3)) & body] = 2
    hu = np.where(body, 40.0, -1000.0) + np.choose(truth, [0.0, 300.0, -250.0])
    hu = hu + rng.normal(0, 20, shape)
    return hu.astype(np.float32), truth


_REPO_BENCH = Path(__file__).resolve().parents[3] / "benchmarks"
# the committed weights in a source checkout; a user cache for an installed package
WEIGHTS_DIR = (
    _REPO_BENCH / "weights"
    if _REPO_BENCH.is_dir()
    else Path.home() / ".cache" / "napari_unet" / "bench-weights"
)
TRAIN_STEPS = {3: 3000, 2: 3000}  # enough for Dice >= 0.99 vs truth (see lineage)
TRAIN_PHANTOMS = 32  # different seeds from the test volume's (42)
TRAIN_LR = 1e-2  # one-cycle peak
TRAIN_BATCH = 8  # both 3D (32³ patches) and 2D (the spec's 96² patch)


def train(spec, net, steps: int, seed: int, log=None) -> list[float]:
    """Adam + one-cycle learning rate (peak `TRAIN_LR`), Dice+CE, on random patches of
    `TRAIN_PHANTOMS` phantoms.

    Patches are centred on organ, lesion or any voxel with equal odds (the lesion class is
    small; uniform sampling leaves it under-learned). 3D: 32³ patches; 2D: the spec's 96²
    patch; batch `TRAIN_BATCH` for both (batch 2 and 4 phantoms left the 3D net at Dice
    0.93 vs truth, the lesion borders under-segmented). Returns the loss of every step.
    """
    import torch
    from monai.losses import DiceCELoss

    from napari_unet.inference.preprocess import apply_normalization, normalization_params

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dims = spec.spatial_dims
    data = []
    for i in range(TRAIN_PHANTOMS):
        img, truth = phantom((96, 96, 64), seed + 1 + i)
        x_all = apply_normalization(img, normalization_params(img, spec.normalization)).numpy()
        where = [np.argwhere(truth == c) for c in (1, 2)]
        data.append((x_all, truth, where))
    # batch=True: Dice over the whole batch, so a class absent from one patch does not
    # add a noisy ~1 loss term for that sample
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    opt = torch.optim.Adam(net.parameters(), lr=TRAIN_LR)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=TRAIN_LR, total_steps=max(steps, 1))
    patch, batch = (32, 32, 32), TRAIN_BATCH
    if dims == 2:
        patch = tuple(spec.patch_size)
    losses: list[float] = []
    net.train()
    for step in range(steps):
        xs, ys = [], []
        for _ in range(batch):
            x_all, truth, where = data[rng.integers(len(data))]
            kind = rng.integers(3)
            if kind < 2 and len(where[kind]):
                mid = where[kind][rng.integers(len(where[kind]))]
            else:
                mid = [rng.integers(0, n) for n in truth.shape]
            if dims == 3:
                o = [
                    int(np.clip(m - p // 2, 0, n - p))
                    for m, n, p in zip(mid, truth.shape, patch, strict=True)
                ]
                sl = tuple(slice(a, a + p) for a, p in zip(o, patch, strict=True))
            else:
                k = int(mid[2])
                o = [
                    int(np.clip(m - p // 2, 0, n - p))
                    for m, n, p in zip(mid[:2], truth.shape[:2], patch, strict=True)
                ]
                sl = (*(slice(a, a + p) for a, p in zip(o, patch, strict=True)), k)
            xs.append(x_all[sl][None])
            ys.append(truth[sl][None].astype(np.int64))
        x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log and (step + 1) % 100 == 0:
            log(f"  train step {step + 1}/{steps}: loss {np.mean(losses[-100:]):.4f}")
    net.eval()
    return losses


def tile_free(net, spec, img: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Labels of one forward pass over the whole volume (3D) or whole slices along axis 2
    (2D, 8 at a time): no tile borders at all."""
    import torch

    from napari_unet.inference.preprocess import apply_normalization, normalization_params

    dev = torch.device(device)
    shape = img.shape
    with torch.inference_mode():
        x = apply_normalization(img, normalization_params(img, spec.normalization))
        if spec.spatial_dims == 3:
            full = net(_pad8(x, 3)[None, None].to(dev)).argmax(1)[0].cpu().numpy()
        else:
            xs = _pad8(x.permute(2, 0, 1), 2)[:, None]
            full = np.concatenate(
                [
                    net(xs[i : i + 8].to(dev)).argmax(1).cpu().numpy()
                    for i in range(0, xs.shape[0], 8)
                ]
            )
            full = np.moveaxis(full, 0, 2)
    return full[: shape[0], : shape[1], : shape[2]].astype(np.uint8)


def benchmark_net(dims: int, *, steps: int | None = None, retrain: bool = False, log=print):
    """The benchmark's trained network: loaded from ``benchmarks/weights/`` when there (and
    trained with the same recipe), else trained and cached there. Returns (net, spec,
    lineage, path)."""
    import torch

    from napari_unet.models import build_model, preset_spec
    from napari_unet.models.files import load_model, read_model_header, save_model

    steps = TRAIN_STEPS[dims] if steps is None else steps
    spec = preset_spec("unet", spatial_dims=dims, labels=["organ", "lesion"], modality="CT")
    path = WEIGHTS_DIR / f"phantom-unet-{dims}d.safetensors"
    recipe = {
        "recipe": "napari_unet.inference.bench.train",
        "steps": steps,
        "seed": 0,
        "phantoms": TRAIN_PHANTOMS,
        "lr": TRAIN_LR,
        "batch": TRAIN_BATCH,
        "loss": "DiceCE(batch=True)",
    }
    if path.exists() and not retrain:
        lineage = read_model_header(path)["lineage"]
        if all(lineage.get(k) == v for k, v in recipe.items()):
            loaded = load_model(path)
            return loaded.model.eval(), loaded.spec, loaded.lineage, path
        log(f"{path.name}: recorded recipe differs, retraining")
    torch.manual_seed(0)
    net = build_model(spec)
    log(f"training the {dims}D benchmark net ({steps} steps) …")
    t = time.perf_counter()
    losses = train(spec, net, steps, seed=0, log=log)
    train_s = time.perf_counter() - t
    # The net's own quality, tile-free, on a held-out phantom (the benchmark volume's seed).
    img, truth = phantom((128, 128, 64), seed=42)
    full = tile_free(net, spec, img)
    lineage = {
        **recipe,
        "train_s": round(train_s, 1),
        "final_loss": round(float(np.mean(losses[-50:])), 4),
        "dice_vs_truth_128x128x64": round(dice(full, truth, 2), 4),
        "dice_per_class_vs_truth_128x128x64": [
            round(dice(full == c, truth == c, 1), 4) for c in (1, 2)
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(path, net, spec, lineage)
    log(f"  saved {path} ({path.stat().st_size / 2**20:.1f} MiB): {lineage}")
    return net, spec, lineage, path


def _pad8(x, n_axes: int):
    """Zero-pad the trailing ``n_axes`` axes to multiples of 8 (the UNet's stride)."""
    import torch.nn.functional as F

    pads = []
    for n in reversed(x.shape[-n_axes:]):
        pads += [0, -n % 8]
    return F.pad(x, pads)


def dice(a: np.ndarray, b: np.ndarray, classes: int) -> float:
    """Mean Dice over foreground classes present in either map."""
    scores = []
    for c in range(1, classes + 1):
        x, y = a == c, b == c
        s = x.sum() + y.sum()
        if s:
            scores.append(2.0 * np.logical_and(x, y).sum() / s)
    return float(np.mean(scores)) if scores else 1.0


def machine() -> dict[str, Any]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _worker(method: str, weights: str, volume: str, labels_out: str, device: str) -> dict:
    """One measurement in a fresh process: load the net and the volume, warm up, reset the
    peak-RSS mark, run ``method`` ("ours" or "monai") once, timed; return seconds and the
    peak resident memory (VmHWM; ``ru_maxrss`` where /proc is missing) above the pre-call
    RSS."""
    import resource

    import torch
    from monai.inferers import sliding_window_inference

    from napari_unet.inference import predict_volume
    from napari_unet.inference.preprocess import apply_normalization, normalization_params
    from napari_unet.io.volume import Volume
    from napari_unet.models.files import load_model

    loaded = load_model(weights, device=device)
    net, spec = loaded.model.eval(), loaded.spec
    dims = spec.spatial_dims
    dev = torch.device(device)
    img = np.load(volume)
    affine = np.diag([0.8, 0.8, 2.0, 1.0])  # through-plane axis 2

    def ours(a: np.ndarray) -> tuple[np.ndarray, dict]:
        pred = predict_volume(net, spec, Volume(a, affine, modality="CT"), device=device)
        return pred.labels.array, {**pred.info, "device": str(pred.device)}

    swi: list[float] = []

    def monai(a: np.ndarray) -> tuple[np.ndarray, dict]:
        x = apply_normalization(a, normalization_params(a, spec.normalization))
        # 3D: (1, 1, I, J, K); 2D: the slices along axis 2 as a batch (N, 1, I, J)
        x = x[None, None] if dims == 3 else x.permute(2, 0, 1)[:, None]
        with torch.inference_mode():
            t = time.perf_counter()
            y = sliding_window_inference(x.to(dev), spec.patch_size, 1, net)
            swi.append(time.perf_counter() - t)
            lab = y.argmax(1).to(torch.uint8).cpu().numpy()
        return (lab[0] if dims == 3 else np.moveaxis(lab, 0, 2)), {"device": str(dev)}

    fn = ours if method == "ours" else monai
    fn(img[:48, :48, :24].copy())  # warm-up (allocator, oneDNN kernels), both methods alike
    swi.clear()
    rss_before = (_status_kib("VmRSS") or 0) * 1024
    reset = _reset_peak()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t = time.perf_counter()
    labels, info = fn(img)
    seconds = time.perf_counter() - t
    # VmHWM is this process's own peak mark, which the reset above lowers. ru_maxrss is no
    # use after a reset: it is max(VmHWM, a mark inherited at fork/exec from the parent,
    # i.e. the benchmark driver's RSS), which clear_refs does not touch.
    hwm = _status_kib("VmHWM")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = hwm * 1024 if (hwm is not None and reset) else maxrss
    np.save(labels_out, labels)
    return {
        "seconds": seconds,
        "sliding_window_only_s": swi[0] if swi else None,
        "rss_before": rss_before,
        "peak_rss": peak,
        "ru_maxrss": maxrss,
        # without the reset the mark may be left over from loading/warm-up (then it is
        # an upper bound of the pre-call state, and the increase is a lower bound)
        "peak_reset": reset or maxrss_before <= rss_before,
        "info": info,
    }


def _measure(method: str, weights: Path, volume: str, tmp: str, device: str) -> tuple:
    import subprocess

    out = os.path.join(tmp, f"{method}-labels.npy")
    cmd = [
        sys.executable,
        "-m",
        "napari_unet.inference.bench",
        "--worker",
        method,
        "--weights",
        str(weights),
        "--volume",
        volume,
        "--labels-out",
        out,
        "--device",
        device,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{method} worker failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1]), np.load(out)


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
        m_ours, ours = _measure("ours", weights, volume, tmp, device)
        m_monai, ref = _measure("monai", weights, volume, tmp, device)
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
    steps: int | None = None,
    cases: list | None = None,
    log=print,
    partial: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark cases; returns the JSON-ready result (DESIGN.md `bench` keys).

    ``steps`` is accepted for older callers and ignored: the nets are the cached, trained
    ones of `benchmark_net` (``TRAIN_STEPS``); retrain them with ``--retrain``.
    """
    if steps is not None and steps not in TRAIN_STEPS.values():
        log(f"steps={steps} ignored: the benchmark uses its cached trained nets {TRAIN_STEPS}")
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
    "net": "preset 'unet' trained by napari_unet.inference.bench.train on 4 other phantoms; "
    "weights cached in benchmarks/weights/; dice_net_truth = its tile-free label map vs the "
    "phantom's truth",
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
        r = _worker(args.worker, args.weights, args.volume, args.labels_out, args.device)
        print(json.dumps(r))
        return 0
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    if args.retrain:
        for dims in (3, 2):
            benchmark_net(dims, retrain=True, log=log)
    result = run_benchmark(
        quick=args.quick,
        device=args.device,
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
