"""Label maps: segment names and colours, detection, and the "same grid" check.

A label map is a `Volume` whose array holds non-negative integer labels (0 = background).
What each label means travels in ``volume.metadata``:

* ``"segments"``: a list of ``{"value", "name", "color"}`` (colour ``"#rrggbb"``), one per
  label value, in the order the file listed them (DICOM SEG, RTSTRUCT, Slicer's .seg.nrrd);
* ``"label_names"`` / ``"label_colors"``: the older form for labels 1, 2, … N, written by
  the loop and by predictions. `segments_of` reads either and fills in what is missing.

Detection (`looks_like_label_map`) is deliberately narrow, because opening a scan as
labels by mistake is worse than the other way round: integer (or boolean) voxels, all in
0..255, 0 among them, and at most `MAX_DETECTED_LABELS` distinct values (a TotalSegmentator
map has 118; an 8-bit scan uses nearly all 256). Anything else opens as an image unless
the user asks for labels explicitly (`as_label_array`).

No torch, Qt or napari here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from napari_unet.errors import InputError
from napari_unet.io.volume import Volume
from napari_unet.text import printable

__all__ = [
    "DEFAULT_COLORS",
    "MAX_DETECTED_LABELS",
    "Algorithm",
    "Segment",
    "as_label_array",
    "embed_in_grid",
    "grid_difference",
    "hex_to_rgb",
    "looks_like_label_map",
    "rgb_to_hex",
    "segments_of",
    "set_segments",
]

#: Colours for labels 1, 2, … when a file gives none; new models' specs use them too
#: (napari-like, distinguishable on grey scans).
DEFAULT_COLORS = (
    "#ff4b4b",
    "#4bd14b",
    "#4b8bff",
    "#ffd24b",
    "#d24bff",
    "#4bffe6",
    "#ff9d4b",
    "#a0a0ff",
)
#: A label map found by detection has at most this many distinct values (0 included).
MAX_DETECTED_LABELS = 160
#: Largest label value a label map may hold (uint16, as DICOM SEG and Slicer allow).
MAX_LABEL_VALUE = 65535
#: Longest segment name kept (DICOM SegmentLabel is 64 characters).
MAX_NAME_CHARS = 64
#: Two grids are "the same" when their affines agree to this many mm (float32 NIfTI
#: stores a DICOM affine to about 1e-5 mm) …
GRID_ATOL_MM = 1e-3
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class Segment:
    """One class of a label map.

    Attributes:
        value: the label value in the array (1 … 65535).
        name: a printable name (at most 64 characters).
        color: ``"#rrggbb"``.
    """

    value: int
    name: str
    color: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Algorithm:
    """The model that made a label map (provenance written into DICOM SEG and RTSTRUCT).

    Attributes:
        name: the model's name (e.g. "unet-2d").
        version: its version hash.
    """

    name: str
    version: str


def describe_segments(segments: Sequence[Segment]) -> str:
    """``"1 liver, 2 kidney"`` (for `napari-unet info`)."""
    return ", ".join(f"{s.value} {s.name}" for s in segments)


def default_color(value: int) -> str:
    return DEFAULT_COLORS[(int(value) - 1) % len(DEFAULT_COLORS)]


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """``"#rrggbb"`` → (r, g, b) in 0..255 (ValueError on anything else)."""
    if not isinstance(color, str) or not _HEX.match(color):
        raise ValueError(f"color must be '#rrggbb', got {printable(repr(color), limit=40)}")
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def rgb_to_hex(rgb: Iterable[float], *, scale: float = 255.0) -> str:
    """Three components in 0..``scale`` → ``"#rrggbb"`` (clipped, rounded)."""
    values = [float(v) for v in rgb][:3]
    if len(values) != 3 or not all(np.isfinite(values)):
        raise ValueError(f"a colour needs three finite components, got {values}")
    r, g, b = (round(min(max(v / scale, 0.0), 1.0) * 255) for v in values)
    return f"#{r:02x}{g:02x}{b:02x}"


def clean_name(name: object, value: int) -> str:
    """A segment name safe to show and to write (printable, ≤ 64 characters)."""
    text = printable(name if name is not None else "", limit=MAX_NAME_CHARS)
    return text or f"label {value}"


def segments_of(volume: Volume, *, present_only: bool = False) -> list[Segment]:
    """The segments of a label map: from its metadata, completed from its values.

    Args:
        volume: a label map.
        present_only: leave out described segments whose value does not occur (and do
            not add undescribed ones); by default every described segment is kept and
            every undescribed value > 0 gets ``"label N"`` and a default colour.

    Returns:
        Segments ordered by value.
    """
    meta = volume.metadata
    found: dict[int, Segment] = {}
    for item in meta.get("segments") or []:
        value = int(item["value"])
        found[value] = Segment(value, clean_name(item.get("name"), value), _color(item, value))
    described = bool(found)  # "segments" wins over the label_names/label_colors lists
    names = [] if described else list(meta.get("label_names") or [])
    colors = list(meta.get("label_colors") or [])
    for n, name in enumerate(names, start=1):
        if n not in found:
            given = str(colors[n - 1]) if n - 1 < len(colors) else ""
            color = given.lower() if _HEX.match(given) else default_color(n)
            found[n] = Segment(n, clean_name(name, n), color)
    values = present_values(volume.array)
    if present_only:
        return [found[v] for v in sorted(found) if v in values]
    for v in values:
        if v not in found:
            found[v] = Segment(v, f"label {v}", default_color(v))
    return [found[v] for v in sorted(found)]


def _color(item: dict[str, Any], value: int) -> str:
    color = item.get("color")
    return color.lower() if isinstance(color, str) and _HEX.match(color) else default_color(value)


def set_segments(metadata: dict[str, Any], segments: Sequence[Segment]) -> dict[str, Any]:
    """Store ``segments`` in ``metadata`` (both forms; names/colours lists by value 1..max)."""
    metadata["segments"] = [s.to_json() for s in segments]
    top = max((s.value for s in segments), default=0)
    by_value = {s.value: s for s in segments}
    if top <= 1024:
        metadata["label_names"] = [
            by_value[v].name if v in by_value else f"label {v}" for v in range(1, top + 1)
        ]
        metadata["label_colors"] = [
            by_value[v].color if v in by_value else default_color(v) for v in range(1, top + 1)
        ]
    return metadata


def present_values(array: np.ndarray) -> list[int]:
    """The label values > 0 that occur in ``array`` (an integer array), sorted."""
    if array.size == 0:
        return []
    if array.dtype.kind in "ub" and array.dtype.itemsize <= 2:
        counts = np.bincount(array.reshape(-1).astype(np.intp, copy=False))
        return [int(v) for v in np.flatnonzero(counts) if v > 0]
    return [int(v) for v in np.unique(array) if v > 0]


def looks_like_label_map(array: np.ndarray) -> bool:
    """True for integer (or bool) voxels in 0..255 with 0 and few distinct values."""
    if array.dtype == bool:
        return True
    if array.dtype.kind not in "iu" or array.size == 0:
        return False
    low, high = int(array.min()), int(array.max())
    if low != 0 or high > 255:
        return False
    counts = np.bincount(array.reshape(-1).astype(np.intp, copy=False), minlength=1)
    return int(np.count_nonzero(counts)) <= MAX_DETECTED_LABELS


def as_label_array(volume: Volume, *, what: str | None = None) -> np.ndarray:
    """The volume's voxels as labels in the smallest unsigned dtype.

    Float voxels are accepted when every value is a whole number (some tools write label
    maps as float32).

    Raises:
        InputError: a value is negative, fractional, not finite or above 65535.
    """
    from napari_unet.io.volume import smallest_label_dtype

    what = what or str(volume.source or "the label map")
    array = volume.array
    if array.dtype == bool:
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            raise InputError(f"{what}: holds NaN or infinite values, not labels")
        if not np.all(array == np.round(array)):
            raise InputError(
                f"{what}: holds fractional values (an image or a probability map, not labels)"
            )
    elif array.dtype.kind not in "iu":
        raise InputError(f"{what}: holds {array.dtype} values, not integer labels")
    if array.size == 0:
        return array.astype(np.uint8)
    low, high = array.min(), array.max()
    if low < 0:
        raise InputError(f"{what}: holds negative values (down to {low:g}), not labels")
    if high > MAX_LABEL_VALUE:
        raise InputError(
            f"{what}: holds values up to {high:g}; labels go up to {MAX_LABEL_VALUE} "
            "(is it an image?)"
        )
    array = array.astype(np.int64, copy=False) if array.dtype.kind == "f" else array
    return array.astype(smallest_label_dtype(array), copy=False)


def grid_difference(
    affine: np.ndarray,
    shape: Sequence[int],
    ref_affine: np.ndarray,
    ref_shape: Sequence[int],
    *,
    atol: float = GRID_ATOL_MM,
) -> str | None:
    """Why two voxel grids differ (shape, voxel size, orientation, position), or None.

    Both affines map voxel indices to the same world frame (RAS, mm). The affines may
    differ by float32 rounding (``atol`` mm on every entry, scaled by the grid's size for
    the position of the far corner).
    """
    shape, ref_shape = tuple(int(s) for s in shape), tuple(int(s) for s in ref_shape)
    if shape != ref_shape:
        return f"shape {shape} instead of {ref_shape}"
    a, b = np.asarray(affine, float), np.asarray(ref_affine, float)
    spacing, ref_spacing = np.linalg.norm(a[:3, :3], axis=0), np.linalg.norm(b[:3, :3], axis=0)
    if not np.allclose(spacing, ref_spacing, rtol=1e-5, atol=atol):
        return f"voxel size {_mm(spacing)} mm instead of {_mm(ref_spacing)} mm"
    directions = a[:3, :3] / spacing
    ref_directions = b[:3, :3] / ref_spacing
    if not np.allclose(directions, ref_directions, atol=1e-4):
        return "another orientation of the voxel axes"
    if not np.allclose(a[:3, 3], b[:3, 3], atol=atol):
        shift = float(np.linalg.norm(a[:3, 3] - b[:3, 3]))
        return f"its first voxel {shift:.3g} mm away"
    corner = np.asarray(ref_shape, float) - 1
    far = np.linalg.norm((a[:3, :3] - b[:3, :3]) @ corner)
    if far > max(atol, 1e-5 * float(np.linalg.norm(b[:3, :3] @ corner))):
        return f"its last voxel {far:.3g} mm away"
    return None


def embed_in_grid(labels: Volume, affine: np.ndarray, shape: Sequence[int]) -> Volume | None:
    """``labels`` padded with 0 onto a larger grid that contains it, or None.

    The grids must share voxel size and axes, and ``labels``' first voxel must sit on a
    voxel of the larger grid (3D Slicer writes segmentations cropped to their extent).
    Labels falling outside the larger grid make it None too.
    """
    a, b = np.asarray(labels.affine, float), np.asarray(affine, float)
    if not np.allclose(a[:3, :3], b[:3, :3], atol=1e-5):
        return None
    offset = np.linalg.solve(b[:3, :3], a[:3, 3] - b[:3, 3])
    start = np.rint(offset)
    if not np.allclose(offset, start, atol=1e-3):
        return None
    start = start.astype(int)
    stop = start + np.asarray(labels.shape)
    shape = tuple(int(s) for s in shape)
    if np.any(start < 0) or np.any(stop > np.asarray(shape)):
        return None
    out = np.zeros(shape, dtype=labels.array.dtype)
    out[tuple(slice(int(s), int(e)) for s, e in zip(start, stop, strict=True))] = labels.array
    embedded = Volume(out, b.copy(), labels.modality, dict(labels.metadata), labels.source)
    embedded.metadata["embedded_at"] = start.tolist()
    return embedded


def _mm(values: Iterable[float]) -> str:
    return " x ".join(f"{v:.4g}" for v in values)
