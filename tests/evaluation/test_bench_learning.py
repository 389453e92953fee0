"""benchmarks/bench_learning.py's protocol: the fixed test set and its hold-out.

The hold-out wraps two steps of `loop.simulation` (it has no parameter for it yet): this
test fails if those steps change, instead of the benchmark silently scoring the wrong
slices."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from napari_unet.io.volume import Volume

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bl():
    spec = importlib.util.spec_from_file_location(
        "bench_learning", REPO / "benchmarks" / "bench_learning.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_test_set_is_seeded_spread_and_a_fifth_of_the_candidates(bl):
    candidates = np.arange(10, 110)
    a, b = bl.choose_test_slices(candidates), bl.choose_test_slices(candidates)
    assert a == b and len(a) == 20 and len(set(a)) == 20 and set(a) <= set(candidates)
    # one per bin of 5: spread over the whole range
    assert [s // 5 for s in a] == list(range(2, 22))
    assert bl.choose_test_slices(candidates, seed=1) != a
    assert len(bl.choose_test_slices(np.arange(8))) == 4  # at least 4


def test_every_volume_is_marked_as_tuning_or_test_only(bl):
    from napari_unet.samples import SAMPLE_KEYS
    from napari_unet.samples.variants import VARIANT_KEYS

    assert set(bl.TUNED) == set(SAMPLE_KEYS) and set(bl.TEST_ONLY) == set(VARIANT_KEYS)


def _blobs(shape=(32, 32, 16), seed=0):
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma=(3, 3, 1.5))
    field = (field - field.mean()) / field.std()
    image = (100 + 40 * field + rng.normal(scale=2, size=shape)).astype(np.float32)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    return Volume(image, affine, "MR"), Volume((field > 0.3).astype(np.uint8), affine, "MR")


@pytest.mark.parametrize("strategy", ["worst", "uncertain", "random"])
def test_simulation_never_reveals_the_test_slices_and_scores_them_every_round(bl, strategy):
    from napari_unet.loop.simulation import simulate
    from napari_unet.training import TrainConfig, recommended_spec

    image, truth = _blobs()
    spec = recommended_spec(["fg"], features=(4, 4, 4, 8, 8, 4), patch_size=(16, 16))
    test = [1, 3, 5, 7, 9, 11, 13, 15]  # half the slices: easy to hit by chance
    cfg = TrainConfig(steps=3, batch_size=2, val_every=3, augmentation="none", device="cpu")
    result = simulate(image, truth, spec=spec, rounds=3, slices_per_round=2, strategy=strategy,
                      config=cfg, device="cpu", seed=0, held_out=test)  # fmt: skip
    revealed = [s for r in result.rounds for s in r.slices]
    assert len(result.rounds) == 3 and len(revealed) == 6
    assert not set(revealed) & set(test)
    for r in result.rounds:
        assert len(r.dice_held_out_per_class) == 1
        assert r.dice_held_out == r.dice_held_out_per_class[0]
    final = result.rounds[-1]
    assert result.final is not None and final.dice_held_out is not None


def test_held_out_slices_outside_the_volume_are_refused(bl):
    from napari_unet.loop.simulation import simulate
    from napari_unet.training import TrainConfig, recommended_spec

    image, truth = _blobs()
    spec = recommended_spec(["fg"], features=(4, 4, 4, 8, 8, 4), patch_size=(16, 16))
    cfg = TrainConfig(steps=1, augmentation="none", device="cpu")
    with pytest.raises(ValueError, match=r"held_out slices must be in \[0, 16\) along axis 2"):
        simulate(image, truth, spec=spec, config=cfg, device="cpu", held_out=[3, 16])


def test_ceiling_reveals_every_content_slice_but_the_test_set(bl, monkeypatch):
    from napari_unet.loop.simulation import content_slices
    from napari_unet.samples import Sample

    image, truth = _blobs()
    sample = Sample(key="blobs", title="blobs", image=image, labels=truth,
                    label_names=["fg"], label_colors=["#ff0000"])  # fmt: skip
    monkeypatch.setattr(bl, "load", lambda key: sample)
    out = bl.run_sample("blobs", device="cpu", seeds=[0], strategies=[], k=2, rounds=1,
                        steps=2, log=lambda m: None, ceiling=True)  # fmt: skip
    content = set(int(s) for s in content_slices(image.array, out["slice_axis"]))
    (run,) = out["ceiling"]["per_seed"]
    assert set(run["slices"]) == content - set(out["test_slices"])
    assert out["ceiling"]["slices_per_round"] == len(content) - len(out["test_slices"])
    assert "target" not in out and "curves" not in out
    row = bl.summary([out])[0]
    assert row[f"ceiling_{out['ceiling']['slices_per_round']}_slices"]["n"] == 1
