"""The benchmark's networks and data: a CT-like phantom with known truth, the training
recipe of the cached nets (benchmarks/weights/), a tile-free reference pass, Dice.

Used by `napari_unet.inference.bench`; the recipe name recorded in the weights' lineage
(``napari_unet.inference.bench.train``) is this module's `train`, re-exported there.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np


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
