"""Hostile clinical-format inputs (issue 13): DICOM SEG, RTSTRUCT, NRRD and convert.

Each case damages a valid file (or builds a bad one) and runs `napari-unet info` or
`convert` in-process: exit 2 and one line naming the file and the problem
(`tests.hostile.contract.refuse`). A valid SEG and RTSTRUCT are written once per module
over a small series; every case works on its own copy.
"""

from __future__ import annotations

import functools
import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import generate_uid

from napari_unet.cli import main
from tests.hostile.contract import no_temp_files, refuse
from tests.io.dicom_series import label_map, write_source_series

pytestmark = pytest.mark.timeout(120)
hd = pytest.importorskip("highdicom")


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """study/ct (a series), study/other (another series), study/seg.dcm, study/rs.dcm."""
    from napari_unet.io.dicom import load_dicom
    from napari_unet.io.dicom_seg import write_dicom_seg
    from napari_unet.io.rtstruct import write_rtstruct

    root = tmp_path_factory.mktemp("study")
    write_source_series(root / "ct", shape_kji=(5, 14, 16))
    write_source_series(root / "other", shape_kji=(5, 14, 16), origin=(0.0, 0.0, 0.0))
    scan = load_dicom(root / "ct")
    labels = scan.with_array(label_map(scan.shape))
    labels.metadata = {"label_names": ["liver", "kidney", "tumour"]}
    write_dicom_seg(labels, root / "ct", root / "seg.dcm")
    write_rtstruct(labels, root / "ct", root / "rs.dcm")
    return root


def _copy(study: Path, tmp_path: Path, name: str, *, with_series: bool = True) -> Path:
    """The study's ``name`` in a fresh folder (with the series beside it, or alone)."""
    folder = tmp_path / "case"
    folder.mkdir()
    if with_series:
        shutil.copytree(study / "ct", folder / "ct")
    return Path(shutil.copy(study / name, folder / name))


def _edit(path: Path, edit: Callable[[pydicom.Dataset], object]) -> Path:
    ds = pydicom.dcmread(path)
    with pydicom.config.disable_value_validation():
        edit(ds)
        ds.save_as(path)
    return path


def _frames(ds):
    return ds.PerFrameFunctionalGroupsSequence


def _shift_frame(ds, index: int, offset_mm: float):
    position = _frames(ds)[index].PlanePositionSequence[0]
    ipp = [float(v) for v in position.ImagePositionPatient]
    position.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + offset_mm]


def _drop_frames(ds):
    ds.PerFrameFunctionalGroupsSequence = _frames(ds)[:-2]


def _contours(ds):
    return ds.ROIContourSequence[0].ContourSequence


def _move_contour(ds, dx: float = 0.0, dz: float = 0.0):
    contour = _contours(ds)[0]
    points = np.asarray(contour.ContourData, float).reshape(-1, 3) + np.array([dx, 0.0, dz])
    contour.ContourData = [f"{v:.6g}" for v in points.reshape(-1)]


def _drop_roi_names(ds):
    ds.StructureSetROISequence = ds.StructureSetROISequence[1:]


# name → (file, edit or None, fragment, keep the series beside it)
DICOM_CASES: dict[str, tuple[str, Callable | None, str, bool]] = {
    "seg-referenced-series-missing": ("seg.dcm", None, "is not in", False),
    "seg-other-frame-of-reference": (
        "seg.dcm",
        lambda ds: setattr(ds, "FrameOfReferenceUID", generate_uid()),
        "frame of reference",
        True,
    ),
    "seg-missing-frames": ("seg.dcm", _drop_frames, "frames are missing", True),
    "seg-frame-between-slices": (
        "seg.dcm",
        lambda ds: _shift_frame(ds, 0, 1.0),
        "is not on a slice",
        True,
    ),
    "seg-frame-outside-the-series": (
        "seg.dcm",
        lambda ds: _shift_frame(ds, 0, 2.5 * 40),
        "lies outside",
        True,
    ),
    "seg-undescribed-segment": (
        "seg.dcm",
        lambda ds: setattr(
            _frames(ds)[0].SegmentIdentificationSequence[0], "ReferencedSegmentNumber", 9
        ),
        "segment 9",
        True,
    ),
    "seg-other-orientation": (
        "seg.dcm",
        lambda ds: setattr(
            ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0],
            "ImageOrientationPatient",
            [0, 1, 0, 1, 0, 0],
        ),
        "another grid",
        True,
    ),
    "seg-other-pixel-spacing": (
        "seg.dcm",
        lambda ds: setattr(
            ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0], "PixelSpacing", [2, 2]
        ),
        "pixel spacing",
        True,
    ),
    "seg-without-segments": (
        "seg.dcm",
        lambda ds: delattr(ds, "SegmentSequence"),
        "segments",
        True,
    ),
    "seg-columns-disagree-with-pixel-data": (
        "seg.dcm",
        lambda ds: setattr(ds, "Columns", 8),
        "pixel data is longer",
        True,
    ),
    "rt-referenced-series-missing": ("rs.dcm", None, "is not in", False),
    "rt-other-frame-of-reference": (
        "rs.dcm",
        lambda ds: setattr(
            ds.ReferencedFrameOfReferenceSequence[0], "FrameOfReferenceUID", generate_uid()
        ),
        "frame of reference",
        True,
    ),
    "rt-contour-outside-the-grid": (
        "rs.dcm",
        lambda ds: _move_contour(ds, dx=500.0),
        "outside the grid",
        True,
    ),
    "rt-contour-between-slices": (
        "rs.dcm",
        lambda ds: _move_contour(ds, dz=1.1),
        "not on a slice",
        True,
    ),
    "rt-point-count-mismatch": (
        "rs.dcm",
        lambda ds: setattr(_contours(ds)[0], "NumberOfContourPoints", 3),
        "coordinates for 3 points",
        True,
    ),
    "rt-contours-for-an-unknown-roi": ("rs.dcm", _drop_roi_names, "lacks", True),
    "rt-without-rois": (
        "rs.dcm",
        lambda ds: delattr(ds, "StructureSetROISequence"),
        "without ROIs",
        True,
    ),
}


@pytest.mark.parametrize("case", sorted(DICOM_CASES))
def test_malformed_seg_and_rtstruct_exit_2_naming_the_file(study, tmp_path, capsys, case):
    name, edit, fragment, with_series = DICOM_CASES[case]
    path = _copy(study, tmp_path, name, with_series=with_series)
    if edit is not None:
        _edit(path, edit)
    before = path.read_bytes()
    refuse(capsys, ["info", path], str(path), fragment)
    out = tmp_path / "out.nii.gz"
    refuse(capsys, ["convert", path, out], str(path), fragment)
    assert not out.exists() and path.read_bytes() == before


@pytest.mark.parametrize("name", ["seg.dcm", "rs.dcm"])
def test_truncated_seg_and_rtstruct(study, tmp_path, capsys, name):
    path = _copy(study, tmp_path, name)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) * 2 // 3])
    refuse(capsys, ["info", path], str(path), "truncated")


@pytest.mark.parametrize("name", ["seg.dcm", "rs.dcm"])
def test_a_reference_that_is_another_series(study, tmp_path, capsys, name):
    path = _copy(study, tmp_path, name, with_series=False)
    refuse(capsys, ["info", path, "--reference", study / "other"], str(path), "refers to series")


# --- NRRD -----------------------------------------------------------------------------------

GOOD = {
    "type": "uint8",
    "dimension": "3",
    "space": "left-posterior-superior",
    "sizes": "4 5 6",
    "space directions": "(1,0,0) (0,1,0) (0,0,2)",
    "kinds": "domain domain domain",
    "encoding": "raw",
    "space origin": "(0,0,0)",
}


def _nrrd(path: Path, data: bytes | None = None, magic: bytes = b"NRRD0004", **fields) -> Path:
    header = {**GOOD, **{k.replace("_", " "): v for k, v in fields.items()}}
    lines = [f"{k}: {v}" for k, v in header.items() if v is not None]
    lines = [line.replace("Segment0 ", "Segment0_").replace(": ", ":=", 1) if "Segment" in line
             else line for line in lines]  # fmt: skip
    payload = bytes(4 * 5 * 6) if data is None else data
    path.write_bytes(magic + b"\n" + "\n".join(lines).encode() + b"\n\n" + payload)
    return path


def _flipped_gzip() -> bytes:
    data = bytearray(gzip.compress(np.arange(120, dtype=np.uint8).tobytes()))
    data[-6] ^= 0xFF  # the CRC
    return bytes(data)


NRRD_CASES: dict[str, tuple[dict, str]] = {
    "not-nrrd": ({"magic": b"P6 4 4"}, "not an NRRD file"),
    "missing-sizes": ({"sizes": None}, "no 'sizes' field"),
    "sizes-dimension-mismatch": ({"sizes": "4 5"}, "dimension 3 but 2 sizes"),
    "zero-size": ({"sizes": "4 0 6"}, "must be positive"),
    "unknown-type": ({"type": "quaternion"}, "unsupported NRRD type"),
    "unknown-encoding": ({"encoding": "zstd"}, "unsupported NRRD encoding"),
    "detached-data-file": ({"data_file": "/dev/zero"}, "detached NRRD header"),
    "truncated-raw-data": ({"data": bytes(10)}, "truncated"),
    "corrupt-gzip": ({"encoding": "gzip", "data": _flipped_gzip()}, "corrupt gzip"),
    "gzip-longer-than-declared": (
        {"encoding": "gzip", "data": gzip.compress(bytes(4 * 5 * 6 + 9))},
        "more voxels than its sizes declare",
    ),
    "short-gzip": ({"encoding": "gzip", "data": gzip.compress(bytes(7))}, "truncated"),
    "singular-directions": ({"space_directions": "(1,0,0) (2,0,0) (0,0,2)"}, "singular"),
    "non-numeric-directions": ({"space_directions": "(1,0,0) (a,b,c) (0,0,2)"}, "bad NRRD header"),
    "unknown-space": ({"space": "scanner-xyz"}, "unsupported NRRD space"),
    "two-dimensional": ({"dimension": "2", "sizes": "4 5"}, "2D NRRD"),
    "huge-declared-size": ({"sizes": "4000 4000 4000", "type": "double"}, "GiB"),
    "2-byte-type-without-endian": ({"type": "short"}, "endian"),
    "non-finite-origin": ({"space_origin": "(nan,0,0)"}, "non-finite"),
    "bad-segment-label-value": ({"Segment0 LabelValue": "one"}, "Segment0"),
    "segment-layer-out-of-range": ({"Segment0 Layer": "3"}, "Segment0_Layer is 3"),
}


@pytest.mark.parametrize("case", sorted(NRRD_CASES))
def test_malformed_nrrd_exit_2_naming_the_file(tmp_path, capsys, case):
    fields, fragment = NRRD_CASES[case]
    fields = dict(fields)
    magic = fields.pop("magic", b"NRRD0004")
    data = fields.pop("data", None)
    path = _nrrd(tmp_path / "bad.nrrd", data, magic, **fields)
    refuse(capsys, ["info", path], str(path), fragment)
    out = tmp_path / "out.nii.gz"
    refuse(capsys, ["convert", path, out], str(path), fragment)
    assert not out.exists() and no_temp_files(tmp_path) == []


def test_an_nrrd_header_without_end_is_refused_after_a_bounded_read(tmp_path, capsys):
    path = tmp_path / "endless.nrrd"
    path.write_bytes(b"NRRD0004\n" + b"# comment\n" * 600_000)
    refuse(capsys, ["info", path], str(path), "header is longer than")


# --- convert ------------------------------------------------------------------------------


@pytest.fixture
def label_nifti(study, tmp_path) -> Path:
    import nibabel as nib

    from napari_unet.io.dicom import load_dicom

    scan = load_dicom(study / "ct")
    path = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(label_map(scan.shape), scan.affine), path)
    return path


def test_convert_refusals(study, label_nifti, tmp_path, capsys):
    import nibabel as nib

    out = tmp_path / "o"
    refuse(capsys, ["convert", label_nifti, f"{out}.dcm"], "--format dicom-seg")
    refuse(
        capsys,
        ["convert", label_nifti, f"{out}.dcm", "--format", "rtstruct"],
        "--reference SERIES",
    )
    refuse(
        capsys, ["convert", label_nifti, f"{out}.dcm", "--format", "nifti"], "needs a name ending"
    )
    refuse(
        capsys,
        ["convert", label_nifti, f"{out}.nii.gz", "--format", "dicom-seg"],
        "writes a DICOM file",
    )
    moved = tmp_path / "moved.nii.gz"
    image = nib.load(label_nifti)
    affine = image.affine.copy()
    affine[2, 3] += 2.5
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), affine), moved)
    refuse(
        capsys,
        ["convert", moved, f"{out}.dcm", "--format", "dicom-seg", "--reference", study / "ct"],
        "not on the grid of the DICOM series",
        "mm away",
    )
    image_nifti = tmp_path / "image.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 0.5, np.float32), np.eye(4)), image_nifti)
    refuse(capsys, ["convert", image_nifti, f"{out}.seg.nrrd"], str(image_nifti), "fractional")
    assert not list(tmp_path.glob("o.*")) and no_temp_files(tmp_path) == []


def test_convert_into_the_reference_series_folder_is_refused(study, label_nifti, capsys):
    refuse(
        capsys,
        [
            "convert",
            label_nifti,
            study / "ct" / "seg.dcm",
            "--format",
            "dicom-seg",
            "--reference",
            study / "ct",
        ],
        "is also an input",
    )


# --- fuzzing: a flipped bit, a cut, a changed header line never escape as a crash -----------


@functools.cache
def _seg_nrrd_bytes() -> bytes:
    import tempfile

    from napari_unet.io.labelmap import Segment, set_segments
    from napari_unet.io.nrrd import save_seg_nrrd
    from napari_unet.io.volume import Volume

    labels = np.zeros((6, 5, 4), np.uint8)
    labels[1:3, 1:4, 1:3] = 2
    meta = set_segments({}, [Segment(2, "kidney", "#00ff00")])
    with tempfile.TemporaryDirectory() as folder:
        out = save_seg_nrrd(Volume(labels, np.diag([-1.0, -1.0, 2.0, 1.0]), metadata=meta),
                            Path(folder) / "x.seg.nrrd")  # fmt: skip
        return out.read_bytes()


@st.composite
def mutated_nrrd(draw) -> bytes:
    data = bytearray(_seg_nrrd_bytes())
    end = data.index(b"\n\n")
    for _ in range(draw(st.integers(0, 4))):
        where = draw(st.integers(0, end if draw(st.booleans()) else len(data) - 1))
        data[where] = (
            draw(st.sampled_from(b"0123456789 -.,()aex\n:="))
            if where < end
            else (data[where] ^ 1 << draw(st.integers(0, 7)))
        )
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@settings(
    max_examples=120,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=mutated_nrrd())
def test_mutated_seg_nrrd_loads_or_raises_one_line(data, tmp_path):
    from napari_unet.errors import InputError
    from napari_unet.io.reader import load_volume

    path = tmp_path / "m.seg.nrrd"
    path.write_bytes(data)
    try:
        volume = load_volume(path)
    except InputError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        return
    assert volume.array.ndim == 3 and np.isfinite(volume.affine).all()


@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 7)), max_size=4), cut=st.booleans())
def test_mutated_seg_and_rtstruct_load_or_raise_one_line(study, tmp_path, flips, cut):
    from napari_unet.errors import InputError
    from napari_unet.io.reader import load_volume

    for name in ("seg.dcm", "rs.dcm"):
        data = bytearray((study / name).read_bytes())
        for where, bit in flips:
            data[132 + int(where * (len(data) - 133))] ^= 1 << bit
        if cut:
            data = data[: len(data) * 9 // 10]
        path = tmp_path / name
        path.write_bytes(bytes(data))
        try:
            load_volume(path, reference=study / "ct")
        except InputError as e:
            assert "\n" not in str(e) and str(path) in str(e)


def test_the_corpus_keeps_its_size():
    assert len(DICOM_CASES) + len(NRRD_CASES) >= 30
    assert main is not None
