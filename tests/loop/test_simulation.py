from __future__ import annotations

import numpy as np
import pytest

from napari_unet.loop.simulation import evenly_spaced, pick_slices, simulate
from napari_unet.training.trainer import TrainConfig

from tests.training.conftest import blob_pair, tiny_spec


def test_slice_choice():
    assert evenly_spaced(np.arange(10, 20), 2) == [12, 17]
    scores = np.array([0, 9, 8, 1, 7, 0])
    assert pick_slices(scores, 2, exclude={1}, gap=2) == [2, 4]


@pytest.mark.parametrize("strategy", ["worst", "uncertain"])
def test_simulate_rounds(strategy):
    image, truth = blob_pair(shape=(32, 32, 12), seed=2)
    cfg = TrainConfig(steps=8, batch_size=4, augmentation="none", device="cpu", lr=1e-2)
    result = simulate(
        image,
        truth,
        spec=tiny_spec(),
        rounds=2,
        slices_per_round=2,
        strategy=strategy,
        config=cfg,
        device="cpu",
    )
    d = result.to_dict()
    assert d["strategy"] == strategy and len(d["rounds"]) == 2
    r1, r2 = d["rounds"]
    assert r1["revealed_slices"] == 2 and r2["revealed_slices"] == 4
    assert not set(r1["slices"]) & set(r2["slices"])
    for r in d["rounds"]:
        assert {
            "round",
            "revealed_slices",
            "dice",
            "dice_per_class",
            "dice_revealed",
            "seconds",
        } <= set(r)
        assert 0 <= r["dice"] <= 1 and r["seconds"] > 0
    assert r2["drift"] is not None and r2["steps"] == 4
