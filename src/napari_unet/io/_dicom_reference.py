"""The source series of a DICOM SEG or RTSTRUCT: finding it, checking it, mapping into it.

Both objects refer to the image series they were drawn on (ReferencedSeriesSequence, or
the RT referenced study/series sequences) and share its Frame of Reference. Reading one
needs that series' headers (no pixel data): its voxel grid is the grid of the labels.
`find_series` looks for it where it was given, or beside the object (its folder, then the
folder above, searched recursively within the DICOM reader's bounds), and refuses with one
line when it is not there, or is another series, or another Frame of Reference.

Positions are DICOM LPS mm here; `SeriesHeaders.affine` is RAS (x and y negated).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from napari_unet.errors import InputError, VolumeReadError
from napari_unet.io._dicom_header import (
    NotRegularFile,
    _ShortRead,
    _StrictReader,
    has_preamble,
    open_regular,
    quiet,
)
from napari_unet.io.dicom import SeriesHeaders, SeriesInfo, list_series, read_series_headers
from napari_unet.text import printable

#: Objects that are not image series of their own (skipped when guessing a reference).
NOT_IMAGES = ("SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "PR", "KO")
#: A point is on a voxel plane / inside the grid within this many voxels.
VOXEL_TOL = 0.01


#: A DICOM object without pixel data (an RTSTRUCT) larger than this is refused (bytes).
MAX_OBJECT_BYTES = 2**30


@contextmanager
def malformed(path: Path, what: str) -> Iterator[None]:
    """Any error while interpreting a DICOM object becomes one line naming the file.

    pydicom converts values lazily, so bad bytes surface anywhere in the reading code.
    """
    try:
        with quiet():
            yield
    except InputError:
        raise
    except Exception as e:
        raise VolumeReadError(
            f"{path}: malformed {what} ({type(e).__name__}: {printable(e, limit=300)})"
        ) from e


def read_dataset(path: Path, what: str) -> Dataset:
    """Read a whole DICOM file that has no image (an RTSTRUCT), checked like the reader's
    headers: a regular file, the ``DICM`` marker, no element running past its end.

    Raises:
        VolumeReadError: naming the file and the problem.
    """
    try:
        raw = open_regular(path)
    except NotRegularFile as e:
        raise VolumeReadError(str(e)) from None
    except OSError as e:
        reason = "no such file" if not path.exists() else e.strerror or str(e)
        raise VolumeReadError(f"{path}: cannot open the file ({reason})") from None
    with raw:
        size = os.fstat(raw.fileno()).st_size
    if size > MAX_OBJECT_BYTES:
        raise VolumeReadError(f"{path}: {size} bytes, too large for an {what}")
    if not has_preamble(path):
        raise VolumeReadError(f"{path}: not a readable DICOM file (no 'DICM' marker at byte 128)")
    try:
        with quiet(), _StrictReader(open_regular(path)) as fp:
            ds = pydicom.dcmread(fp)
            ds.get("SOPClassUID")
    except _ShortRead:
        raise VolumeReadError(
            f"{path}: truncated or corrupt (an element runs past the end of the file)"
        ) from None
    except Exception as e:  # pydicom raises many kinds on garbage
        raise VolumeReadError(
            f"{path}: not a readable DICOM file ({type(e).__name__}: {printable(e, limit=200)})"
        ) from None
    if len(ds) == 0:
        raise VolumeReadError(f"{path}: truncated (no data set after the file meta header)")
    return ds


SEG_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
RTSTRUCT_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


def object_kind(path: str | os.PathLike[str]) -> str | None:
    """ "SEG" or "RTSTRUCT" for such a DICOM file, else None (never raises).

    Reads the file meta header (and, without one, the SOP Class UID) only.
    """
    try:
        if not has_preamble(path):
            return None
        with quiet(), open_regular(path) as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPClassUID"])
        meta = getattr(ds, "file_meta", None)
        uid = str((meta.get("MediaStorageSOPClassUID") if meta is not None else None) or "")
        uid = uid or str(ds.get("SOPClassUID", "") or "")
    except Exception:
        return None
    if uid in SEG_CLASSES:
        return "SEG"
    if uid == RTSTRUCT_CLASS:
        return "RTSTRUCT"
    return None


def uid_text(value: object) -> str:
    return printable(value if value is not None else "", limit=80)


def find_series(
    obj: Path, series_uid: str | None, reference: str | os.PathLike[str] | None
) -> SeriesHeaders:
    """The referenced series' headers and geometry.

    Args:
        obj: the SEG or RTSTRUCT file (for messages and for looking beside it).
        series_uid: the SeriesInstanceUID it refers to (None: it names none).
        reference: the series folder (or file) given by the user, if any.

    Raises:
        VolumeReadError: naming ``obj``: the series is not found, or ``reference`` holds
            another series.
    """
    if reference is not None:
        ref = Path(reference)
        series = _series_in(ref, strict=True)
        uid = _pick(obj, series, series_uid, ref)
        return read_series_headers(ref, series_uid=uid, skip_unreadable=True)
    if series_uid is None:
        raise VolumeReadError(
            f"{obj}: names no referenced series; give the series it was drawn on "
            "(--reference SERIES)"
        )
    here = obj.resolve().parent
    folders = [here] if here.parent == here else [here, here.parent]
    for folder in folders:
        if any(s.uid == series_uid for s in _series_in(folder)):
            return read_series_headers(folder, series_uid=series_uid, skip_unreadable=True)
    where = " or ".join(str(f) for f in folders)
    raise VolumeReadError(
        f"{obj}: its referenced series {uid_text(series_uid)} is not in {where}; "
        "give the series it was drawn on (--reference SERIES)"
    )


def _series_in(folder: Path, *, strict: bool = False) -> list[SeriesInfo]:
    try:
        return list_series(folder, skip_unreadable=True)
    except VolumeReadError:
        if strict:
            raise
        return []


def _pick(obj: Path, series: list[SeriesInfo], uid: str | None, ref: Path) -> str:
    images = [s for s in series if s.modality not in NOT_IMAGES]
    if uid is not None:
        if any(s.uid == uid for s in series):
            return uid
        found = ", ".join(f"{s.label} [uid {s.uid}]" for s in images[:3]) or "no image series"
        raise VolumeReadError(
            f"{obj}: refers to series {uid_text(uid)}, but {ref} holds {found}; "
            "give the series the segmentation was drawn on"
        )
    if len(images) != 1:
        raise VolumeReadError(
            f"{obj}: names no referenced series and {ref} holds {len(images)} image series; "
            "give the folder of one series"
        )
    return images[0].uid


def frame_of_reference(series: SeriesHeaders) -> str:
    return str(series.headers[0].ds.get("FrameOfReferenceUID", "") or "")


def check_frame_of_reference(obj: Path, uid: str | None, series: SeriesHeaders) -> None:
    """Refuse an object whose Frame of Reference is not its series'."""
    theirs = frame_of_reference(series)
    if uid and theirs and uid != theirs:
        raise VolumeReadError(
            f"{obj}: is in frame of reference {uid_text(uid)}, but its series "
            f"{series.info.label} is in {uid_text(theirs)}; it was drawn on another scan"
        )
    if not uid:
        raise VolumeReadError(f"{obj}: has no FrameOfReferenceUID; cannot place it on a scan")


def affine_lps(series: SeriesHeaders) -> np.ndarray:
    """Voxel ``(i, j, k)`` → LPS mm."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ series.affine


def to_voxels(series: SeriesHeaders, points_lps: np.ndarray) -> np.ndarray:
    """``(n, 3)`` LPS mm → ``(n, 3)`` continuous voxel indices ``(i, j, k)``."""
    inverse = np.linalg.inv(affine_lps(series))
    points = np.asarray(points_lps, float).reshape(-1, 3)
    return points @ inverse[:3, :3].T + inverse[:3, 3]


def to_world(series: SeriesHeaders, ijk: np.ndarray) -> np.ndarray:
    """``(n, 3)`` voxel indices → ``(n, 3)`` LPS mm."""
    affine = affine_lps(series)
    return np.asarray(ijk, float).reshape(-1, 3) @ affine[:3, :3].T + affine[:3, 3]


#: Patient and study attributes of type 2 (present, may be empty) that writers copy.
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def source_datasets(series: SeriesHeaders) -> list[Dataset]:
    """Copies of the headers to reference: one per slice ``k`` (single-frame files), or
    the one multi-frame file; type-2 patient/study attributes a file lacks are added
    empty (DICOM allows that; highdicom copies them).

    Raises:
        InputError: the series has no StudyInstanceUID (a SEG must name its study).
    """
    if series.frames[0].frame_index is not None:
        headers = [h.ds for h in series.headers]
    else:
        headers = [series.headers[f.file_index].ds for f in series.frames]
    if not headers[0].get("StudyInstanceUID"):
        raise InputError(
            f"{series.info.files[0]}: has no StudyInstanceUID; a DICOM SEG or RTSTRUCT "
            "must name the study of its series"
        )
    out = []
    for ds in headers:
        copy = Dataset(ds)  # a new dict of the same elements; the header stays as read
        copy.file_meta = getattr(ds, "file_meta", None) or Dataset()
        for keyword in _TYPE2:
            if keyword not in copy:
                setattr(copy, keyword, "")
        out.append(copy)
    return out


def check_grid(what: str, affine: np.ndarray, shape: Sequence[int], series: SeriesHeaders) -> None:
    """Refuse labels that are not on the series' voxel grid (with the reason)."""
    from napari_unet.io.labelmap import grid_difference

    problem = grid_difference(affine, shape, series.affine, series.shape)
    if problem is not None:
        raise InputError(
            f"{what}: is not on the grid of the DICOM series {series.info.label} "
            f"({problem}); labels must be drawn on that series"
        )
