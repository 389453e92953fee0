"""NRRD images and 3D Slicer segmentations: exact geometry, Slicer's header fields."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from napari_unet.io.labelmap import Segment, segments_of, set_segments
from napari_unet.io.nrrd import load_nrrd, save_nrrd, save_seg_nrrd
from napari_unet.io.reader import load_volume
from napari_unet.io.volume import Volume
from tests.conftest import AFFINES


def _header_fields(path) -> dict[str, str]:
    head = path.read_bytes().split(b"\n\n", 1)[0].decode()
    fields = {}
    for line in head.splitlines()[1:]:
        if line.startswith("#"):
            continue
        key, _, value = line.partition(":=") if ":=" in line else line.partition(": ")
        fields[key] = value
    return fields


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_image_round_trip_keeps_values_and_geometry(tmp_path, affine, dtype, rng):
    array = (rng.normal(size=(5, 6, 7)) * 100).astype(dtype)
    out = save_nrrd(Volume(array, affine), tmp_path / "image.nrrd")
    back = load_volume(out)
    np.testing.assert_array_equal(back.array, array)
    assert back.array.dtype == array.dtype
    np.testing.assert_allclose(back.affine, affine, atol=1e-12)
    assert not back.metadata["geometry_assumed"] and "segments" not in back.metadata


def test_simpleitk_reads_our_nrrd_in_the_same_place(tmp_path, rng):
    sitk = pytest.importorskip("SimpleITK")
    affine = AFFINES["LIA_oblique"]
    array = rng.normal(size=(5, 6, 7)).astype(np.float32)
    out = save_nrrd(Volume(array, affine), tmp_path / "image.nrrd")
    image = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image).transpose(2, 1, 0), array)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
    for ijk in [(0, 0, 0), (4, 5, 6), (1, 3, 2)]:
        np.testing.assert_allclose(
            image.TransformIndexToPhysicalPoint(ijk), lps[:3, :3] @ ijk + lps[:3, 3], atol=1e-9
        )


def _segmented(affine=None) -> Volume:
    labels = np.zeros((10, 12, 6), np.uint8)
    labels[1:4, 2:6, 1:3] = 1
    labels[6:9, 7:11, 2:5] = 3
    meta = set_segments(
        {},
        [
            Segment(1, "liver", "#ff0000"),
            Segment(3, "kidney", "#00ff80"),
            Segment(4, "spleen", "#0000ff"),
        ],
    )
    return Volume(labels, AFFINES["LPS"] if affine is None else affine, metadata=meta)


def test_seg_nrrd_has_slicers_header_fields(tmp_path):
    out = save_seg_nrrd(_segmented(), tmp_path / "labels.seg.nrrd")
    fields = _header_fields(out)
    assert fields["space"] == "left-posterior-superior"
    assert fields["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert fields["Segmentation_ContainedRepresentationNames"] == "Binary labelmap|"
    assert fields["Segmentation_ReferenceImageExtentOffset"] == "0 0 0"
    assert fields["Segment0_Name"] == "liver" and fields["Segment0_LabelValue"] == "1"
    assert fields["Segment0_ID"] == "Segment_1" and fields["Segment0_Layer"] == "0"
    assert fields["Segment0_Color"] == "1 0 0"
    assert fields["Segment0_Extent"] == "1 3 2 5 1 2"
    assert fields["Segment1_Name"] == "kidney" and fields["Segment1_LabelValue"] == "3"
    assert fields["Segment1_Extent"] == "6 8 7 10 2 4"
    assert fields["Segment2_Name"] == "spleen" and fields["Segment2_Extent"] == "0 -1 0 -1 0 -1"
    back = load_nrrd(out)
    np.testing.assert_array_equal(back.array, _segmented().array)
    assert [(s.value, s.name, s.color) for s in segments_of(back)] == [
        (1, "liver", "#ff0000"),
        (3, "kidney", "#00ff80"),
        (4, "spleen", "#0000ff"),
    ]


def test_simpleitk_reads_our_seg_nrrd(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    out = save_seg_nrrd(_segmented(AFFINES["PSR_oblique"]), tmp_path / "labels.seg.nrrd")
    image = sitk.ReadImage(str(out))
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(image).transpose(2, 1, 0), _segmented().array
    )
    assert image.GetMetaData("Segment1_Name") == "kidney"


SLICER_HEADER = """NRRD0004
# Complete NRRD file format specification at:
# http://teem.sourceforge.net/nrrd/format.html
type: unsigned char
dimension: {dimension}
space: left-posterior-superior
sizes: {sizes}
space directions: {directions}
kinds: {kinds}
encoding: gzip
space origin: (-10,20,30)
measurement frame: (1,0,0) (0,1,0) (0,0,1)
{segments}Segmentation_ContainedRepresentationNames:=Binary labelmap|Closed surface|
{conversion}
Segmentation_MasterRepresentation:=Binary labelmap
Segmentation_ReferenceImageExtentOffset:=0 0 0

"""


CONVERSION = (
    "Segmentation_ConversionParameters:=Collapse labelmaps|1|Merge the labelmaps into as few "
    "shared labelmaps as possible&Reference image geometry|-0.8;0;0;10;0;-0.9;0;-20;0;0;2.5;30;"
    "0;0;0;1;0;9;0;11;0;5;|Image geometry&Smoothing factor|-0.5|Smoothing factor"
)


def _slicer_segment(n, name, color, value=None, layer=None, extent="0 9 0 11 0 5") -> str:
    lines = [
        f"Segment{n}_Color:={color}",
        f"Segment{n}_ColorAutoGenerated:=1",
        f"Segment{n}_Extent:={extent}",
        f"Segment{n}_ID:=Segment_{n + 1}",
        f"Segment{n}_Name:={name}",
        f"Segment{n}_NameAutoGenerated:=0",
        f"Segment{n}_Tags:=Segmentation.Status:inprogress|TerminologyEntry:Segmentation "
        "category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical "
        "Structure~SCT^10200004^Liver~^^~Anatomic codes - DICOM master list~^^~^^|",
    ]
    if value is not None:
        lines.append(f"Segment{n}_LabelValue:={value}")
    if layer is not None:
        lines.append(f"Segment{n}_Layer:={layer}")
    return "".join(line + "\n" for line in sorted(lines))


def _write_slicer(path, data: np.ndarray, segments: str):
    spatial = "(0.8,0,0) (0,0.9,0) (0,0,2.5)"
    four = data.ndim == 4
    header = SLICER_HEADER.format(
        dimension=data.ndim,
        sizes=" ".join(map(str, data.shape)),
        directions=("none " if four else "") + spatial,
        kinds=("list " if four else "") + "domain domain domain",
        segments=segments,
        conversion=CONVERSION,
    )
    path.write_bytes(header.encode() + gzip.compress(np.asfortranarray(data).tobytes(order="F")))
    return path


def test_a_slicer_segmentation_reads_back_with_names_colours_and_values(tmp_path):
    data = np.zeros((10, 12, 6), np.uint8)
    data[2:5, 3:6, 1:4] = 1
    data[6:9, 1:4, 2:5] = 7
    segments = _slicer_segment(0, "liver", "0.501961 0.682353 0.501961", 1, 0)
    segments += _slicer_segment(1, "tumor (left)", "0.945098 0.839216 0.568627", 7, 0)
    path = _write_slicer(tmp_path / "Segmentation.seg.nrrd", data, segments)
    back = load_volume(path)
    np.testing.assert_array_equal(back.array, data)  # Slicer's label values are kept
    assert [(s.value, s.name) for s in segments_of(back)] == [(1, "liver"), (7, "tumor (left)")]
    assert segments_of(back)[0].color == "#80ae80"  # Slicer's generic tissue colour
    np.testing.assert_allclose(
        back.affine,
        [[-0.8, 0, 0, 10], [0, -0.9, 0, -20], [0, 0, 2.5, 30], [0, 0, 0, 1]],
    )


def test_a_layered_slicer_segmentation_with_overlaps(tmp_path):
    data = np.zeros((2, 10, 12, 6), np.uint8)
    data[0, 2:6, 2:6, 1:4] = 1  # layer 0: "liver" value 1
    data[1, 4:8, 4:8, 1:4] = 1  # layer 1: "tumor" value 1, overlapping liver
    segments = _slicer_segment(0, "liver", "1 0 0", 1, 0)
    segments += _slicer_segment(1, "tumor", "0 1 0", 1, 1)
    back = load_volume(_write_slicer(tmp_path / "layers.seg.nrrd", data, segments))
    assert [(s.value, s.name) for s in segments_of(back)] == [(1, "liver"), (2, "tumor")]
    assert back.metadata["overlapping_voxels"] == 2 * 2 * 3
    assert np.count_nonzero(back.array == 2) == 4 * 4 * 3
    assert np.count_nonzero(back.array == 1) == 4 * 4 * 3 - 2 * 2 * 3


def test_an_old_slicer_segmentation_with_one_layer_per_segment(tmp_path):
    data = np.zeros((2, 10, 12, 6), np.uint8)
    data[0, 1:3, 1:3, 1:3] = 1
    data[1, 5:7, 5:7, 1:3] = 1
    segments = _slicer_segment(0, "a", "1 0 0") + _slicer_segment(1, "b", "0 0 1")
    back = load_volume(_write_slicer(tmp_path / "old.seg.nrrd", data, segments))
    assert [(s.value, s.name) for s in segments_of(back)] == [(1, "a"), (2, "b")]
    assert np.count_nonzero(back.array == 2) == 8


def test_a_label_map_named_seg_nrrd_without_segment_fields(tmp_path):
    plain = Volume(_segmented().array, AFFINES["RAS"])
    out = save_nrrd(plain, tmp_path / "x.nrrd")
    renamed = out.rename(tmp_path / "x.seg.nrrd")
    back = load_volume(renamed)
    assert [s.value for s in segments_of(back)] == [1, 3]
