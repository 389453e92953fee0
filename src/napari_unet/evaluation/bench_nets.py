"""The inference benchmark's networks and data: a CT-like phantom with known truth, the
training recipe of the cached nets, and a tile-free reference pass.

The trained nets are cached as ``phantom-unet-{2,3}d.safetensors`` in a weights folder
that the caller names (`benchmark_net`'s ``weights_dir``); by default a user cache
folder (`default_weights_dir`), never a path inside the source tree. The repository's
``benchmarks/bench_inference.py`` passes its committed ``benchmarks/weights``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.evaluation.metrics import dice_per_class, mean_dice

TRAIN_STEPS = {3: 3000, 2: 3000}  # enough for Dice >= 0.99 vs truth (see lineage)
TRAIN_PHANTOMS = 32  # different seeds from the test volume's (42)
TRAIN_LR = 1e-2  # one-cycle peak
TRAIN_BATCH = 8  # both 3D (32³ patches) and 2D (the spec's 96² patch)
#: The name of `train` recorded in the cached weights' lineage.
RECIPE = "napari_unet.evaluation.bench_nets.train"
#: Earlier names of the very same recipe (the code moved, the algorithm did not):
#: weights recorded under them are reused, not retrained.
SAME_RECIPE = frozenset({RECIPE, "napari_unet.inference.bench.train"})

Log = Callable[[str], Any]


def default_weights_dir() -> Path:
    """Where the benchmark nets are cached when no folder is given.

    ``$XDG_CACHE_HOME/napari-unet/bench-weights``, else ``~/.cache/napari-unet/bench-weights``.
    """
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "napari-unet" / "bench-weights"


def phantom(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like float32 volume (HU) and its uint8 truth (1 organ, 2 lesion), (i, j, k).

    Structures have fixed sizes in voxels (organs: radii 8–16, lesions: 4–7), their number
    grows with the volume, so the training phantom and every test size look alike. Each
    structure is drawn inside its bounding box only (the same voxels as over the whole
    grid), so making a volume costs time in proportion to its size.

    Args:
        shape: ``(i, j, k)`` in voxels.
        seed: seeds the structures and the noise.
    """
    rng = np.random.default_rng(seed)
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    c = [(n - 1) / 2 for n in shape]
    body = sum(((g - m) / r) ** 2 for g, m, r in zip(grids, c, [0.47 * n for n in shape],
                                                      strict=True)) <= 1  # fmt: skip
    truth = np.zeros(shape, np.uint8)

    def draw(center, radii, label: int) -> None:
        box = tuple(
            slice(max(0, int(np.floor(m - r))), min(n, int(np.ceil(m + r)) + 1))
            for m, r, n in zip(center, radii, shape, strict=True)
        )
        sub = np.ogrid[box]
        inside = sum(((g - m) / r) ** 2 for g, m, r in zip(sub, center, radii, strict=True)) <= 1
        truth[box][inside & body[box]] = label

    n_organs = max(3, int(np.prod(shape) / 60_000))
    for _ in range(n_organs):
        center = [rng.uniform(0.15, 0.85) * n for n in shape]
        draw(center, rng.uniform(8, 16, 3), 1)
    for _ in range(n_organs):
        center = [rng.uniform(0.15, 0.85) * n for n in shape]
        draw(center, rng.uniform(4, 7, 3), 2)
    hu = np.where(body, 40.0, -1000.0) + np.choose(truth, [0.0, 300.0, -250.0])
    hu = hu + rng.normal(0, 20, shape)
    return hu.astype(np.float32), truth


def _training_data(spec, seed: int) -> list[tuple[np.ndarray, np.ndarray, list[np.ndarray]]]:
    """`TRAIN_PHANTOMS` normalised phantoms (seeds ``seed + 1 …``), their truth, and the
    voxel indices of each foreground class."""
    from napari_unet.inference.preprocess import apply_normalization, normalization_params

    data = []
    for i in range(TRAIN_PHANTOMS):
        img, truth = phantom((96, 96, 64), seed + 1 + i)
        x_all = apply_normalization(img, normalization_params(img, spec.normalization)).numpy()
        where = [np.argwhere(truth == c) for c in (1, 2)]
        data.append((x_all, truth, where))
    return data


def _sample_batch(data, rng: np.random.Generator, dims: int, patch: tuple[int, ...]):
    """`TRAIN_BATCH` patches centred on organ, lesion or any voxel with equal odds.

    Returns:
        (x ``(N, 1, *patch)`` float32, y ``(N, 1, *patch)`` int64) as numpy arrays.
    """
    xs, ys = [], []
    for _ in range(TRAIN_BATCH):
        x_all, truth, where = data[rng.integers(len(data))]
        kind = rng.integers(3)
        if kind < 2 and len(where[kind]):
            mid = where[kind][rng.integers(len(where[kind]))]
        else:
            mid = [rng.integers(0, n) for n in truth.shape]
        axes = 3 if dims == 3 else 2  # 2D: an in-plane patch of slice ``mid[2]``
        o = [
            int(np.clip(m - p // 2, 0, n - p))
            for m, n, p in zip(mid[:axes], truth.shape[:axes], patch, strict=True)
        ]
        sl = tuple(slice(a, a + p) for a, p in zip(o, patch, strict=True))
        if dims == 2:
            sl = (*sl, int(mid[2]))
        xs.append(x_all[sl][None])
        ys.append(truth[sl][None].astype(np.int64))
    return np.stack(xs), np.stack(ys)


def train(spec, net, steps: int, seed: int, log: Log | None = None) -> list[float]:
    """Adam + one-cycle learning rate (peak `TRAIN_LR`), Dice+CE, on random patches of
    `TRAIN_PHANTOMS` fully labelled phantoms.

    Patches are centred on organ, lesion or any voxel with equal odds (the lesion class is
    small; uniform sampling leaves it under-learned). 3D: 32³ patches; 2D: the spec's 96²
    patch; batch `TRAIN_BATCH` for both (batch 2 and 4 phantoms left the 3D net at Dice
    0.93 vs truth, the lesion borders under-segmented).

    Why not `training.finetune_steps`: that is the fine-tuning recipe for a user's sparse
    corrections (masked, class-weighted Dice+CE; AdamW with warm-up and cosine decay;
    augmentation; validation and batch-norm recalibration). `TrainConfig` cannot express
    this recipe's optimiser, one-cycle schedule or unweighted ``DiceCELoss(batch=True)``,
    and the cached weights — hence every figure of the benchmark — were trained with it.
    The benchmark compares two inference engines on the same weights; it only needs a
    converged net (Dice ≥ 0.99 vs truth), which this short loop gives.

    Args:
        spec: the net's ModelSpec (``spatial_dims`` 2 or 3).
        net: the network, trained in place.
        steps: optimiser steps.
        seed: seeds torch, the patch sampling and the phantoms (``seed + 1 …``).
        log: called with a progress line every 100 steps.

    Returns:
        The loss of every step.
    """
    import torch
    from monai.losses import DiceCELoss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = _training_data(spec, seed)
    # batch=True: Dice over the whole batch, so a class absent from one patch does not
    # add a noisy ~1 loss term for that sample
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
    opt = torch.optim.Adam(net.parameters(), lr=TRAIN_LR)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=TRAIN_LR, total_steps=max(steps, 1))
    patch = (32, 32, 32) if spec.spatial_dims == 3 else tuple(spec.patch_size)
    losses: list[float] = []
    net.train()
    for step in range(steps):
        xs, ys = _sample_batch(data, rng, spec.spatial_dims, patch)
        opt.zero_grad()
        loss = loss_fn(net(torch.from_numpy(xs)), torch.from_numpy(ys))
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
    (2D, 8 at a time): no tile borders at all.

    Args:
        net: the network (on ``device``, eval mode).
        spec: its spec (normalisation, spatial dims).
        img: ``(i, j, k)`` float volume in HU.
        device: torch device name.

    Returns:
        uint8 labels ``(i, j, k)``.
    """
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


def _recipe(steps: int) -> dict[str, Any]:
    return {
        "recipe": RECIPE,
        "steps": steps,
        "seed": 0,
        "phantoms": TRAIN_PHANTOMS,
        "lr": TRAIN_LR,
        "batch": TRAIN_BATCH,
        "loss": "DiceCE(batch=True)",
    }


def _same_recipe(lineage: dict[str, Any], recipe: dict[str, Any]) -> bool:
    """Whether cached weights were trained with ``recipe`` (its name or an earlier one)."""
    if lineage.get("recipe") not in SAME_RECIPE:
        return False
    return all(lineage.get(k) == v for k, v in recipe.items() if k != "recipe")


def benchmark_net(
    dims: int,
    *,
    weights_dir: str | os.PathLike | None = None,
    steps: int | None = None,
    retrain: bool = False,
    log: Log = print,
):
    """The benchmark's trained network, loaded from ``weights_dir`` when cached there with
    the same recipe, else trained (minutes on a few CPU cores) and cached there.

    Args:
        dims: 2 or 3.
        weights_dir: the cache folder; None = `default_weights_dir`.
        steps: training steps; None = `TRAIN_STEPS`.
        retrain: train even when cached.
        log: called with progress lines.

    Returns:
        (net in eval mode, spec, lineage dict, path of the weights file).
    """
    import torch

    from napari_unet.models import build_model, preset_spec
    from napari_unet.models.files import load_model, read_model_header, save_model

    steps = TRAIN_STEPS[dims] if steps is None else steps
    spec = preset_spec("unet", spatial_dims=dims, labels=["organ", "lesion"], modality="CT")
    folder = Path(default_weights_dir() if weights_dir is None else weights_dir)
    path = folder / f"phantom-unet-{dims}d.safetensors"
    recipe = _recipe(steps)
    if path.exists() and not retrain:
        if _same_recipe(read_model_header(path)["lineage"], recipe):
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
    per_class = dice_per_class(full, truth, 3)
    lineage = {
        **recipe,
        "train_s": round(train_s, 1),
        "final_loss": round(float(np.mean(losses[-50:])), 4),
        "dice_vs_truth_128x128x64": round(mean_dice(per_class) or 0.0, 4),
        "dice_per_class_vs_truth_128x128x64": [round(d or 0.0, 4) for d in per_class],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(path, net, spec, lineage)
    log(f"  saved {path} ({path.stat().st_size / 2**20:.1f} MiB): {lineage}")
    return net.eval(), spec, lineage, path


def _pad8(x, n_axes: int):
    """Zero-pad the trailing ``n_axes`` axes to multiples of 8 (the UNet's stride)."""
    import torch.nn.functional as F

    pads = []
    for n in reversed(x.shape[-n_axes:]):
        pads += [0, -n % 8]
    return F.pad(x, pads)
