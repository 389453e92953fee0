"""Label maps: detection, names and colours, the same-grid check, Slicer's crops."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_unet.errors import InputError
from napari_unet.io.labelmap import (
    Segment,
    as_label_array,
    embed_in_grid,
    grid_difference,
    looks_like_label_map,
    segments_of,
    set_segments,
)
from napari_unet.io.volume import Volume
from tests.conftest import AFFINES


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.array([0, 1, 1, 2], np.uint8), True),
        (np.array([0, 3, 117], np.int16), True),  # a TotalSegmentator-like map
        (np.array([True, False]), True),
        (np.arange(256, dtype=np.uint8), False),  # an 8-bit scan uses every value
        (np.array([0, 1, 300], np.int16), False),
        (np.array([-1000, 0, 40], np.int16), False),  # CT
        (np.array([1, 2, 3], np.uint8), False),  # no background
        (np.array([0.0, 1.0]), False),  # float: only when asked (Open labels…)
    ],
)
def test_detection_is_narrow(array, expected):
    assert looks_like_label_map(array.reshape(1, 1, -1)) is expected


def test_as_label_array_accepts_whole_floats_and_refuses_the_rest():
    vol = Volume(np.array([0.0, 1.0, 7.0]).reshape(1, 1, 3), np.eye(4), source="x.nii")
    out = as_label_array(vol)
    assert out.dtype == np.uint8 and out.tolist() == [[[0, 1, 7]]]
    for values, word in (([0.5], "fractional"), ([-1.0], "negative"), ([np.nan], "NaN"),
                         ([70000.0], "65535")):  # fmt: skip
        bad = Volume(np.array(values).reshape(1, 1, -1), np.eye(4), source="x.nii")
        with pytest.raises(InputError, match=word):
            as_label_array(bad)


def test_segments_from_the_file_win_over_default_names():
    array = np.array([0, 1, 3, 9], np.uint8).reshape(1, 1, 4)
    meta = set_segments({}, [Segment(1, "liver", "#FF0000"), Segment(3, "kidney", "#00ff00")])
    segments = segments_of(Volume(array, np.eye(4), metadata=meta))
    assert [(s.value, s.name, s.color) for s in segments] == [
        (1, "liver", "#ff0000"),
        (3, "kidney", "#00ff00"),
        (9, "label 9", "#ff4b4b"),
    ]
    older = Volume(
        array, np.eye(4), metadata={"label_names": ["a", "b"], "label_colors": ["#010203"]}
    )
    assert [(s.value, s.name) for s in segments_of(older)] == [
        (1, "a"),
        (2, "b"),
        (3, "label 3"),
        (9, "label 9"),
    ]
    assert segments_of(older)[0].color == "#010203"
    assert [s.value for s in segments_of(older, present_only=True)] == [1]


def test_names_from_files_are_printable_and_bounded():
    meta = {"segments": [{"value": 1, "name": "li\x1b[31mver\n" + "x" * 100, "color": "red"}]}
    (segment,) = segments_of(Volume(np.ones((1, 1, 1), np.uint8), np.eye(4), metadata=meta))
    assert segment.name.startswith("liver ") and len(segment.name) == 64
    assert segment.color == "#ff4b4b"


def test_grid_difference_tolerates_float32_and_names_real_differences():
    affine = AFFINES["LIA_oblique"]
    assert grid_difference(affine.astype(np.float32), (4, 5, 6), affine, (4, 5, 6)) is None
    assert "shape" in grid_difference(affine, (4, 5, 7), affine, (4, 5, 6))
    moved = affine.copy()
    moved[:3, 3] += 0.5
    assert "mm away" in grid_difference(moved, (4, 5, 6), affine, (4, 5, 6))
    scaled = affine.copy()
    scaled[:3, 0] *= 1.1
    assert "voxel size" in grid_difference(scaled, (4, 5, 6), affine, (4, 5, 6))
    flipped = affine @ np.diag([-1.0, 1, 1, 1])
    assert "orientation" in grid_difference(flipped, (4, 5, 6), affine, (4, 5, 6))


def test_a_crop_is_embedded_in_its_grid_and_other_grids_are_not():
    affine = AFFINES["PSR_oblique"]
    crop = np.ones((2, 3, 1), np.uint8)
    crop_affine = affine.copy()
    crop_affine[:3, 3] = affine[:3, :3] @ [1, 2, 3] + affine[:3, 3]
    out = embed_in_grid(Volume(crop, crop_affine), affine, (5, 6, 7))
    assert out is not None and out.shape == (5, 6, 7)
    assert out.array[1:3, 2:5, 3].all() and out.array.sum() == 6
    assert embed_in_grid(Volume(crop, crop_affine), affine, (2, 3, 1)) is None  # sticks out
    half = crop_affine.copy()
    half[:3, 3] += affine[:3, 0] * 0.5
    assert embed_in_grid(Volume(crop, half), affine, (5, 6, 7)) is None  # between voxels


def test_the_labels_reader_takes_ambiguous_files_only_when_asked(tmp_path):
    import napari_unet._reader as reader

    path = tmp_path / "x.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)), path)
    assert reader.get_reader(str(path)) is reader.read_volume
    assert reader.get_labels_reader(str(path)) is None  # File > Open never depends on order
    with reader.asking_for_labels():
        assert reader.get_labels_reader(str(path)) is reader.read_labels
    seg = tmp_path / "x.seg.nrrd"
    seg.write_bytes(b"NRRD0004\n")
    assert reader.get_labels_reader(str(seg)) is reader.read_labels
