from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.evaluation.metrics import dice_per_class
from napari_unet.inference import predict_volume
from napari_unet.jobs import run_job
from napari_unet.training import TrainConfig, finetune, finetune_steps, sparse_volume
from napari_unet.training.trainer import lr_factor

from .conftest import blob_pair, tiny_spec

pytestmark = pytest.mark.slow  # every test here trains a network

FAST = {"device": "cpu", "batch_size": 4, "val_every": 10, "augmentation": "none", "lr": 1e-2}


@pytest.mark.parametrize("count_unlabelled", [False, True])
def test_wrong_labels_outside_reviewed_slices_are_ignored(count_unlabelled):
    """Unreviewed slices carry inverted labels; training on the reviewed ones still learns
    the truth. Counting every voxel (the control) learns the wrong answer instead."""
    image, truth = blob_pair(seed=3)
    reviewed = [1, 4, 6]
    corrupt = 1 - truth.array
    corrupt[:, :, reviewed] = truth.array[:, :, reviewed]
    spec = tiny_spec(context_slices=0)
    data = sparse_volume(
        image,
        truth.with_array(corrupt),
        spec,
        slices=None if count_unlabelled else reviewed,
        slice_axis=2,
        val_fraction=0.0,
    )
    result = finetune(None, spec, [data], config=TrainConfig(steps=60, **FAST))
    pred = predict_volume(result.model, spec, image, device="cpu").labels.array
    others = [k for k in range(8) if k not in reviewed]
    (dice,) = dice_per_class(pred[:, :, others], truth.array[:, :, others], 2)
    if count_unlabelled:
        assert dice < 0.6
    else:
        assert dice > 0.85


@pytest.mark.parametrize("dims", [2, 3])
def test_paths_run_and_report_progress(pair, dims):
    image, labels = pair
    spec = tiny_spec(dims)
    data = sparse_volume(image, labels, spec, slices=[2, 5], slice_axis=2, val_fraction=0.3)
    job = finetune_steps(
        None, spec, [data], config=TrainConfig(steps=4, **{**FAST, "val_every": 2})
    )
    events = []
    while True:
        try:
            events.append(next(job))
        except StopIteration as done:
            result = done.value
            break
    assert [e.done for e in events] == [1, 2, 3, 4]
    assert set(events[-1].data) == {"step", "loss", "val_dice", "elapsed", "eta"}
    assert events[-1].data["val_dice"] is not None and events[-1].total == 4
    assert result.metrics.steps == 4 and not result.metrics.stopped
    assert result.metrics.val_dice_per_class is not None
    assert not result.model.training
    out = result.model(torch.zeros(1, spec.in_channels, *spec.patch_size))
    assert out.shape[1] == 2


def test_stop_returns_a_valid_model_and_parent_untouched(pair, tmp_path):
    from napari_unet.models import load_model, save_model
    from napari_unet.models.build import build_model
    from napari_unet.training import save_version

    image, labels = pair
    spec = tiny_spec()
    save_model(tmp_path / "parent.safetensors", build_model(spec), spec)
    parent = load_model(tmp_path / "parent.safetensors")
    before = {k: v.clone() for k, v in parent.model.state_dict().items()}
    data = sparse_volume(image, labels, spec, slices=[3], slice_axis=2)
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    result = run_job(
        finetune_steps(parent, spec, [data], config=TrainConfig(steps=50, **FAST), stop=stop)
    )
    assert result.metrics.stopped and result.metrics.steps == 3
    assert result.drift is None  # no replayed data: no drift check
    assert result.parent_hash == parent.hash
    for k, v in parent.model.state_dict().items():
        assert torch.equal(v, before[k])
    save_version(tmp_path / "child.safetensors", result)
    child = load_model(tmp_path / "child.safetensors")
    assert child.lineage["metrics"]["stopped"] is True
    assert np.isfinite(child.model(torch.zeros(1, 3, 32, 32)).detach().numpy()).all()


def test_seconds_budget_and_schedule(pair):
    image, labels = pair
    spec = tiny_spec()
    data = sparse_volume(image, labels, spec, slices=[3], slice_axis=2)
    cfg = TrainConfig(steps=None, seconds=0.5, **FAST)
    result = finetune(None, spec, [data], config=cfg)
    assert result.metrics.steps >= 1 and result.metrics.train_seconds < 5
    assert lr_factor(0, 0.1, 0.02) == pytest.approx(0.05)
    assert lr_factor(0.1, 0.1, 0.02) == pytest.approx(1.0)
    assert lr_factor(1.0, 0.1, 0.02) == pytest.approx(0.02)
    with pytest.raises(ValueError, match="budget"):
        TrainConfig(steps=None, seconds=None)
