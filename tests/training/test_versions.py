"""Model versions: storing them (`training.versions`) and scoring them (`training.scoring`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from napari_unet.models import load_model, read_model_header, save_model
from napari_unet.models.build import build_model
from napari_unet.training import TrainConfig, finetune, sparse_volume
from napari_unet.training.scoring import check_drift
from napari_unet.training.versions import save_version, version_history

from .conftest import tiny_spec

FAST = {"device": "cpu", "batch_size": 4, "val_every": 5, "augmentation": "none", "lr": 1e-2}


def _train(parent, spec, pair, slices, steps, replay_slices=()):
    image, labels = pair
    data = sparse_volume(image, labels, spec, slices=slices, slice_axis=2, val_fraction=0.2)
    replay = (
        [sparse_volume(image, labels, spec, slices=list(replay_slices), slice_axis=2)]
        if replay_slices
        else []
    )
    return finetune(parent, spec, [data], replay=replay, config=TrainConfig(steps=steps, **FAST))


@pytest.mark.slow
def test_lineage_written_read_back_and_history(pair, tmp_path):
    spec = tiny_spec()
    first = _train(None, spec, pair, [1, 5], 3)
    h1 = save_version(tmp_path / "v1.safetensors", first, note="first")
    v1 = load_model(tmp_path / "v1.safetensors")
    second = _train(v1, spec, pair, [3], 3, replay_slices=[1, 5])
    h2 = save_version(tmp_path / "v2.safetensors", second)

    lin = read_model_header(tmp_path / "v2.safetensors")["lineage"]
    assert lin["parent"] == h1 and h2 != h1
    assert lin["reviewed_slices"] == [
        {"name": "lab", "axis": 2, "slices": [3]},
        {"name": "lab", "axis": 2, "slices": [1, 5]},
    ]
    assert lin["trained_on"][1]["replay"] is True
    assert lin["metrics"]["steps"] == 3 and "val_dice_per_class" in lin["metrics"]
    assert lin["timings"]["train_seconds"] > 0 and lin["config"]["steps"] == 3
    assert set(lin["drift"]) == {"parent_dice", "child_dice", "tolerance", "flagged", "voxels"}
    assert lin["drift"] == second.drift.to_dict()  # a typed DriftCheck, stored as JSON
    assert set(lin["metrics"]) == {  # the lineage keys model files have always had
        "val_dice", "val_dice_per_class", "best_step", "steps", "seconds_per_step",
        "stopped", "final_loss", "device", "precision", "class_weights",
    }  # fmt: skip
    assert lin["timings"]["seconds"] == second.metrics.seconds
    assert "created" in lin and "torch" in lin["versions"]
    assert read_model_header(tmp_path / "v1.safetensors")["lineage"]["note"] == "first"

    chain = version_history(tmp_path / "v2.safetensors")
    assert [c["hash"] for c in chain] == [h2, h1]
    rolled_back = load_model(chain[1]["path"])  # rollback = load the older file
    assert rolled_back.hash == h1


@pytest.mark.slow
def test_drift_flag(pair):
    spec = tiny_spec()
    image, labels = pair
    good = _train(None, spec, pair, [0, 2, 4, 6], 60).model
    torch.manual_seed(1)
    bad = build_model(spec).eval()
    replay = [sparse_volume(image, labels, spec, slices=[0, 2, 4, 6], slice_axis=2)]
    worse = check_drift(good, bad, spec, replay, device="cpu")
    assert worse.flagged and worse.child_dice < worse.parent_dice - worse.tolerance
    better = check_drift(bad, good, spec, replay, device="cpu")
    assert not better.flagged and better.voxels == 4 * 32 * 32


@pytest.mark.slow
def test_kill_mid_save_leaves_previous_version_intact(pair, tmp_path):
    spec = tiny_spec()
    target = tmp_path / "model.safetensors"
    old_hash = save_model(target, build_model(spec), spec, {"parent": None})
    before = target.read_bytes()
    script = textwrap.dedent(
        f"""
        import os, safetensors.torch as st
        from napari_unet.models.build import build_model
        from napari_unet.training import recommended_spec
        from napari_unet.models import save_model

        def dying_save(tensors, path, metadata=None):
            with open(path, "wb") as f:
                f.write(b"half a model")
                f.flush()
            os._exit(9)  # killed mid-write: no cleanup, no rename

        st.save_file = dying_save
        spec = recommended_spec(["fg"], features=(8, 8, 8, 16, 16, 8), patch_size=(32, 32))
        save_model({str(target)!r}, build_model(spec), spec)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == 9, proc.stderr.decode()[-500:]
    assert target.read_bytes() == before
    assert load_model(target).hash == old_hash
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model.safetensors"]
    # the half file is aside, under a temporary name (its pattern is `outputs.atomic_output`'s)
    assert leftovers and all(n.startswith(".model.safetensors") for n in leftovers)
