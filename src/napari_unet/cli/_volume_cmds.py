"""`napari-unet info` and `napari-unet convert`."""

from __future__ import annotations

import argparse
import json
import sys

from napari_unet.cli._common import NIFTI_SUFFIXES, one_line, prepare_output
from napari_unet.errors import InputError, MultipleSeriesError


def register(subparsers: argparse._SubParsersAction) -> None:
    info = subparsers.add_parser(
        "info", help="shape, spacing, orientation, modality and affine of a scan"
    )
    info.add_argument("path", help="NIfTI file, DICOM file or DICOM folder")
    info.add_argument("--series", metavar="UID", help="series to read from a DICOM folder")
    info.add_argument("--json", action="store_true", help="one JSON object on stdout")
    info.set_defaults(func=cmd_info)

    convert = subparsers.add_parser(
        "convert", help="DICOM series or NIfTI → NIfTI, geometry kept exactly"
    )
    convert.add_argument("path", help="NIfTI file, DICOM file or DICOM folder")
    convert.add_argument("out", help="output .nii or .nii.gz")
    convert.add_argument("--series", metavar="UID", help="series to read from a DICOM folder")
    convert.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    convert.set_defaults(func=cmd_convert)


def _load(path: str, series: str | None):
    from napari_unet.io.reader import load_volume

    try:
        return load_volume(path, series_uid=series)
    except MultipleSeriesError as e:
        listing = "; ".join(f"{one_line(s.label, 80)} [--series {s.uid}]" for s in e.series)
        raise InputError(f"{e} — choose one with --series UID: {listing}") from e


def cmd_info(args: argparse.Namespace) -> int:
    volume = _load(args.path, args.series)
    summary = volume.describe()
    if "series_uid" in volume.metadata:
        summary["series_uid"] = volume.metadata["series_uid"]
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
    if summary["value_range"] is not None:
        low, high = summary["value_range"]
        print(f"values:      {low:.6g} .. {high:.6g}")
    print(f"affine ({summary['frame']}, voxel → mm):")
    for row in summary["affine"]:
        print("    " + "  ".join(f"{v:10.4f}" for v in row))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from napari_unet.io.nifti import save_nifti

    out = prepare_output(
        args.out,
        overwrite=args.overwrite,
        inputs=[args.path],
        suffixes=NIFTI_SUFFIXES,
        option="OUT",
    )
    volume = _load(args.path, args.series)
    out = save_nifti(volume, out, overwrite=args.overwrite)
    print(one_line(f"wrote {out}  ({' x '.join(map(str, volume.shape))}, {volume.orientation})"))
    return 0
