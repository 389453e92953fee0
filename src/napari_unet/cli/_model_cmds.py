"""`napari-unet new-model`, `napari-unet predict` and `napari-unet bench`.

torch and MONAI are imported inside the command functions only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_unet.errors import InputError

ARCH_CHOICES = ("recommended", "unet", "resunet", "attention_unet", "classic_unet")


def register(subparsers: argparse._SubParsersAction) -> None:
    new = subparsers.add_parser("new-model", help="create an untrained model file from a preset")
    new.add_argument("out", help="output .safetensors file")
    new.add_argument("--dims", type=int, choices=(2, 3), required=True, help="2D or 3D network")
    new.add_argument("--labels", required=True, help="foreground class names, comma-separated")
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
        type=int,
        default=None,
        metavar="N",
        help="2D only: neighbouring slices on each side fed as channels",
    )
    new.add_argument("--patch", type=int, nargs="+", metavar="N", help="patch size (voxels)")
    new.add_argument("--spacing", type=float, nargs=3, metavar="MM", help="target spacing (mm)")
    new.add_argument("--seed", type=int, default=0, help="random initialisation seed")
    new.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    new.set_defaults(func=cmd_new_model)

    pred = subparsers.add_parser("predict", help="segment a scan with a model file")
    pred.add_argument("model", help="model .safetensors file")
    pred.add_argument("image", help="NIfTI file, DICOM file or DICOM folder")
    pred.add_argument("-o", "--out", required=True, help="output label map (.nii / .nii.gz)")
    pred.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    pred.add_argument("--batch-size", type=int, metavar="N", help="tiles or slices per batch")
    pred.add_argument("--uncertainty", metavar="OUT_UNC", help="also write the entropy map here")
    pred.add_argument("--slice-axis", type=int, choices=(0, 1, 2), help="2D models: slice axis")
    pred.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
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
    bench.set_defaults(func=cmd_bench)


def cmd_new_model(args: argparse.Namespace) -> int:
    import torch

    from napari_unet.models import build_model, preset_spec, save_model

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise InputError(f"{out}: a model file must end in .safetensors")
    if out.exists() and not args.overwrite:
        raise InputError(f"{out}: already exists (use --overwrite to replace it)")
    labels = [n.strip() for n in args.labels.split(",") if n.strip()]
    try:
        if args.arch == "recommended":
            from napari_unet.training import recommended_spec

            spec = recommended_spec(
                labels,
                modality=args.modality,
                spatial_dims=args.dims,
                context_slices=1 if args.context_slices is None else args.context_slices,
                patch_size=tuple(args.patch) if args.patch else None,
            )
        else:
            spec = preset_spec(
                args.arch,
                spatial_dims=args.dims,
                labels=labels,
                modality=args.modality,
                context_slices=args.context_slices or 0,
                patch_size=tuple(args.patch) if args.patch else None,
                target_spacing=tuple(args.spacing) if args.spacing else None,
            )
    except ValueError as e:
        raise InputError(f"new-model: {e}") from None
    torch.manual_seed(args.seed)
    digest = save_model(out, build_model(spec), spec, {"parent": None, "init_seed": args.seed})
    print(
        f"wrote {out}: {spec.arch} {spec.spatial_dims}D, labels {', '.join(spec.labels)}, "
        f"patch {'x'.join(map(str, spec.patch_size))}, hash {digest[:12]}"
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from napari_unet.inference import predict_steps
    from napari_unet.io.nifti import save_nifti
    from napari_unet.io.reader import load_volume
    from napari_unet.jobs import run_job
    from napari_unet.models import load_model

    for out in filter(None, (args.out, args.uncertainty)):
        if not (out.endswith(".nii") or out.endswith(".nii.gz")):
            raise InputError(f"{out}: output must end in .nii or .nii.gz")
        if not Path(out).parent.is_dir():
            raise InputError(f"{out}: folder {Path(out).parent} does not exist")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    loaded = load_model(args.model, device="cpu")
    volume = load_volume(args.image)
    spec = loaded.spec
    if (
        spec.modality in ("CT", "MR")
        and volume.modality in ("CT", "MR")
        and spec.modality != volume.modality
    ):
        print(
            f"napari-unet: warning: {args.model} is a {spec.modality} model but {args.image} "
            f"looks like {volume.modality}",
            file=sys.stderr,
        )
    try:
        job = predict_steps(
            loaded,
            None,
            volume,
            device=args.device,
            batch_size=args.batch_size,
            slice_axis=args.slice_axis,
            uncertainty=bool(args.uncertainty),
        )
        pred = run_job(job, _progress_printer())
    except ValueError as e:
        raise InputError(f"{args.model} on {args.image}: {e}") from None
    for message in pred.messages:
        print(f"napari-unet: note: {message}", file=sys.stderr)
    save_nifti(pred.labels, args.out)
    if args.uncertainty:
        save_nifti(pred.uncertainty, args.uncertainty)
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
            f"wrote {args.out} ({'x'.join(map(str, volume.shape))}, {pred.seconds:.2f} s on "
            f"{pred.device}); voxels: " + ", ".join(f"{k} {v}" for k, v in counts.items())
        )
    return 0


def _progress_printer():
    if not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        end = "\n" if done >= total else ""
        print(f"\rpredicting {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


def cmd_bench(args: argparse.Namespace) -> int:
    from napari_unet.inference.bench import run_benchmark

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise InputError("bench --device cuda: no CUDA GPU is available")
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    result = run_benchmark(quick=args.quick, device=args.device, retrain=args.retrain, log=log)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json:
        print(text)
    return 0
