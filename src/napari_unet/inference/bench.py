"""Inference speed: napari_unet's predict_volume vs MONAI's sliding_window_inference.

Both run the same network weights on the same synthetic CT-like volume in one process:

* network: ``preset_spec("unet")`` (MONAI UNet 16-32-64-128, batch norm), seeded random
  init, then a short seeded training on a *different* synthetic volume, so that the label
  maps are non-trivial (an untrained net predicts near-ties and makes Dice meaningless);
* volume: a body ellipse (~40 HU, noise σ 20 HU) in air (-1000 HU) with bright
  "organ" ellipsoids (+340 HU) and dark "lesion" ellipsoids (-210 HU) of fixed voxel size;
* ours: ``predict_volume(model, spec, volume, device="cpu")`` end to end (normalisation,
  tiling, stitching, argmax, label Volume);
* MONAI 3D: the same CT normalisation on the whole volume, then
  ``sliding_window_inference(x, roi_size=spec.patch_size, sw_batch_size=1, predictor=net)``
  with every other argument at its default (overlap 0.25, mode "constant"), then argmax;
* MONAI 2D: the slices along the through-plane axis as a batch ``(N, 1, H, W)`` through
  ``sliding_window_inference`` with the same defaults (roi = the 2D patch), then argmax.

Reported per case: seconds and voxels/s of each, speedup = monai_s / ours_s, Dice between
the two label maps (mean over foreground classes, and per class), Dice of each against a
tile-free reference (the whole volume / whole slices in one forward pass, no tile borders)
and against the phantom's truth, peak resident-memory increase during each call (sampled
every 5 ms), input and model bytes, our tile and batch sizes.

Run: ``python benchmarks/bench_inference.py [--quick] [--json] [--out FILE]`` or
``napari-unet bench [--quick] [--json]`` (both call `run_benchmark`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
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


def train(spec, net, steps: int, seed: int) -> None:
    """A few Adam steps of Dice+CE on random patches of a training phantom."""
    import torch
    from monai.losses import DiceCELoss

    from napari_unet.inference.preprocess import apply_normalization, normalization_params

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dims = spec.spatial_dims
    img, truth = phantom((96, 96, 64), seed + 1)
    x_all = apply_normalization(img, normalization_params(img, spec.normalization)).numpy()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    patch, batch = (32, 32, 32), 2
    if dims == 2:
        patch, batch = (64, 64), 8
    net.train()
    for _ in range(steps):
        xs, ys = [], []
        for _ in range(batch):
            if rng.random() < 0.7:  # centre most patches on foreground
                fg = np.argwhere(truth > 0)
                mid = fg[rng.integers(len(fg))]
            else:
                mid = [rng.integers(0, n) for n in img.shape]
            if dims == 3:
                o = [
                    int(np.clip(m - p // 2, 0, n - p))
                    for m, n, p in zip(mid, img.shape, patch, strict=True)
                ]
                sl = tuple(slice(a, a + p) for a, p in zip(o, patch, strict=True))
            else:
                k = int(mid[2])
                o = [
                    int(np.clip(m - p // 2, 0, n - p))
                    for m, n, p in zip(mid[:2], img.shape[:2], patch, strict=True)
                ]
                sl = (*(slice(a, a + p) for a, p in zip(o, patch, strict=True)), k)
            xs.append(x_all[sl][None])
            ys.append(truth[sl][None].astype(np.int64))
        x, y = torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))
        opt.zero_grad()
        loss_fn(net(x), y).backward()
        opt.step()
    net.eval()


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


class PeakRSS:
    """Peak resident-set increase over a block, sampled every 5 ms (bytes)."""

    def __enter__(self) -> PeakRSS:
        import psutil  # not a dependency of the package; the benchmark needs it

        self._p = psutil.Process()
        self.base = self.peak = self._p.memory_info().rss
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._p.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._p.memory_info().rss)
        self.increase = self.peak - self.base


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


def run_case(name: str, mode: str, shape: tuple[int, int, int], device: str, steps: int) -> dict:
    import torch
    from monai.inferers import sliding_window_inference

    from napari_unet.inference import predict_volume
    from napari_unet.inference.preprocess import apply_normalization, normalization_params
    from napari_unet.io.volume import Volume
    from napari_unet.models import build_model, preset_spec

    dims = 3 if mode == "3d" else 2
    spec = preset_spec("unet", spatial_dims=dims, labels=["organ", "lesion"], modality="CT")
    torch.manual_seed(0)
    net = build_model(spec)
    t = time.perf_counter()
    train(spec, net, steps, seed=0)
    train_s = time.perf_counter() - t
    img, truth = phantom(shape, seed=42)
    vol = Volume(img, np.diag([0.8, 0.8, 2.0, 1.0]), modality="CT")  # through-plane axis 2
    dev = torch.device(device)
    net.to(dev)
    warm = Volume(img[:48, :48, :24].copy(), vol.affine, modality="CT")
    predict_volume(net, spec, warm, device=device)  # warm-up (allocator, oneDNN kernels)

    with PeakRSS() as mem_ours:
        t = time.perf_counter()
        pred = predict_volume(net, spec, vol, device=device)
        ours_s = time.perf_counter() - t
    ours = pred.labels.array

    def monai_run() -> np.ndarray:
        x = apply_normalization(img, normalization_params(img, spec.normalization))
        # 3D: (1, 1, I, J, K); 2D: the slices along axis 2 as a batch (N, 1, I, J)
        x = x[None, None] if dims == 3 else x.permute(2, 0, 1)[:, None]
        with torch.inference_mode():
            t = time.perf_counter()
            y = sliding_window_inference(x.to(dev), spec.patch_size, 1, net)
            swi_s.append(time.perf_counter() - t)
            lab = y.argmax(1).to(torch.uint8).cpu().numpy()
        return lab[0] if dims == 3 else np.moveaxis(lab, 0, 2)

    swi_s: list[float] = []
    with PeakRSS() as mem_monai:
        t = time.perf_counter()
        ref = monai_run()
        monai_s = time.perf_counter() - t
    # Tile-free reference: the whole volume (3D) or whole slices (2D) in one forward pass,
    # so no tile borders at all. Shows how far each tiled answer is from it.
    with torch.inference_mode():
        x = apply_normalization(img, normalization_params(img, spec.normalization))
        if dims == 3:
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
        full = full[: shape[0], : shape[1], : shape[2]].astype(np.uint8)
        del x
    nvox = int(np.prod(shape))
    model_bytes = sum(p.numel() * p.element_size() for p in net.parameters())
    return {
        "name": name,
        "mode": mode,
        "shape": list(shape),
        "device": str(pred.device),
        "ours_s": round(ours_s, 3),
        "monai_s": round(monai_s, 3),
        "speedup": round(monai_s / ours_s, 2),
        "monai_sliding_window_only_s": round(swi_s[0], 3),
        "speedup_vs_sliding_window_only": round(swi_s[0] / ours_s, 2),
        "dice": round(dice(ours, ref, 2), 4),
        "ours_voxels_per_s": round(nvox / ours_s),
        "monai_voxels_per_s": round(nvox / monai_s),
        "dice_per_class": [round(dice(ours == c, ref == c, 1), 4) for c in (1, 2)],
        "dice_ours_tilefree": round(dice(ours, full, 2), 4),
        "dice_monai_tilefree": round(dice(ref, full, 2), 4),
        "dice_ours_truth": round(dice(ours, truth, 2), 4),
        "dice_monai_truth": round(dice(ref, truth, 2), 4),
        "input_bytes": int(img.nbytes),
        "model_bytes": int(model_bytes),
        "ours_peak_rss_increase_bytes": int(mem_ours.increase),
        "monai_peak_rss_increase_bytes": int(mem_monai.increase),
        "ours_peak_over_input": round(mem_ours.increase / img.nbytes, 2),
        "ours_tile": pred.info["tile"],
        "ours_batch_size": pred.info["batch_size"],
        "ours_n_tiles": pred.info["n_tiles"],
        "precision": pred.info["precision"],
        "monai_roi": list(spec.patch_size),
        "monai_args": "sw_batch_size=1, defaults otherwise",
        "train_steps": steps,
        "train_s": round(train_s, 1),
    }


def run_benchmark(
    *,
    quick: bool = False,
    device: str = "cpu",
    steps: int = 100,
    cases: list | None = None,
    log=print,
    partial: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark cases; returns the JSON-ready result (DESIGN.md `bench` keys)."""
    import monai
    import torch

    from napari_unet.models.files import package_versions

    chosen = cases or (QUICK if quick else QUICK + FULL)
    out: dict[str, Any] = {
        "machine": machine(),
        "versions": {**package_versions(), "monai": monai.__version__},
        "cases": [],
    }
    out["versions"]["torch"] = torch.__version__
    for name, mode, shape in chosen:
        log(f"running {name} on {device} …")
        case = run_case(name, mode, shape, device, steps)
        log(
            f"  ours {case['ours_s']} s, MONAI {case['monai_s']} s, speedup {case['speedup']}×, "
            f"Dice {case['dice']}, peak +{case['ours_peak_rss_increase_bytes'] / 2**20:.0f} MiB "
            f"(input {case['input_bytes'] / 2**20:.0f} MiB)"
        )
        out["cases"].append(case)
        if partial:
            with open(partial, "w") as f:
                json.dump(out, f, indent=2)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small cases")
    parser.add_argument("--full-only", action="store_true", help="only the 512×512×128 cases")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=100, help="training steps of the net")
    parser.add_argument("--json", action="store_true", help="print the JSON result")
    parser.add_argument("--out", help="write the JSON result to this file")
    args = parser.parse_args(argv)
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    result = run_benchmark(
        quick=args.quick,
        device=args.device,
        steps=args.steps,
        cases=FULL if args.full_only else None,
        partial=args.out,
        log=log,
    )
    text = json.dumps(result, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    if args.json:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
