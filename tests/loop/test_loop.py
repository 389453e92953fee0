"""The GUI-free loop: paint → reviewed → fine-tune → merge keeps reviewed voxels →
roll back → save/open, and the merge as one exact undo step."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from napari_unet.errors import InputError
from napari_unet.jobs import run_job
from napari_unet.loop import Loop, merge_unreviewed
from tests.training.conftest import blob_pair


def test_importing_the_loop_loads_no_qt_or_napari():
    code = (
        "import sys, napari_unet.loop; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'magicgui', 'torch')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_merge_never_writes_reviewed_slices_and_undoes_exactly():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(6, 5, 8)).astype(np.uint8)
    before = labels.copy()
    prediction = rng.integers(0, 3, size=labels.shape).astype(np.uint8)
    edit = merge_unreviewed(labels, prediction, reviewed={1, 2, 6}, slice_axis=2)
    np.testing.assert_array_equal(labels[..., [1, 2, 6]], before[..., [1, 2, 6]])
    todo = [0, 3, 4, 5, 7]
    np.testing.assert_array_equal(labels[..., todo], prediction[..., todo])
    assert edit.voxels == int((before[..., todo] != prediction[..., todo]).sum())
    edit.undo(labels)
    np.testing.assert_array_equal(labels, before)
    edit.redo(labels)
    np.testing.assert_array_equal(labels[..., todo], prediction[..., todo])


def test_merge_only_some_slices():
    labels = np.zeros((3, 3, 4), np.uint8)
    merge_unreviewed(labels, np.ones_like(labels), reviewed={0}, slice_axis=2, only=[0, 2])
    assert labels[..., 2].all() and not labels[..., [0, 1, 3]].any()


def test_loop_writes_into_the_callers_buffer():
    image, _ = blob_pair(shape=(8, 9, 4))
    buffer = np.zeros((4, 9, 8), np.uint8)  # e.g. a layer's display-ordered array
    loop = Loop(image, buffer.transpose(2, 1, 0))
    loop.merge(np.full(image.shape, 1, np.uint8))
    assert buffer.all()


def test_actions_before_a_model_are_refused_in_one_sentence():
    image, _ = blob_pair(shape=(8, 9, 4))
    loop = Loop(image)
    with pytest.raises(InputError, match="create or open a model first"):
        loop.predict()
    with pytest.raises(InputError, match="create or open a model first"):
        loop.finetune(steps=1)
    with pytest.raises(InputError, match="slice axis must be 0, 1 or 2"):
        Loop(image, slice_axis=3)


@pytest.mark.slow
def test_the_whole_loop_without_qt(tmp_path):
    image, truth = blob_pair(shape=(32, 32, 8))
    loop = Loop(image, models_folder=tmp_path / "models", device="cpu")
    events = []
    loop.reviewed_changed.connect(lambda: events.append("reviewed"))
    loop.model_changed.connect(lambda: events.append("model"))
    loop.labels_changed.connect(lambda edit: events.append("labels"))

    first = loop.new_model(["blob"], spatial_dims=2, modality="MR")
    assert loop.model.spec.context_slices == 1 and loop.model.spec.modality == "MR"
    loop.merge(run_job(loop.predict()))
    # the user corrects two slices: they become reviewed
    for k in (2, 5):
        loop.labels[..., k] = truth.array[..., k]
    loop.mark_reviewed([2, 5])
    painted = loop.labels[..., [2, 5]].copy()
    job = loop.finetune(steps=3)
    assert loop.busy
    with pytest.raises(InputError, match="while a job runs"):
        loop.new_model(["x"])
    trained = run_job(job)
    assert not loop.busy
    second = loop.add_version(trained)
    assert second.parent == first.hash and loop.current is second
    assert second.metrics["trained_slices"] == [2, 5]
    edit = loop.merge(run_job(loop.predict()))
    np.testing.assert_array_equal(loop.labels[..., [2, 5]], painted)
    assert set(np.unique(edit.index[2])) <= {0, 1, 3, 4, 6, 7}
    labels_before_rollback = loop.labels.copy()
    loop.use_version(first.hash)
    assert loop.model.hash == first.hash
    np.testing.assert_array_equal(loop.labels, labels_before_rollback)
    assert events.count("model") >= 3 and "reviewed" in events and "labels" in events

    out = loop.export(tmp_path / "seg.nii.gz")
    saved = nib.load(out)
    np.testing.assert_array_equal(saved.affine, image.affine)
    np.testing.assert_array_equal(np.asanyarray(saved.dataobj), loop.labels)

    loop.save(tmp_path / "ws")
    again = Loop.open(tmp_path / "ws")
    assert again.reviewed == {2, 5}
    assert [v.hash for v in again.versions] == [first.hash, second.hash]
    assert again.model.hash == first.hash
    np.testing.assert_array_equal(again.labels, loop.labels)
    assert (tmp_path / "ws" / "models").is_dir()
    assert len(list((tmp_path / "ws" / "models").glob("*.safetensors"))) == 2


def test_export_never_replaces_the_scan(tmp_path):
    from tests.conftest import write_nifti

    scan = write_nifti(tmp_path / "scan.nii.gz", np.zeros((4, 5, 6), np.float32), np.eye(4))
    from napari_unet.io.reader import load_volume

    loop = Loop(load_volume(scan))
    with pytest.raises(InputError, match="is also an input"):
        loop.export(scan, overwrite=True)


def test_a_planned_merge_leaves_slices_reviewed_after_planning():
    image, _ = blob_pair(shape=(8, 9, 5))
    loop = Loop(image)
    prediction = np.ones(image.shape, np.uint8)
    planned = loop.plan_merge(prediction)  # e.g. in the worker, while the user paints
    assert not loop.labels.any()  # planning writes nothing
    loop.labels[..., 3] = 2  # the user corrects slice 3 meanwhile
    loop.mark_reviewed([3])
    edit = loop.merge(prediction, planned=planned)
    assert (loop.labels[..., 3] == 2).all()  # the newest correction wins
    assert (loop.labels[..., [0, 1, 2, 4]] == 1).all()
    assert set(np.unique(edit.index[2])) == {0, 1, 2, 4}
