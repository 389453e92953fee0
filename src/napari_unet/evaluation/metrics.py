"""Segmentation metrics: THE Dice score of the package.

Every Dice figure napari_unet reports — validation during fine-tuning, the drift guard,
the simulated user's rounds, the inference benchmark's agreement of two label maps —
comes from `dice_per_class` (hard Dice of each foreground class) and, where one number
is wanted, `mean_dice` over its classes. Imports numpy only: label maps given as torch
tensors are read as numpy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _as_numpy(a: Any) -> np.ndarray:
    """A numpy view of an array-like (a torch tensor is detached and moved to the CPU)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def dice_per_class(
    pred: Any,
    truth: Any,
    n_classes: int,
    mask: Any = None,
) -> list[float | None]:
    """Hard Dice of each foreground class over the voxels of ``mask``.

    ``Dice_c = 2 |P_c ∩ T_c| / (|P_c| + |T_c|)`` with ``P_c`` the voxels where ``pred``
    is ``c`` (likewise ``T_c``). A boolean map counts as labels 0/1.

    Args:
        pred: predicted labels (numpy array or torch tensor), any shape.
        truth: true labels, same shape.
        n_classes: classes including background (class 0); scores classes
            ``1 .. n_classes - 1``.
        mask: bool, same shape, True where a voxel counts; None = all voxels.

    Returns:
        One value per class 1..n_classes-1; None where the class is absent from both.

    Raises:
        ValueError: ``pred``, ``truth`` (and ``mask``) differ in shape.
    """
    p, t = _as_numpy(pred), _as_numpy(truth)
    if p.shape != t.shape:
        raise ValueError(f"pred and truth must have the same shape, got {p.shape} and {t.shape}")
    if mask is not None:
        m = _as_numpy(mask).astype(bool, copy=False)
        if m.shape != p.shape:
            raise ValueError(f"mask must have the shape {p.shape} of pred, got {m.shape}")
        p, t = p[m], t[m]
    p, t = p.reshape(-1), t.reshape(-1)
    out: list[float | None] = []
    for c in range(1, n_classes):
        pc, tc = p == c, t == c
        denom = int(np.count_nonzero(pc)) + int(np.count_nonzero(tc))
        out.append(None if denom == 0 else 2.0 * int(np.count_nonzero(pc & tc)) / denom)
    return out


def mean_dice(values: Sequence[float | None]) -> float | None:
    """Mean over the classes that have a value (None when none has).

    Args:
        values: Dice per class, as returned by `dice_per_class`.
    """
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None
