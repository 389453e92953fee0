"""3D Slicer's segmentation fields in NRRD headers (``.seg.nrrd``): read and write.

Slicer stores each segment as ``Segment{N}_ID``, ``_Name``, ``_Color`` (r g b in 0…1),
``_LabelValue``, ``_Layer``, ``_Extent`` (i0 i1 j0 j1 k0 k1; empty: ``0 -1 0 -1 0 -1``),
``_Tags`` …, with ``Segmentation_*`` fields for the whole file, over a 3D label map (one
layer) or a 4D ``list`` of layers (overlapping segments; Slicer before 4.11 wrote one
layer per segment without ``_LabelValue``). See `napari_unet.io.nrrd` for the file itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.errors import VolumeReadError
from napari_unet.io.labelmap import Segment, clean_name, default_color, hex_to_rgb, rgb_to_hex
from napari_unet.io.volume import smallest_label_dtype

#: Segments read from one file, at most.
MAX_SEGMENTS = 65535
SEGMENT_FIELD = re.compile(r"^Segment(\d+)_(\w+)$")


def has_segment_fields(header: dict[str, Any]) -> bool:
    return any(SEGMENT_FIELD.match(key) for key in header)


def segmentation_labels(
    path: Path, header: dict[str, Any], array: np.ndarray
) -> tuple[np.ndarray, list[Segment], int]:
    """A Slicer segmentation's label map (i, j, k) and its segments."""
    fields: dict[int, dict[str, str]] = {}
    for key, value in header.items():
        match = SEGMENT_FIELD.match(key)
        if match:
            fields.setdefault(int(match.group(1)), {})[match.group(2)] = str(value)
    if len(fields) > MAX_SEGMENTS:
        raise VolumeReadError(f"{path}: {len(fields)} segments, more than {MAX_SEGMENTS}")
    layers = array[None] if array.ndim == 3 else array
    if array.dtype.kind not in "iu":
        raise VolumeReadError(f"{path}: a segmentation of {array.dtype} values, not labels")
    specs = []
    for n in sorted(fields):
        f = fields[n]
        try:
            layer = int(f.get("Layer", n if array.ndim == 4 and "LabelValue" not in f else 0))
            value = int(f.get("LabelValue", 1))
        except ValueError:
            raise VolumeReadError(
                f"{path}: bad Segment{n} header (Layer or LabelValue is not a whole number)"
            ) from None
        if not 0 <= layer < layers.shape[0]:
            raise VolumeReadError(
                f"{path}: Segment{n}_Layer is {layer}, but the file has {layers.shape[0]} layer(s)"
            )
        if not 1 <= value <= 65535:
            raise VolumeReadError(f"{path}: Segment{n}_LabelValue is {value}, not 1…65535")
        specs.append((n, layer, value, f))
    keep_values = layers.shape[0] == 1 and len({v for _, _, v, _ in specs}) == len(specs)
    if not specs:  # a label map named .seg.nrrd without Segment fields
        if layers.shape[0] != 1:
            raise VolumeReadError(f"{path}: a 4D segmentation without Segment fields")
        labels = layers[0]
        if labels.size and (labels.min() < 0 or labels.max() > 65535):
            raise VolumeReadError(f"{path}: label values outside 0…65535")
        return labels.astype(smallest_label_dtype(labels), copy=False), [], 0
    if keep_values:
        labels = layers[0]
        known = np.zeros(int(max(labels.max(initial=0), max(v for _, _, v, _ in specs))) + 1, bool)
        for _, _, value, _ in specs:
            known[value] = True
        known[0] = True
        if labels.min(initial=0) < 0 or not np.all(known[labels]):
            labels = np.where(np.isin(labels, [v for _, _, v, _ in specs]), labels, 0)
        out = labels.astype(smallest_label_dtype(labels), copy=False)
        overlaps = 0
        values = [v for _, _, v, _ in specs]
    else:
        dtype = np.uint8 if len(specs) < 256 else np.uint16
        out = np.zeros(layers.shape[1:], dtype=dtype)
        overlaps = 0
        values = []
        for number, (_, layer, value, _) in enumerate(specs, start=1):
            mask = layers[layer] == value
            overlaps += int(np.count_nonzero(out[mask]))
            out[mask] = number
            values.append(number)
    segments = [
        Segment(v, clean_name(f.get("Name") or f.get("ID"), v), _slicer_color(f.get("Color"), v))
        for v, (_, _, _, f) in zip(values, specs, strict=True)
    ]
    return out, segments, overlaps


def _slicer_color(text: str | None, value: int) -> str:
    try:
        parts = [float(p) for p in (text or "").split()]
        return rgb_to_hex(parts, scale=1.0) if len(parts) == 3 else default_color(value)
    except ValueError:
        return default_color(value)


def segment_fields(array: np.ndarray, segments: Sequence[Segment]) -> dict[str, str]:
    """Slicer's header fields for a one-layer label map ``array`` (i, j, k) and its classes.

    Names are written in ASCII (other characters become "?"), as NRRD headers are.
    """
    fields: dict[str, str] = {}
    for n, segment in enumerate(segments):
        mask = array == segment.value
        extent = _extent(mask)
        r, g, b = hex_to_rgb(segment.color)
        name = segment.name.encode("ascii", "replace").decode("ascii")
        fields.update(
            {
                f"Segment{n}_Color": f"{r / 255:.6g} {g / 255:.6g} {b / 255:.6g}",
                f"Segment{n}_ColorAutoGenerated": "0",
                f"Segment{n}_Extent": " ".join(map(str, extent)),
                f"Segment{n}_ID": f"Segment_{segment.value}",
                f"Segment{n}_LabelValue": str(segment.value),
                f"Segment{n}_Layer": "0",
                f"Segment{n}_Name": name,
                f"Segment{n}_NameAutoGenerated": "0",
                f"Segment{n}_Tags": "Segmentation.Status:inprogress|",
            }
        )
    fields.update(
        {
            "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
            "Segmentation_MasterRepresentation": "Binary labelmap",
            "Segmentation_ReferenceImageExtentOffset": "0 0 0",
        }
    )
    return fields


def _extent(mask: np.ndarray) -> list[int]:
    """Slicer's ``i0 i1 j0 j1 k0 k1`` bounding box (``0 -1 …`` when empty)."""
    if not mask.any():
        return [0, -1, 0, -1, 0, -1]
    extent = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hit = np.flatnonzero(mask.any(axis=others))
        extent += [int(hit[0]), int(hit[-1])]
    return extent
