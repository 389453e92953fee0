"""Reviewing without Qt: which slice to review next, whose content a merge would replace,
whether the live model has learned anything."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from napari_unet.io.volume import Volume
from napari_unet.jobs import run_job
from napari_unet.loop import Loop
from napari_unet.loop.core import UNCERTAIN_SLICE
from napari_unet.loop.merge import empty_slices, slice_information
from napari_unet.workspace import ModelVersion
from tests.training.conftest import blob_pair


def _loop(shape=(80, 80, 6)) -> Loop:
    image = Volume(np.zeros(shape, np.float32), np.eye(4), "MR", source="scan")
    return Loop(image, slice_axis=2)


def _disc(shape, voxels: int) -> np.ndarray:
    """A filled square of about ``voxels`` voxels in the middle of a slice."""
    side = round(float(np.sqrt(voxels)))
    mask = np.zeros(shape[:2], bool)
    lo = (shape[0] - side) // 2
    mask[lo : lo + side, lo : lo + side] = True
    return mask


def test_much_tissue_of_medium_uncertainty_ranks_above_a_small_very_uncertain_spot():
    loop = _loop()
    uncertainty = np.zeros(loop.image.shape, np.float32)
    small, large = _disc(loop.image.shape, 300), _disc(loop.image.shape, 5000)
    loop.labels[..., 1][small] = 1
    uncertainty[..., 1][small] = 0.95  # 300 voxels, very uncertain
    loop.labels[..., 4][large] = 1
    uncertainty[..., 4][large] = 0.4  # 5,000 voxels, medium
    for k in (0, 2, 3, 5):  # confident tissue elsewhere
        loop.labels[..., k][large] = 1
        uncertainty[..., k][large] = 0.01
    loop.last_uncertainty = uncertainty
    order = loop.review_order()
    assert order[0] == 4
    assert order.index(4) < order.index(1)
    assert loop.next_to_review() == 4
    loop.mark_reviewed([4])
    assert loop.next_to_review() == 1  # then the small uncertain spot


def test_edge_slices_with_almost_no_tissue_come_last_however_uncertain():
    loop = _loop((80, 80, 8))
    uncertainty = np.zeros(loop.image.shape, np.float32)
    tissue = _disc(loop.image.shape, 3000)
    for k in range(1, 7):
        loop.labels[..., k][tissue] = 1
        uncertainty[..., k][tissue] = 0.1 + 0.02 * k
    # the edges: a few foreground voxels (the 317 of the report) in a sea of doubt
    for k in (0, 7):
        loop.labels[..., k][_disc(loop.image.shape, 100)] = 1
        uncertainty[..., k] = 0.6
    loop.last_uncertainty = uncertainty
    info = loop.slice_information()
    assert info.information[0] > info.information[6]  # more "information" on the edge…
    order = loop.review_order()
    assert set(order[-2:]) == {0, 7}  # …but it comes last
    assert order[0] == 6


def test_without_uncertainty_the_middle_of_the_widest_unreviewed_run_comes_first():
    loop = _loop((8, 8, 11))
    assert loop.next_to_review() == 5
    loop.mark_reviewed([5])
    assert loop.next_to_review() in (2, 8)  # not an edge slice
    loop.mark_reviewed(range(11))
    assert loop.next_to_review() is None and loop.review_order() == []


def test_slice_information_counts_foreground_and_the_uncertain_voxels_near_it():
    labels = np.zeros((4, 4, 2), np.uint8)
    labels[:2, :2, 0] = 1
    unc = np.zeros(labels.shape, np.float32)
    unc[:2, :2, 0] = 0.2  # predicted foreground: counts whatever its uncertainty
    unc[3, 3, 0] = 0.7  # background the model almost called foreground: counts
    unc[3, 2, 0] = 0.3  # confident background: does not
    info = slice_information(labels, unc, slice_axis=2, block=1)
    assert info.foreground.tolist() == [4, 0]
    assert info.region.tolist() == [5, 0]
    assert info.information[0] == pytest.approx(4 * 0.2 + 0.7)
    assert info.mean_uncertainty.tolist() == pytest.approx([(0.8 + 0.7) / 5, 0.0])
    assert slice_information(labels, None, slice_axis=2).foreground.tolist() == [4, 0]


def test_the_ranking_is_cached_until_the_labels_change_from_outside():
    loop = _loop((8, 8, 4))
    loop.last_uncertainty = np.full(loop.image.shape, 0.8, np.float32)
    first = loop.slice_information()
    assert loop.slice_information() is first
    loop.labels[..., 1] = 1  # e.g. an undo in the viewer
    loop.labels_edited()
    assert loop.slice_information() is not first
    assert loop.slice_information().foreground[1] == 64
    assert loop.slice_uncertainty(1) == pytest.approx(0.8)
    assert loop.slice_uncertainty(1) > UNCERTAIN_SLICE


def _version(loop: Loop, digest: str, parent: str | None = None, **metrics) -> None:
    loop.workspace.add_model(ModelVersion(f"{digest}.safetensors", digest, parent,
                                          metrics=metrics))  # fmt: skip
    loop.workspace.current = digest


def _prediction(array: np.ndarray, model: str):
    return SimpleNamespace(labels=array, uncertainty=None, info={"model": model})


def test_adopted_content_is_foreign_until_a_merge_of_this_models_line_replaces_it():
    loop = _loop((8, 8, 6))
    adopted = np.zeros(loop.image.shape, np.uint8)
    adopted[2:6, 2:6, 1:4] = 1
    loop.use_labels(adopted)
    _version(loop, "a")
    assert loop.labels_writer is None
    assert loop.foreign_content() == 4 * 4 * 3
    loop.mark_reviewed([1, 2])
    assert loop.foreign_content() == 4 * 4  # reviewed slices are the user's own

    assert loop.empty_slices() == [0, 4, 5]
    loop.merge(_prediction(np.full(loop.image.shape, 1, np.uint8), "a"),
               only=loop.empty_slices())  # fmt: skip
    assert adopted[2:6, 2:6, 3].all() and not adopted[0, 0, 3]  # adopted content kept
    assert adopted[..., [0, 4, 5]].all()
    assert loop.labels_writer is None and loop.foreign_content() > 0  # still there

    loop.merge(_prediction(np.full(loop.image.shape, 1, np.uint8), "a"))
    assert loop.labels_writer == "a" and loop.foreign_content() == 0
    _version(loop, "b", parent="a")  # a fine-tune of it: the same line
    assert loop.foreign_content() == 0
    loop.workspace.current = "a"  # rolled back below what wrote it: the same line
    loop.labels_writer = "b"
    assert loop.foreign_content() == 0
    _version(loop, "c")  # an unrelated model
    assert loop.foreign_content() > 0
    loop.merge(np.zeros(loop.image.shape, np.uint8))  # an array from elsewhere
    assert loop.labels_writer is None


def test_empty_slices_skips_reviewed_and_filled_slices():
    labels = np.zeros((3, 3, 5), np.uint8)
    labels[0, 0, 1] = 2
    assert empty_slices(labels, reviewed=[3], slice_axis=2) == [0, 2, 4]


def test_a_new_model_is_untrained_and_its_prediction_is_signed(tmp_path):
    image, _ = blob_pair(shape=(32, 32, 6))
    loop = Loop(image, models_folder=tmp_path, device="cpu")
    assert not loop.trained  # no model at all
    version = loop.new_model(["blob"], spatial_dims=2, modality="MR")
    assert not loop.trained
    prediction = run_job(loop.predict(uncertainty=True))
    assert prediction.info["model"] == version.hash
    loop.merge(prediction)
    assert loop.labels_writer == version.hash and loop.foreign_content() == 0
    assert loop.slice_uncertainty(3) is not None
    loop.workspace.models[0].metrics["steps"] = 10  # as a fine-tune records it
    assert loop.trained
