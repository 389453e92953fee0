"""`napari-unet info` and `napari-unet convert`.

``convert`` writes images and label maps between formats, geometry kept: NIfTI, NRRD, 3D
Slicer's ``.seg.nrrd``, DICOM SEG and RTSTRUCT. The format follows OUT's name where it is
clear (``.nii``/``.nii.gz``, ``.nrrd``, ``.seg.nrrd``); a DICOM object needs ``--format
dicom-seg`` or ``--format rtstruct`` and the series it is drawn on (``--reference``, or the
series a SEG/RTSTRUCT input refers to). Inputs that are SEG or RTSTRUCT find their series
beside them, or take ``--reference``.
"""

from __future__ import annotations

import argparse
import json
import sys

from napari_unet.cli._common import NIFTI_SUFFIXES, label_names, one_line, prepare_output
from napari_unet.errors import InputError, MultipleSeriesError

#: ``--format`` values and the endings that imply them.
FORMATS = ("nifti", "nrrd", "seg-nrrd", "dicom-seg", "rtstruct")
_SUFFIXES = {
    "nifti": NIFTI_SUFFIXES,
    "nrrd": (".nrrd",),
    "seg-nrrd": (".seg.nrrd",),
    "dicom-seg": (),
    "rtstruct": (),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    info = subparsers.add_parser(
        "info", help="shape, spacing, orientation, modality and affine of a scan"
    )
    info.add_argument(
        "path", help="NIfTI or NRRD file, DICOM file or folder, DICOM SEG or RTSTRUCT file"
    )
    info.add_argument("--series", metavar="UID", help="series to read from a DICOM folder")
    info.add_argument(
        "--reference", metavar="SERIES", help="the series a DICOM SEG or RTSTRUCT is drawn on"
    )
    info.add_argument("--json", action="store_true", help="one JSON object on stdout")
    info.set_defaults(func=cmd_info)

    convert = subparsers.add_parser(
        "convert",
        help="images and label maps between NIfTI, NRRD, .seg.nrrd, DICOM SEG and RTSTRUCT, "
        "geometry kept exactly",
    )
    convert.add_argument(
        "path", help="NIfTI or NRRD file, DICOM file or folder, DICOM SEG or RTSTRUCT file"
    )
    convert.add_argument(
        "out", help="output: .nii/.nii.gz, .nrrd, .seg.nrrd, or a .dcm file with --format"
    )
    convert.add_argument(
        "--format",
        choices=FORMATS,
        help="output format (default: from OUT's name; needed for DICOM SEG and RTSTRUCT)",
    )
    convert.add_argument(
        "--reference",
        metavar="SERIES",
        help="DICOM series folder the labels are drawn on (for SEG/RTSTRUCT in or out)",
    )
    convert.add_argument(
        "--labels",
        type=label_names,
        metavar="NAME[,NAME...]",
        help="class names of labels 1, 2, … (default: from the input, else 'label N')",
    )
    convert.add_argument(
        "--seg-type",
        choices=("binary", "labelmap"),
        default="binary",
        help="DICOM SEG encoding (default binary; labelmap is DICOM 2024's Label Map SEG)",
    )
    convert.add_argument("--series", metavar="UID", help="series to read from a DICOM folder")
    convert.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    convert.set_defaults(func=cmd_convert)


def _load(path: str, series: str | None, reference: str | None = None):
    from napari_unet.io.reader import load_volume

    try:
        return load_volume(path, series_uid=series, reference=reference)
    except MultipleSeriesError as e:
        listing = "; ".join(f"{one_line(s.label, 80)} [--series {s.uid}]" for s in e.series)
        raise InputError(f"{e} — choose one with --series UID: {listing}") from e


def cmd_info(args: argparse.Namespace) -> int:
    volume = _load(args.path, args.series, args.reference)
    summary = volume.describe()
    if "series_uid" in volume.metadata:
        summary["series_uid"] = volume.metadata["series_uid"]
    if "segments" in volume.metadata:
        from napari_unet.io.labelmap import segments_of

        summary["labels"] = [s.to_json() for s in segments_of(volume)]
        for key in ("dicom_seg", "rtstruct"):
            if key in volume.metadata:
                summary["kind"] = "DICOM SEG" if key == "dicom_seg" else "RTSTRUCT"
                summary["reference"] = volume.metadata[key]["reference"]
    if args.json:
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(f"path:        {one_line(summary['path'])}")
    if "series_uid" in summary:
        print(f"series:      {one_line(summary['series_uid'])}")
    description = volume.metadata.get("series_description") or volume.metadata.get("description")
    if description:
        print(f"description: {one_line(description, 200)}")
    print(f"shape:       {' x '.join(map(str, summary['shape']))}  ({summary['dtype']})")
    print(f"spacing:     {' x '.join(f'{s:.4g}' for s in summary['spacing'])} mm")
    print(f"orientation: {summary['orientation']}   modality: {summary['modality']}")
    if "labels" in summary:
        kind = f"{summary['kind']} over {summary['reference']}; " if "kind" in summary else ""
        classes = ", ".join(f"{s['value']} {s['name']}" for s in summary["labels"]) or "none"
        print(one_line(f"labels:      {kind}{classes}", 2000))
    if summary["value_range"] is not None:
        low, high = summary["value_range"]
        print(f"values:      {low:.6g} .. {high:.6g}")
    print(f"affine ({summary['frame']}, voxel → mm):")
    for row in summary["affine"]:
        print("    " + "  ".join(f"{v:10.4f}" for v in row))
    return 0


def output_format(out: str, given: str | None) -> str:
    """The format ``--format`` names, else the one OUT's name implies."""
    name = out.lower()
    implied = next((f for f in ("seg-nrrd", "nrrd", "nifti") if name.endswith(_SUFFIXES[f])), None)
    if given is None:
        if implied is None:
            raise InputError(
                f"OUT {out}: say which format to write: --format dicom-seg or --format "
                "rtstruct (a DICOM object), or name it .nii.gz, .nrrd or .seg.nrrd"
            )
        return implied
    if given in ("dicom-seg", "rtstruct"):
        if implied is not None:
            raise InputError(f"OUT {out}: --format {given} writes a DICOM file; name it .dcm")
    elif given == "nrrd" and implied == "seg-nrrd":
        return "nrrd"  # an image (or plain label volume) named .seg.nrrd on purpose
    elif not name.endswith(_SUFFIXES[given]):
        raise InputError(
            f"OUT {out}: --format {given} needs a name ending in {' or '.join(_SUFFIXES[given])}"
        )
    return given


def cmd_convert(args: argparse.Namespace) -> int:
    fmt = output_format(args.out, args.format)
    out = prepare_output(
        args.out,
        overwrite=args.overwrite,
        inputs=[args.path, args.reference],
        suffixes=_SUFFIXES[fmt],
        option="OUT",
    )
    volume = _load(args.path, args.series, args.reference)
    if fmt in ("seg-nrrd", "dicom-seg", "rtstruct") or args.labels:
        volume = _as_labels(volume, args)
    if fmt == "nifti":
        from napari_unet.io.nifti import save_nifti

        out = save_nifti(volume, out, overwrite=args.overwrite)
    elif fmt == "nrrd":
        from napari_unet.io.nrrd import save_nrrd

        out = save_nrrd(volume, out, overwrite=args.overwrite)
    elif fmt == "seg-nrrd":
        from napari_unet.io.nrrd import save_seg_nrrd

        out = save_seg_nrrd(volume, out, overwrite=args.overwrite)
    else:
        out = _write_dicom(volume, out, fmt, args)
    print(one_line(f"wrote {out}  ({' x '.join(map(str, volume.shape))}, {volume.orientation})"))
    return 0


def _as_labels(volume, args: argparse.Namespace):
    """The input as a label map (names from --labels, else from the input)."""
    from napari_unet.io.labelmap import as_label_array

    labels = volume.with_array(as_label_array(volume, what=args.path))
    if args.labels:
        labels.metadata.pop("segments", None)
        labels.metadata["label_names"] = list(args.labels)
    return labels


def _write_dicom(labels, out, fmt: str, args: argparse.Namespace):
    reference, series_uid = args.reference, None
    if reference is None:
        source = labels.metadata.get("dicom_seg") or labels.metadata.get("rtstruct")
        if source is None:
            raise InputError(
                f"OUT {out}: a DICOM {'SEG' if fmt == 'dicom-seg' else 'RTSTRUCT'} is written "
                "over the series the labels were drawn on: give it with --reference SERIES"
            )
        reference, series_uid = source["reference"], source["referenced_series_uid"]
    elif labels.metadata.get("series_uid") and (
        "dicom_seg" in labels.metadata or "rtstruct" in labels.metadata
    ):
        series_uid = labels.metadata["series_uid"]
    series_uid = series_uid or args.series  # --series: which series of --reference
    if fmt == "dicom-seg":
        from napari_unet.io.dicom_seg import write_dicom_seg

        return write_dicom_seg(
            labels,
            reference,
            out,
            series_uid=series_uid,
            segmentation_type=args.seg_type,
            overwrite=args.overwrite,
        )
    from napari_unet.io.rtstruct import write_rtstruct

    return write_rtstruct(labels, reference, out, series_uid=series_uid, overwrite=args.overwrite)
