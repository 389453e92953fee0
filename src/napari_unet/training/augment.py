"""Augmentation of training patches with MONAI dictionary transforms.

Spatial transforms (affine, elastic, flips) move image, labels and mask together
(bilinear for the image, nearest for labels and mask; what moves in from outside the
patch is zero = unlabelled). Intensity transforms (scale, shift, gaussian noise) touch
the image only; they act on normalised intensities (z-scores for MR, [0, 1] for CT), so
their strengths are in those units.

Flips are off unless asked for: a left/right flip is wrong for lateralised anatomy (the
liver is on the patient's right), so only the caller, who knows the task, may allow one.

Levels: "none"; "light" (the default: small rotations/scales, rare mild elastic, mild
intensity jitter and noise — the input→label map of most tasks here is close to an
intensity threshold with spatial context, so heavy intensity augmentation only blurs
it); "strong" (wider ranges, more often).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

LEVELS = ("none", "light", "strong")
#: Spatial transforms move the image (bilinear) and the labels + mask (nearest) together.
_KEYS = ("image", "seg")
_MODES = ("bilinear", "nearest")

Augment = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]
]


def build_augmentation(
    spatial_dims: int,
    *,
    level: str = "light",
    flip_axes: Sequence[int] = (),
    seed: int = 0,
) -> Augment | None:
    """A batch augmenter ``(x, y, mask) -> (x, y, mask)``, or None for level "none".

    Args:
        spatial_dims: 2 or 3.
        level: one of ``LEVELS``.
        flip_axes: spatial axes of the patch (0-based, model axis order) that may be
            flipped with probability 0.5 each; () = no flips.
        seed: random seed of the transforms.

    Returns:
        A callable taking and returning ``x (N, C, *spatial)`` float32, ``y (N,
        *spatial)`` int64, ``mask (N, *spatial)`` bool; or None.

    Raises:
        ValueError: an unknown level or a flip axis out of range.
    """
    if level not in LEVELS:
        raise ValueError(f"augmentation level must be one of {LEVELS}, got {level!r}")
    bad = [a for a in flip_axes if a not in range(spatial_dims)]
    if bad:
        raise ValueError(f"flip_axes must be spatial axes 0..{spatial_dims - 1}, got {bad}")
    if level == "none" and not flip_axes:
        return None
    from monai import transforms as mt

    items = [] if level == "none" else _level_transforms(mt, spatial_dims, level == "strong")
    items += [mt.RandFlipd(keys=_KEYS, spatial_axis=int(a), prob=0.5) for a in flip_axes]
    compose = mt.Compose(items)
    compose.set_random_state(seed=seed)
    return _batch_augmenter(compose)


def _level_transforms(mt: Any, spatial_dims: int, strong: bool) -> list:
    """Affine, elastic, then intensity transforms of one level ("light" or "strong")."""
    rot = math.radians(20 if strong else 10)
    affine = mt.RandAffined(
        keys=_KEYS,
        mode=_MODES,
        prob=0.5 if strong else 0.3,
        rotate_range=(rot,) if spatial_dims == 2 else (rot, rot, rot),
        scale_range=(0.15 if strong else 0.08,) * spatial_dims,
        padding_mode="zeros",
    )
    elastic = (
        mt.Rand2DElasticd(
            keys=_KEYS,
            mode=_MODES,
            prob=0.2 if strong else 0.1,
            spacing=(24, 24),
            magnitude_range=(1.0, 3.0 if strong else 2.0),
            padding_mode="zeros",
        )
        if spatial_dims == 2
        else mt.Rand3DElasticd(
            keys=_KEYS,
            mode=_MODES,
            prob=0.2 if strong else 0.1,
            sigma_range=(5.0, 8.0),
            magnitude_range=(20.0, 80.0 if strong else 40.0),
            padding_mode="zeros",
        )
    )
    return [
        affine,
        elastic,
        mt.RandScaleIntensityd(keys="image", factors=0.15 if strong else 0.05, prob=0.3),
        mt.RandShiftIntensityd(keys="image", offsets=0.15 if strong else 0.05, prob=0.3),
        mt.RandGaussianNoised(keys="image", std=0.08 if strong else 0.03, prob=0.2),
    ]


def _batch_augmenter(compose: Any) -> Augment:
    """``compose`` applied sample by sample; labels and mask travel as one 2-channel "seg"."""

    def augment(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor):
        xs, ys, ms = [], [], []
        for i in range(x.shape[0]):
            seg = torch.stack([y[i].float(), mask[i].float()])
            out = compose({"image": x[i], "seg": seg})
            xs.append(_plain(out["image"]).float())
            s = _plain(out["seg"])
            ys.append(s[0].round().long())
            ms.append(s[1] > 0.5)
        return torch.stack(xs), torch.stack(ys), torch.stack(ms)

    return augment


def _plain(t) -> torch.Tensor:
    """A plain tensor from a MONAI MetaTensor (whose ``__torch_function__`` would slow
    every later operation, the network's included, several-fold)."""
    t = t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t)
    return t if type(t) is torch.Tensor else t.as_subclass(torch.Tensor)
