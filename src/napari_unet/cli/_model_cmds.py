"""`napari-unet new-model`, `napari-unet predict` and `napari-unet bench`.

torch and MONAI are imported inside the command functions only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_unet.cli._cohort_cmds import add_predict_options, cmd_predict_cohort, wants_cohort
from napari_unet.cli._common import (
    BATCH_SIZE,
    CONTEXT_SLICES,
    MODEL_SUFFIXES,
    NIFTI_SUFFIXES,
    PATCH,
    SEED,
    SPACING,
    label_names,
    one_line,
    prepare_output,
    warn,
)
from napari_unet.cli._progress import drain
from napari_unet.errors import InputError
from napari_unet.outputs import atomic_output, check_distinct
from napari_unet.typing import Device

ARCH_CHOICES = ("recommended", "unet", "resunet", "attention_unet", "classic_unet")


def register(subparsers: argparse._SubParsersAction) -> None:
    new = subparsers.add_parser("new-model", help="create an untrained model file from a preset")
    new.add_argument("out", help="output .safetensors file")
    new.add_argument("--dims", type=int, choices=(2, 3), required=True, help="2D or 3D network")
    new.add_argument(
        "--labels",
        type=label_names,
        required=True,
        help="foreground class names, comma-separated (1 to 255)",
    )
    new.add_argument(
        "--arch",
        choices=ARCH_CHOICES,
        default="recommended",
        help="architecture: 'recommended' (the full-resolution U-Net the fine-tuning "
        "defaults are tuned for) or a preset",
    )
    new.add_argument(
        "--modality", choices=("CT", "MR"), default="CT", help="intensity normalisation"
    )
    new.add_argument(
        "--context-slices",
        type=CONTEXT_SLICES,
        default=None,
        metavar="N",
        help="2D only: neighbouring slices on each side fed as channels (0 to 8)",
    )
    new.add_argument(
        "--patch", type=PATCH, nargs="+", metavar="N", help="patch size (voxels, 8 to 1024 each)"
    )
    new.add_argument(
        "--spacing", type=SPACING, nargs=3, metavar="MM", help="target spacing (0.05 to 20 mm)"
    )
    new.add_argument("--seed", type=SEED, default=0, help="random initialisation seed")
    new.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    new.set_defaults(func=cmd_new_model)

    pred = subparsers.add_parser("predict", help="segment a scan (or a cohort) with a model file")
    pred.add_argument("model", help="model .safetensors file")
    pred.add_argument(
        "image", nargs="+", metavar="INPUT",
        help="NIfTI file, DICOM file or DICOM folder; several, a folder of cases, a glob or "
        "a CSV/TSV manifest make a cohort",
    )  # fmt: skip
    pred.add_argument(
        "-o", "--out", required=True,
        help="output label map (.nii / .nii.gz); a folder for a cohort",
    )  # fmt: skip
    pred.add_argument("--device", default="auto", choices=Device.values())
    pred.add_argument(
        "--batch-size", type=BATCH_SIZE, metavar="N", help="tiles or slices per batch (1 to 4096)"
    )
    pred.add_argument("--uncertainty", metavar="OUT_UNC", help="also write the entropy map here")
    pred.add_argument(
        "--overwrite", action="store_true", help="replace OUT (and OUT_UNC) if they exist"
    )
    pred.add_argument("--slice-axis", type=int, choices=(0, 1, 2), help="2D models: slice axis")
    pred.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    add_predict_options(pred)
    pred.set_defaults(func=cmd_predict)

    bench = subparsers.add_parser("bench", help="speed against MONAI's sliding_window_inference")
    bench.add_argument(
        "--quick", action="store_true", help="only the small cases (~1 min on 2 cores)"
    )
    bench.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    bench.add_argument(
        "--retrain", action="store_true", help="train the cached benchmark networks again"
    )
    bench.add_argument("--json", action="store_true", help="one JSON object on stdout")
    bench.add_argument("--out", help="also write the JSON result to this file")
    bench.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    bench.add_argument(
        "--weights-dir",
        metavar="DIR",
        help="cached benchmark networks (the repository's benchmarks/weights holds the "
        "ones the README's figures used); default: a user cache folder, trained on first use",
    )
    bench.set_defaults(func=cmd_bench)


def cmd_new_model(args: argparse.Namespace) -> int:
    import torch

    from napari_unet.models import build_model, save_model

    out = prepare_output(args.out, overwrite=args.overwrite, suffixes=MODEL_SUFFIXES, option="OUT")
    patch = tuple(args.patch) if args.patch else None
    try:
        spec = _new_spec(args, patch)
    except (ValueError, TypeError) as e:
        raise InputError(f"new-model: {e}") from None
    torch.manual_seed(args.seed)
    digest = save_model(out, build_model(spec), spec, {"parent": None, "init_seed": args.seed})
    print(
        one_line(
            f"wrote {out}: {spec.arch} {spec.spatial_dims}D, labels {', '.join(spec.labels)}, "
            f"patch {'x'.join(map(str, spec.patch_size))}, hash {digest[:12]}"
        )
    )
    return 0


def _new_spec(args: argparse.Namespace, patch: tuple[int, ...] | None):
    """The ModelSpec `new-model` asks for, from the one spec factory (ValueError from
    the spec's own validation)."""
    from napari_unet.training.recipe import make_spec

    return make_spec(
        args.labels,
        modality=args.modality,
        arch=args.arch,
        spatial_dims=args.dims,
        context_slices=args.context_slices,
        patch_size=patch,
        target_spacing=tuple(args.spacing) if args.spacing else None,
    )


def cmd_predict(args: argparse.Namespace) -> int:
    from napari_unet.inference.checks import check_finite_image
    from napari_unet.inference.preprocess import spec_slice_axis
    from napari_unet.io.nifti import save_nifti
    from napari_unet.io.reader import load_volume
    from napari_unet.loop import Loop
    from napari_unet.models import load_model

    if wants_cohort(args):  # several inputs, a folder of cases, a glob, a manifest
        return cmd_predict_cohort(args)
    args.image = args.image[0]
    check_distinct(("-o", args.out), ("--uncertainty", args.uncertainty))
    inputs = [args.model, args.image]
    out = prepare_output(
        args.out, overwrite=args.overwrite, inputs=inputs, suffixes=NIFTI_SUFFIXES, option="-o"
    )
    unc = None
    if args.uncertainty:
        unc = prepare_output(
            args.uncertainty,
            overwrite=args.overwrite,
            inputs=inputs,
            suffixes=NIFTI_SUFFIXES,
            option="--uncertainty",
        )
    loaded = load_model(args.model, device="cpu")
    volume = load_volume(args.image)
    check_finite_image(volume)
    spec = loaded.spec
    if (
        spec.modality in ("CT", "MR")
        and volume.modality in ("CT", "MR")
        and spec.modality != volume.modality
    ):
        warn(
            f"{args.model} is a {spec.modality} model but {args.image} looks like {volume.modality}"
        )
    axis = spec_slice_axis(spec, volume.through_plane_axis, args.slice_axis)
    loop = Loop(volume, slice_axis=axis, device=args.device)
    loop.set_model(loaded)
    try:
        job = loop.predict(only_unreviewed=False, uncertainty=unc is not None,
                           batch_size=args.batch_size)  # fmt: skip
        pred = drain(job, "predicting", enabled=not args.json)
    except ValueError as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"{args.model} on {args.image}: {e}") from None
    for message in pred.messages:
        warn(message, kind="note")
    loop.merge(pred)
    loop.export(out, overwrite=args.overwrite)
    if unc is not None:
        save_nifti(pred.uncertainty, unc, overwrite=args.overwrite)
    _report_prediction(args, volume, pred, spec)
    return 0


def _report_prediction(args: argparse.Namespace, volume, pred, spec) -> None:
    counts = {name: int((pred.labels.array == i + 1).sum()) for i, name in enumerate(spec.labels)}
    summary = {
        "model": args.model,
        "image": args.image,
        "out": args.out,
        "uncertainty": args.uncertainty,
        "shape": list(volume.shape),
        "seconds": round(pred.seconds, 3),
        "device": pred.device,
        "voxels_per_label": counts,
        **pred.info,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            one_line(
                f"wrote {args.out} ({'x'.join(map(str, volume.shape))}, {pred.seconds:.2f} s on "
                f"{pred.device}); voxels: " + ", ".join(f"{k} {v}" for k, v in counts.items())
            )
        )


def cmd_bench(args: argparse.Namespace) -> int:
    from napari_unet.evaluation.bench import run_benchmark

    out = prepare_output(args.out, overwrite=args.overwrite, option="--out") if args.out else None
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("bench --device cuda: no CUDA GPU is available")
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    if args.weights_dir is not None and not Path(args.weights_dir).is_dir():
        raise InputError(f"--weights-dir {args.weights_dir}: no such folder")
    result = run_benchmark(quick=args.quick, device=args.device, retrain=args.retrain,
                           weights_dir=args.weights_dir, log=log)  # fmt: skip
    text = json.dumps(result, indent=2)
    if out is not None:
        with atomic_output(out) as tmp:
            tmp.write_text(text + "\n")
    if args.json:
        print(text)
    return 0
