from __future__ import annotations

import json

import numpy as np
import pytest

from napari_unet.loop.simulation import evenly_spaced, pick_slices, random_slices, simulate
from napari_unet.training.scoring import DriftCheck
from napari_unet.training.trainer import TrainConfig
from tests.training.conftest import blob_pair, tiny_spec


def test_slice_choice():
    assert evenly_spaced(np.arange(10, 20), 2) == [12, 17]
    scores = np.array([0, 9, 8, 1, 7, 0])
    assert pick_slices(scores, 2, exclude={1}, gap=2) == [2, 4]


def test_random_slices_are_seeded_unrevealed_candidates():
    candidates = np.arange(3, 40)
    exclude = {5, 6, 7}
    picks = [random_slices(candidates, 4, exclude, np.random.default_rng(s)) for s in (0, 0, 1)]
    assert picks[0] == picks[1] != picks[2]  # the seed decides
    for p in picks:
        assert len(p) == 4 and p == sorted(p) and not set(p) & exclude
        assert set(p) <= set(candidates.tolist())
    assert random_slices(np.arange(4), 9, {1}, np.random.default_rng(0)) == [0, 2, 3]
    assert random_slices(np.arange(2), 1, {0, 1}, np.random.default_rng(0)) == []


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["worst", "uncertain", "random"])
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
    if strategy == "random":
        assert isinstance(result.rounds[1].drift, DriftCheck)  # typed, JSON in to_dict
        assert d["rounds"][1]["drift"] == result.rounds[1].drift.to_dict()


@pytest.mark.slow
def test_cli_simulate_random_strategy(tmp_path, capsys):
    """``simulate --strategy random`` runs; the same --seed picks the same slices."""
    from napari_unet.cli import main
    from tests.conftest import write_nifti

    image, truth = blob_pair(shape=(32, 32, 10), seed=4)
    img = write_nifti(tmp_path / "img.nii.gz", image.array, image.affine)
    lab = write_nifti(tmp_path / "lab.nii.gz", truth.array, image.affine)
    args = ["simulate", str(img), str(lab), "--strategy", "random", "--rounds", "2",
            "--slices-per-round", "2", "--steps", "2", "--device", "cpu", "--json"]  # fmt: skip
    runs = []
    for seed in ("3", "3"):
        assert main([*args, "--seed", seed]) == 0
        runs.append(json.loads(capsys.readouterr().out))
    assert runs[0]["strategy"] == "random"
    assert [r["revealed_slices"] for r in runs[0]["rounds"]] == [2, 4]
    assert [r["slices"] for r in runs[0]["rounds"]] == [r["slices"] for r in runs[1]["rounds"]]
