"""Workspaces save and reopen exactly; autosave recovers corrections after a crash."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_unet.errors import InputError
from napari_unet.io.volume import Volume
from napari_unet.workspace import ModelVersion, Recovery, Workspace
from tests.conftest import AFFINES


@pytest.fixture
def image(rng):
    return Volume(
        rng.normal(size=(8, 7, 6)).astype(np.float32),
        AFFINES["LPS"],
        "MR",
        source="/data/scan.nii.gz",
    )


def test_save_and_reopen_keeps_labels_reviewed_slices_and_versions(tmp_path, image):
    ws = Workspace(image, label_names=["tumour"], label_colors=["#ff0000"])
    assert ws.slice_axis == 2  # through-plane: the 3 mm axis
    ws.labels[2:4, 1:3, 1] = 1
    ws.mark_reviewed([1, 4])
    ws.add_model(ModelVersion("a.safetensors", "aaa", None, metrics={"dice": 0.8}))
    ws.add_model(ModelVersion("b.safetensors", "bbb", "aaa", metrics={"dice": 0.9}))
    ws.roll_back("aaa")
    ws.save(tmp_path / "ws")

    again = Workspace.open(tmp_path / "ws")
    np.testing.assert_array_equal(again.labels, ws.labels)
    np.testing.assert_allclose(again.image.affine, image.affine, atol=1e-5)  # NIfTI float32
    assert again.reviewed == {1, 4}
    assert [v.hash for v in again.models] == ["aaa", "bbb"] and again.current == "aaa"
    assert again.models[1].parent == "aaa" and again.models[1].metrics == {"dice": 0.9}
    assert again.model_path("bbb") == tmp_path / "ws" / "models" / "b.safetensors"
    assert again.label_names == ["tumour"] and again.image.source == "/data/scan.nii.gz"


def test_reviewed_mask_covers_exactly_the_reviewed_slices(image):
    ws = Workspace(image, slice_axis=0)
    ws.mark_reviewed([0, 5])
    mask = ws.reviewed_mask()
    assert mask[[0, 5]].all() and not mask[[1, 2, 3, 4, 6, 7]].any()
    with pytest.raises(InputError, match=r"slice 8 is outside 0\.\.7"):
        ws.mark_reviewed(8)
    assert ws.mark_reviewed([5, 6]) == {6}


def test_labels_on_another_grid_are_refused(image):
    with pytest.raises(InputError, match=r"not on the image's grid \(8, 7, 6\)"):
        Workspace(image, np.zeros((8, 7, 5), np.uint8))


def test_newer_or_missing_workspace_is_refused(tmp_path, image):
    with pytest.raises(InputError, match="not a napari-unet workspace"):
        Workspace.open(tmp_path)
    Workspace(image).save(tmp_path / "ws")
    state = json.loads((tmp_path / "ws" / "workspace.json").read_text())
    state["format"] = 99
    (tmp_path / "ws" / "workspace.json").write_text(json.dumps(state))
    with pytest.raises(InputError, match="newer napari-unet"):
        Workspace.open(tmp_path / "ws")


def test_recovery_round_trip_and_discovery(tmp_path, image):
    labels = np.zeros(image.shape, np.uint8)
    labels[1, 1, 1] = 2
    recovery = Recovery(image, root=tmp_path)
    recovery.write(labels, {3, 1}, 2)
    (found,) = Recovery.find(tmp_path)
    assert found.image_source == "/data/scan.nii.gz" and found.reviewed == [1, 3]
    restored, reviewed, axis = Recovery(image, root=tmp_path).load()  # a new session
    np.testing.assert_array_equal(restored, labels)
    assert reviewed == {1, 3} and axis == 2
    recovery.clear()
    assert Recovery.find(tmp_path) == []
    assert Recovery(image, root=tmp_path).load() is None


def test_a_crash_during_autosave_keeps_the_previous_autosave(tmp_path, image, monkeypatch):
    recovery = Recovery(image, root=tmp_path)
    first = np.ones(image.shape, np.uint8)
    recovery.write(first, {1}, 2)

    def crash(*args, **kwargs):
        raise OSError("killed")

    monkeypatch.setattr(np, "save", crash)
    with pytest.raises(OSError):
        recovery.write(first * 2, {1, 2}, 2)
    monkeypatch.undo()
    labels, reviewed, _ = recovery.load()
    np.testing.assert_array_equal(labels, first)
    assert reviewed == {1}
    assert sorted(p.name for p in recovery.folder.iterdir()) == ["labels.npy", "state.json"]
