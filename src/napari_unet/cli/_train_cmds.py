"""`napari-unet train` and `napari-unet simulate`.

torch and MONAI are imported inside the command functions only.
"""

from __future__ import annotations

import argparse
import json

from napari_unet.cli._cohort_cmds import add_train_options, cmd_train_cohort
from napari_unet.cli._common import (
    IGNORE_LABEL,
    MODEL_SUFFIXES,
    ROUNDS,
    SECONDS,
    SEED,
    SLICES_PER_ROUND,
    STEPS,
    label_names,
    one_line,
    prepare_output,
    warn,
)
from napari_unet.cli._progress import drain
from napari_unet.errors import InputError
from napari_unet.typing import Device, Strategy

DEVICES = Device.values()


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser(
        "train", help="fine-tune (or train a new model) on the labelled voxels of a label map"
    )
    train.add_argument("image", nargs="?", help="NIfTI file, DICOM file or DICOM folder")
    train.add_argument("labels", nargs="?", help="label map on the image grid (NIfTI)")
    add_train_options(train)  # --cohort MANIFEST, --nproc N
    train.add_argument("-o", "--out", required=True, help="new model version (.safetensors)")
    train.add_argument("--from", dest="from_model", metavar="MODEL", help="parent model file")
    train.add_argument(
        "--slices",
        metavar="AXIS:I,J,...",
        help="only these reviewed slices count (array axis 0, 1 or 2, then indices)",
    )
    train.add_argument(
        "--ignore-label",
        type=IGNORE_LABEL,
        metavar="V",
        help="label value meaning 'not labelled' (0 to 65535)",
    )
    train.add_argument(
        "--replay-slices",
        metavar="AXIS:I,J,...",
        help="slices reviewed for earlier versions: replayed, and scored for the drift guard",
    )
    train.add_argument(
        "--labels-names",
        type=label_names,
        metavar="NAME,...",
        help="class names of a new model (default label1…; at most 255)",
    )
    _budget_args(train)
    train.add_argument("--device", default="auto", choices=DEVICES)
    train.add_argument("--seed", type=SEED, default=0, help="random seed")
    train.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    train.add_argument("--json", action="store_true", help="one JSON summary on stdout")
    train.set_defaults(func=cmd_train)

    sim = subparsers.add_parser(
        "simulate", help="play a user who reveals the truth on a few slices per round"
    )
    sim.add_argument("image", help="NIfTI file, DICOM file or DICOM folder")
    sim.add_argument("truth", help="full reference label map on the image grid (NIfTI)")
    sim.add_argument("--from", dest="from_model", metavar="MODEL", help="starting model file")
    sim.add_argument(
        "--rounds", type=ROUNDS, default=1, metavar="N", help="rounds (default 1; at most 1000)"
    )
    sim.add_argument(
        "--slices-per-round",
        type=SLICES_PER_ROUND,
        default=5,
        metavar="K",
        help="slices revealed per round (1 to 4096)",
    )
    sim.add_argument("--strategy", choices=Strategy.values(), default=Strategy.WORST.value)
    sim.add_argument("--slice-axis", type=int, choices=(0, 1, 2), help="default: through-plane")
    _budget_args(sim, later=True)
    sim.add_argument("--device", default="auto", choices=DEVICES)
    sim.add_argument("--seed", type=SEED, default=0, help="random seed")
    sim.add_argument("--save", metavar="MODEL_OUT", help="write the final model version here")
    sim.add_argument("--overwrite", action="store_true", help="replace MODEL_OUT if it exists")
    sim.add_argument("--json", action="store_true", help="one JSON object on stdout")
    sim.set_defaults(func=cmd_simulate)


def _budget_args(p: argparse.ArgumentParser, *, later: bool = False) -> None:
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--steps", type=STEPS, metavar="N", help="optimizer steps (default 600; at most 10^6)"
    )
    budget.add_argument(
        "--seconds", type=SECONDS, metavar="S", help="wall-time budget (s; at most 7 days)"
    )
    if later:
        p.add_argument(
            "--later-steps", type=STEPS, metavar="N", help="steps of rounds after the first"
        )


def parse_slices(text: str, shape: tuple[int, ...], option: str = "--slices"):
    """``"AXIS:I,J,..."`` → (axis, [indices]); InputError naming the problem."""
    axis_text, sep, rest = text.partition(":")
    try:
        axis = int(axis_text)
        slices = sorted({int(s) for s in rest.split(",") if s.strip()})
    except ValueError:
        raise InputError(f"{option} {text!r}: expected AXIS:I,J,... with integers") from None
    if not sep or not slices:
        raise InputError(f"{option} {text!r}: expected AXIS:I,J,... (e.g. 2:40,80,120)")
    if axis not in (0, 1, 2):
        raise InputError(f"{option} {text!r}: axis must be 0, 1 or 2")
    bad = [s for s in slices if not 0 <= s < shape[axis]]
    if bad:
        raise InputError(
            f"{option} {text!r}: slice {bad[0]} outside 0..{shape[axis] - 1} along axis {axis}"
        )
    return axis, slices


def _config(args: argparse.Namespace):
    from napari_unet.training.trainer import TrainConfig

    budget = {}
    if args.steps is not None or args.seconds is not None:
        budget = {"steps": args.steps, "seconds": args.seconds}
    try:
        return TrainConfig(**budget, device=args.device, seed=args.seed)
    except ValueError as e:
        raise InputError(f"training options: {e}") from None


def _device_ok(device: str) -> None:
    from napari_unet.inference.device import resolve_device

    try:
        resolve_device(device)
    except ValueError as e:
        raise InputError(f"--device {device}: {e}") from None


def _parent_classes(path: str | None) -> int | None:
    """Foreground classes of the parent model (its header only: no weights, no torch)."""
    from napari_unet.models.files import read_model_header

    return len(read_model_header(path)["spec"].labels) if path else None


def _load_pair(
    image_path: str,
    labels_path: str,
    *,
    what: str,
    n_classes: int | None,
    ignore_label: int | None = None,
    slices: str | None = None,
):
    """Read and check a scan and its label map (`training.data.check_training_pair`).

    Returns:
        ``(image, labels, check, (axis, slices))``: ``labels`` as uint8 (uint16 when
        the ignore label needs it), ``check`` the PairCheck.
    """
    import numpy as np

    from napari_unet.io.reader import load_volume
    from napari_unet.training.data import check_same_grid, check_training_pair

    image = load_volume(image_path)
    labels = load_volume(labels_path)
    check_same_grid(image, labels, what=what)
    axis, reviewed = parse_slices(slices, image.shape) if slices else (None, None)
    check = check_training_pair(
        image,
        labels,
        n_classes=n_classes,
        ignore_label=ignore_label,
        slices=reviewed,
        slice_axis=axis,
        what=what,
    )
    for message in check.warnings:
        warn(message)
    dtype = np.min_scalar_type(max(check.top_label, ignore_label or 0, 1))
    compact = np.asarray(labels.array).astype(dtype)
    return image, labels.with_array(compact, source=labels_path), check, (axis, reviewed)


def _new_spec(image, n_classes: int, names: list[str] | None):
    """A new model's spec through the loop's one factory (CT or MR guessed from the scan)."""
    from napari_unet.training.recipe import guess_modality, make_spec

    labels = list(names or [f"label{i}" for i in range(1, max(n_classes, 1) + 1)])
    try:
        return make_spec(labels, modality=guess_modality(image.array, image.modality))
    except (ValueError, TypeError) as e:
        raise InputError(f"--labels-names: {e}") from None


def cmd_train(args: argparse.Namespace) -> int:
    import numpy as np

    from napari_unet.loop import Loop

    if args.cohort is not None or args.nproc is not None:
        return cmd_train_cohort(args)
    if args.image is None or args.labels is None:
        raise InputError("train: give IMAGE and LABELS, or --cohort MANIFEST")
    out = prepare_output(
        args.out,
        overwrite=args.overwrite,
        inputs=[args.image, args.labels, args.from_model],
        suffixes=MODEL_SUFFIXES,
        option="-o",
    )
    cfg = _config(args)
    _device_ok(args.device)
    n_classes = _parent_classes(args.from_model)
    if n_classes is None and args.labels_names:
        n_classes = len(args.labels_names)
    image, labels, check, (axis, slices) = _load_pair(
        args.image,
        args.labels,
        what="labels",
        n_classes=n_classes,
        ignore_label=args.ignore_label,
        slices=args.slices,
    )
    replay = (
        parse_slices(args.replay_slices, image.shape, "--replay-slices")[1]
        if args.replay_slices
        else []
    )
    loop = Loop(image, np.asarray(labels.array), slice_axis=axis, device=args.device)
    spec = None
    if args.from_model:
        loop.open_model(args.from_model)
    else:
        spec = _new_spec(image, check.top_label, args.labels_names)
    options = {"all_voxels": True, "ignore_label": args.ignore_label}
    if slices:
        loop.mark_reviewed(sorted(set(slices) | set(replay)))
        options = {"previous": replay}
    job = loop.finetune(cfg, out=out, spec=spec, seed=args.seed, **options)
    trained = drain(job, "fine-tuning", enabled=not args.json)
    loop.add_version(trained)
    _report_training(args, trained)
    return 0


def _report_training(args: argparse.Namespace, trained) -> None:
    m, drift = trained.metrics, trained.metrics.drift_check
    summary = {
        "out": str(trained.path),
        "hash": trained.hash,
        "parent": trained.parent,
        "steps": m.steps,
        "seconds": m.seconds,
        "val_dice": m.val_dice,
        "val_dice_per_class": m.val_dice_per_class,
        "best_step": m.best_step,
        "device": m.device,
        "drift": None if drift is None else drift.to_dict(),
        "labelled_voxels": m.labelled_voxels,
    }
    if args.json:
        print(json.dumps(summary))
        return
    val = "n/a" if m.val_dice is None else f"{m.val_dice:.4f}"
    print(
        one_line(
            f"wrote {trained.path} ({m.steps} steps, {m.seconds:.1f} s on {m.device}; "
            f"validation Dice {val}; hash {trained.hash[:12]})"
        )
    )
    if drift is not None and drift.flagged:
        warn(
            "this version does worse than its parent on the replayed slices (Dice "
            f"{drift.child_dice:.4f} < {drift.parent_dice:.4f}); "
            f"roll back with --from {args.from_model}"
        )


def cmd_simulate(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from napari_unet.loop.simulation import save_final, simulate_steps
    from napari_unet.models.files import load_model

    out = None
    if args.save:
        out = prepare_output(
            args.save,
            overwrite=args.overwrite,
            inputs=[args.image, args.truth, args.from_model],
            suffixes=MODEL_SUFFIXES,
            option="--save",
        )
    cfg = _config(args)
    _device_ok(args.device)
    n_classes = _parent_classes(args.from_model)
    image, truth, check, _ = _load_pair(args.image, args.truth, what="truth", n_classes=n_classes)
    parent = load_model(args.from_model) if args.from_model else None
    spec = parent.spec if parent else _new_spec(image, check.top_label, None)
    later = replace(cfg, steps=args.later_steps, seconds=None) if args.later_steps else None
    job = simulate_steps(
        image,
        truth,
        model=parent,
        spec=spec,
        rounds=args.rounds,
        slices_per_round=args.slices_per_round,
        strategy=args.strategy,
        slice_axis=args.slice_axis,
        config=cfg,
        finetune_config=later,
        device=args.device,
    )
    result = drain(job, "simulating", enabled=not args.json)
    summary = result.to_dict()
    if out is not None and result.final is not None:
        summary["saved"] = {"path": str(out), "hash": save_final(result, out)}
    if args.json:
        print(json.dumps(summary))
        return 0
    for r in result.rounds:
        dice = "n/a" if r.dice is None else f"{r.dice:.4f}"
        rev = "n/a" if r.dice_revealed is None else f"{r.dice_revealed:.4f}"
        print(
            f"round {r.round}: revealed {r.revealed_slices} slices (+{r.slices}), "
            f"Dice unrevealed {dice}, revealed {rev}, {r.seconds:.1f} s"
        )
    print(f"total {result.seconds:.1f} s ({result.strategy})")
    return 0
