"""DICOM SEG segment descriptions ↔ `labelmap.Segment`, and the SEG SOP classes.

Writing: `segment_description` builds one highdicom SegmentDescription a class (name,
colour as RecommendedDisplayCIELabValue, the coded property from `property_codes`, the
algorithm type and identification). Reading: `read_segments` takes the SegmentSequence
back to `Segment`s (number, cleaned name, colour; default colours without highdicom),
`algorithm_text` the algorithm of one item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from napari_unet.errors import VolumeReadError
from napari_unet.io._dicom_header import text
from napari_unet.io.labelmap import Algorithm, Segment, clean_name, default_color, rgb_to_hex

#: Segmentation Storage (binary, fractional) and Label Map Segmentation Storage.
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
LABELMAP_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.7"
SEG_SOP_CLASSES = (SEG_SOP_CLASS, LABELMAP_SOP_CLASS)
#: At most this many segments (DICOM allows 65535; 255 keeps the label map in uint8 … uint16).
MAX_SEGMENTS = 65535


def is_dicom_seg(ds: Dataset) -> bool:
    return str(ds.get("SOPClassUID", "")) in SEG_SOP_CLASSES


def property_codes(name: str) -> tuple[Any, Any]:
    """(category, type) codes for a class name: a SNOMED CT structure if known, else Tissue."""
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    key = "".join(word.capitalize() for word in name.replace("-", " ").split())
    if key.isidentifier() and key not in ("Tissue",):
        try:
            code = getattr(codes.SCT, key)
        except AttributeError:
            code = None
        if code is not None:
            return Code("123037004", "SCT", "Anatomical Structure"), code
    tissue = Code("85756007", "SCT", "Tissue")
    return tissue, tissue


def segment_description(hd: Any, number: int, segment: Segment, algorithm: Algorithm | None) -> Any:
    from pydicom.sr.codedict import codes

    category, kind = property_codes(segment.name)
    r, g, b = (int(segment.color[i : i + 2], 16) for i in (1, 3, 5))
    if algorithm is None:
        kwargs: dict[str, Any] = {"algorithm_type": hd.seg.SegmentAlgorithmTypeValues.MANUAL}
    else:
        kwargs = {
            "algorithm_type": hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            "algorithm_identification": hd.AlgorithmIdentificationSequence(
                name=algorithm.name[:64] or "napari-unet model",
                family=codes.cid7162.ArtificialIntelligence,
                version=algorithm.version[:64] or "unknown",
                source="napari-unet",
            ),
        }
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=segment.name[:64],
        segmented_property_category=category,
        segmented_property_type=kind,
        tracking_uid=hd.UID(),
        tracking_id=f"label {segment.value}",
        display_color=hd.color.CIELabColor.from_rgb(r, g, b),
        **kwargs,
    )


def read_segments(path: Path, ds: Dataset) -> dict[int, Segment]:
    try:
        import highdicom as hd
    except ImportError:  # colours are then the default ones
        hd = None
    items = ds.get("SegmentSequence")
    if not items:
        raise VolumeReadError(f"{path}: a DICOM SEG without segments (no SegmentSequence)")
    labelmap = str(ds.SOPClassUID) == LABELMAP_SOP_CLASS
    segments: dict[int, Segment] = {}
    for item in items:
        number = item.get("SegmentNumber")
        if number is None or not 0 <= int(number) <= MAX_SEGMENTS:
            raise VolumeReadError(f"{path}: a segment has no valid SegmentNumber ({number!r})")
        number = int(number)
        if number == 0:
            if labelmap:
                continue  # a label map may describe its background as segment 0
            raise VolumeReadError(f"{path}: segment number 0 (numbers start at 1)")
        if number in segments:
            raise VolumeReadError(f"{path}: segment number {number} is described twice")
        lab = item.get("RecommendedDisplayCIELabValue")
        color = default_color(number)
        if hd is not None and lab is not None and len(lab) == 3:
            lab_color = hd.color.CIELabColor.from_dicom_value([int(v) for v in lab])
            color = rgb_to_hex(lab_color.to_rgb())
        segments[number] = Segment(number, clean_name(item.get("SegmentLabel"), number), color)
    if not segments:
        raise VolumeReadError(f"{path}: a DICOM SEG that describes no segment")
    return dict(sorted(segments.items()))


def algorithm_text(item: Dataset) -> str:
    kind = text(item, "SegmentAlgorithmType")
    name = text(item, "SegmentAlgorithmName")
    return f"{kind} {name}".strip()
