"""`napari-unet import` (MONAI bundle / nnU-Net folder → our model) and `export-bundle`.

torch and MONAI are imported inside the command functions only.
"""

from __future__ import annotations

import argparse
import json

from napari_unet.cli._common import MODEL_SUFFIXES, one_line, prepare_output

MAX_CLASS_ITEMS = 255


def register(subparsers: argparse._SubParsersAction) -> None:
    imp = subparsers.add_parser(
        "import",
        help="import a MONAI bundle (folder or .zip) or an nnU-Net v2 results folder",
        description="Read a foreign model as data (no code from it runs) and write one of "
        "our model files, with the source named in its lineage.",
    )
    imp.add_argument("source", help="MONAI bundle folder or .zip, or nnU-Net results folder")
    imp.add_argument("out", help="output .safetensors model file")
    imp.add_argument("--fold", type=_fold, metavar="N", help="nnU-Net fold (0..99 or 'all')")
    imp.add_argument(
        "--checkpoint", choices=("final", "best"), default="final", help="nnU-Net checkpoint"
    )
    imp.add_argument(
        "--labels",
        type=_classes,
        metavar="NAME[,NAME...]",
        help="keep these classes, in this order: names ('liver,spleen'), label values "
        "renamed ('liver=1,spleen=5') or renamed classes ('organ=liver')",
    )
    imp.add_argument(
        "--orientation",
        type=_codes,
        metavar="CODES",
        help="axis codes the model expects scans in, e.g. RAS for TotalSegmentator "
        "(default: what the source says)",
    )
    imp.add_argument(
        "--format", choices=("auto", "monai_bundle", "nnunet"), default="auto", help="source kind"
    )
    imp.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    imp.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    imp.set_defaults(func=cmd_import)

    exp = subparsers.add_parser(
        "export-bundle", help="write a model file as a MONAI bundle folder (MONAI Label, Slicer)"
    )
    exp.add_argument("model", help="model .safetensors file")
    exp.add_argument("out_dir", help="bundle folder to create")
    exp.add_argument(
        "--overwrite", action="store_true", help="write into an existing, non-empty folder"
    )
    exp.set_defaults(func=cmd_export_bundle)


def cmd_import(args: argparse.Namespace) -> int:
    from napari_unet.models.files import save_model
    from napari_unet.models.importers import read_foreign

    out = prepare_output(args.out, overwrite=args.overwrite, inputs=[args.source],
                         suffixes=MODEL_SUFFIXES, option="OUT")  # fmt: skip
    spec, sd, lineage = read_foreign(
        args.source,
        format=args.format,
        fold=args.fold,
        checkpoint=args.checkpoint,
        labels=args.labels,
        orientation=args.orientation,
    )
    digest = save_model(out, sd, spec, lineage)
    imported = lineage["imported"]
    summary = {
        "out": str(out),
        "hash": digest,
        "format": imported["format"],
        "arch": spec.arch,
        "spatial_dims": spec.spatial_dims,
        "labels": list(spec.labels),
        "classes": imported.get("classes"),
        "head_cut": imported.get("head_cut"),
        "patch_size": list(spec.patch_size),
        "target_spacing": None if spec.target_spacing is None else list(spec.target_spacing),
        "orientation": spec.orientation,
        "normalization": spec.normalization.mode,
        "approximations": imported.get("approximations", []),
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            one_line(
                f"{out}: {spec.spatial_dims}D {spec.arch} from a {imported['format']} "
                f"({len(spec.labels)} classes: {', '.join(spec.labels)}), hash {digest[:12]}"
            )
        )
    return 0


def cmd_export_bundle(args: argparse.Namespace) -> int:
    from napari_unet.models.importers.bundle_export import export_bundle

    out = export_bundle(args.model, args.out_dir, overwrite=args.overwrite)
    print(one_line(f"{out}: MONAI bundle (configs/inference.json, models/model.pt)"))
    return 0


def _fold(text: str) -> int | str:
    text = text.strip()
    if text == "all":
        return text
    if text.isdigit() and int(text) <= 99:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected 0..99 or 'all', got {one_line(text, 20)!r}")


def _classes(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise argparse.ArgumentTypeError(f"empty class in {one_line(text, 80)!r}")
    if len(items) > MAX_CLASS_ITEMS:
        raise argparse.ArgumentTypeError(f"{len(items)} classes; at most {MAX_CLASS_ITEMS}")
    for item in items:
        if len(item) > 130 or one_line(item) != item:
            raise argparse.ArgumentTypeError(
                f"class {one_line(item, 40)!r}: at most 64 printable characters per name"
            )
    return items


def _codes(text: str) -> str:
    codes = text.strip().upper()
    pairs = ("LR", "PA", "IS")
    if len(codes) != 3 or sorted(next((p for p in pairs if c in p), "?") for c in codes) != sorted(
        pairs
    ):
        raise argparse.ArgumentTypeError(
            f"expected 3 axis codes such as RAS or LPS, got {one_line(text, 20)!r}"
        )
    return codes
