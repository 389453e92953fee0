"""The one Dice of the package."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.evaluation.metrics import dice_per_class, mean_dice


def test_dice_per_class():
    p = np.array([0, 1, 1, 2, 0])
    t = np.array([0, 1, 0, 2, 2])
    assert dice_per_class(p, t, 3) == [pytest.approx(2 / 3), pytest.approx(2 / 3)]
    assert dice_per_class(p, t, 4)[2] is None
    m = np.array([1, 1, 0, 1, 0], bool)
    assert dice_per_class(p, t, 3, m) == [1.0, 1.0]


def test_torch_tensors_and_boolean_maps_score_like_numpy():
    rng = np.random.default_rng(0)
    p, t = rng.integers(0, 3, (4, 5, 6)), rng.integers(0, 3, (4, 5, 6))
    assert dice_per_class(torch.from_numpy(p), torch.from_numpy(t), 3) == dice_per_class(p, t, 3)
    assert dice_per_class(p == 2, t == 2, 2) == dice_per_class(p, t, 3)[1:]


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="same shape"):
        dice_per_class(np.zeros(3), np.zeros(4), 2)
    with pytest.raises(ValueError, match="mask"):
        dice_per_class(np.zeros(3), np.zeros(3), 2, np.ones(4, bool))


def test_mean_dice_skips_absent_classes():
    assert mean_dice([0.5, None, 1.0]) == 0.75
    assert mean_dice([None, None]) is None
