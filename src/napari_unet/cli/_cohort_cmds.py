"""`napari-unet predict` on a cohort and `napari-unet train --cohort` (over `napari_unet.cohort`).

``predict`` dispatches here when it gets several inputs, a folder of several cases, a
glob, a CSV/TSV manifest, or ``--workers``/``--scheduler``/``--resume``; ``-o`` then
names a folder. Exit status of a cohort ``predict``: 0 when every case is done (or was
already done: ``--resume``); 3 when some cases failed — the others are written, each
failure is one line on stderr and a record in ``OUT/cohort.jsonl``; 2 and 1 as for
every command (bad input or usage before any case ran; an internal error).

``train --cohort MANIFEST`` trains one version on every labelled case; ``--nproc N``
relaunches the same command in N processes through torchrun (DDP: gloo on the CPU,
NCCL on GPUs). A command started by ``torchrun`` itself (multi-node) runs as its rank.

torch and Dask are imported inside the command functions only.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from napari_unet.cli._common import (
    MODEL_SUFFIXES,
    NIFTI_SUFFIXES,
    int_range,
    one_line,
    prepare_output,
    warn,
)
from napari_unet.errors import InputError

#: Exit status when some cases of a cohort failed and the others were written.
EXIT_SOME_FAILED = 3
WORKERS = int_range(1, 1024)
NPROC = int_range(1, 1024)


def add_predict_options(pred: argparse.ArgumentParser) -> None:
    """The cohort options of ``predict``."""
    pred.add_argument(
        "--workers", type=WORKERS, metavar="N",
        help="cohort: worker processes (default: one per GPU, else one per core; 1 runs "
        "in this process); with --scheduler, wait for N workers",
    )  # fmt: skip
    pred.add_argument(
        "--scheduler", metavar="ADDR",
        help="cohort: run on an existing Dask cluster, e.g. tcp://HOST:8786 (inputs, "
        "outputs and the model on a file system every worker sees)",
    )  # fmt: skip
    pred.add_argument(
        "--resume", action="store_true",
        help="cohort: skip cases already done with this model (OUT/cohort.jsonl)",
    )  # fmt: skip


def add_train_options(train: argparse.ArgumentParser) -> None:
    """The cohort options of ``train``."""
    train.add_argument(
        "--cohort", metavar="MANIFEST",
        help="train on every case of a CSV/TSV manifest (image,labels[,id][,slices]"
        "[,ignore_label]) instead of IMAGE LABELS",
    )  # fmt: skip
    train.add_argument(
        "--nproc", type=NPROC, metavar="N",
        help="with --cohort: N data-parallel processes on this machine (torchrun; one "
        "per GPU, or gloo on the CPU); the batch is split, the result is the same",
    )  # fmt: skip


def wants_cohort(args: argparse.Namespace) -> bool:
    """Whether ``predict``'s arguments ask for a cohort run."""
    from napari_unet.cohort.manifest import is_cohort_input

    return bool(is_cohort_input(args.image) or args.workers or args.scheduler or args.resume)


# --- predict ----------------------------------------------------------------------------


def cmd_predict_cohort(args: argparse.Namespace) -> int:
    from napari_unet.cohort.manifest import collect_cases
    from napari_unet.cohort.run import predict_cohort_steps

    if args.uncertainty:
        raise InputError(
            "--uncertainty: a cohort records one uncertainty figure per case in "
            "OUT/cohort.jsonl; give a single scan for an uncertainty map"
        )
    if args.slice_axis is not None:
        raise InputError("--slice-axis: give a single scan (a cohort uses each model's own axis)")
    if str(args.out).lower().endswith(NIFTI_SUFFIXES):
        raise InputError(f"-o {args.out}: with several inputs -o names a folder, not a NIfTI file")
    cases = collect_cases(args.image)
    job = predict_cohort_steps(args.model, cases, args.out, workers=args.workers,
                               scheduler=args.scheduler, resume=args.resume,
                               overwrite=args.overwrite, device=args.device,
                               batch_size=args.batch_size)  # fmt: skip
    result = _drain_cases(job, enabled=not args.json)
    for record in result.records:
        if record["status"] == "failed":
            warn(f"{record['id']}: {record['error']}", kind="failed")
    if args.json:
        print(json.dumps(result.summary()))
    else:
        rate = result.summary()["scans_per_minute"]
        print(one_line(
            f"{result.done} of {len(result.records)} cases written to {result.out_dir} "
            f"({result.skipped} already done, {result.failed} failed; "
            f"{result.seconds:.1f} s, {rate or 0:.1f} scans/min on {result.workers} "
            f"worker(s), {result.scheduler}); records in {result.out_dir / 'cohort.jsonl'}"
        ))  # fmt: skip
    if result.failed:
        warn(f"{result.failed} of {len(result.records)} cases failed "
             f"(see {result.out_dir / 'cohort.jsonl'})", kind="error")  # fmt: skip
        return EXIT_SOME_FAILED
    return 0


def _drain_cases(job, *, enabled: bool) -> Any:
    """Run a cohort job with a progress line: cases done/total, failed, ETA."""
    bar: Any = None
    try:
        while True:
            try:
                event = next(job)
            except StopIteration as finished:
                return finished.value
            if not enabled:
                continue
            if bar is None:
                from tqdm import tqdm

                bar = tqdm(total=event.total, desc="predicting cohort", unit="case",
                           file=sys.stderr, mininterval=0.5, dynamic_ncols=True)  # fmt: skip
            data = event.data or {}
            bar.set_postfix_str(f"failed {data.get('failed', 0)}, skipped "
                                f"{data.get('skipped', 0)}", refresh=False)  # fmt: skip
            bar.update(max(0, event.done - bar.n))
    finally:
        if bar is not None:
            bar.close()
        job.close()


# --- train --cohort ---------------------------------------------------------------------


def cmd_train_cohort(args: argparse.Namespace) -> int:
    from napari_unet.cli._train_cmds import _config, _device_ok
    from napari_unet.cohort.manifest import read_manifest
    from napari_unet.cohort.train import training_cases

    if not args.cohort:
        raise InputError("--nproc: give --cohort MANIFEST (one scan trains in one process)")
    if args.image is not None or args.labels is not None:
        raise InputError("train --cohort: the scans come from the manifest; drop IMAGE LABELS")
    for option, value in (("--slices", args.slices), ("--replay-slices", args.replay_slices)):
        if value:
            raise InputError(f"{option}: with --cohort give reviewed slices per case in the "
                             "manifest's 'slices' column")  # fmt: skip
    cases = training_cases(read_manifest(args.cohort), ignore_label=args.ignore_label)
    inputs = [args.cohort, args.from_model] + [p for c in cases for p in (c.image, c.labels)]
    out = prepare_output(args.out, overwrite=args.overwrite, inputs=inputs,
                         suffixes=MODEL_SUFFIXES, option="-o")  # fmt: skip
    cfg = _config(args)
    _device_ok(args.device)
    nproc = args.nproc or 1
    from napari_unet.training.distributed import launched

    if launched():
        return _train_rank(args, cases, out, cfg)
    if nproc > 1:
        if cfg.seconds is not None:
            raise InputError("--nproc: give --steps, not --seconds (every process must stop "
                             "after the same step)")  # fmt: skip
        if cfg.batch_size % nproc:
            raise InputError(f"--nproc {nproc}: the batch of {cfg.batch_size} patches must "
                             "split evenly over the processes")  # fmt: skip
        from napari_unet.training.distributed import launch

        return launch(_rank_argv(args), nproc)
    return _train_one(args, cases, out, cfg)


def _train_one(args: argparse.Namespace, cases, out, cfg) -> int:
    from napari_unet.cli._progress import drain
    from napari_unet.cohort.train import cohort_finetune_steps

    parent = _parent(args.from_model)
    job = cohort_finetune_steps(parent, cases, out=out, config=cfg, seed=args.seed,
                                label_names=args.labels_names, note=f"cohort {args.cohort}",
                                warn=warn)  # fmt: skip
    version = drain(job, "fine-tuning on the cohort", enabled=not args.json)
    _report(args, version)
    return 0


def _train_rank(args: argparse.Namespace, cases, out, cfg) -> int:
    """One process of a DDP run (started by torchrun); rank 0 writes and reports."""
    from napari_unet.cli._progress import drain
    from napari_unet.cohort.train import cohort_finetune_steps
    from napari_unet.training.distributed import init_process_group, per_process_config, shutdown

    ctx = init_process_group(args.device)
    try:
        parent = _parent(args.from_model)
        job = cohort_finetune_steps(parent, cases, out=out, config=per_process_config(cfg, ctx),
                                    seed=args.seed, label_names=args.labels_names,
                                    note=f"cohort {args.cohort}", distributed=True,
                                    warn=warn if ctx.rank == 0 else None)  # fmt: skip
        try:
            version = drain(job, f"fine-tuning on the cohort ({ctx.world_size} processes)",
                            enabled=ctx.rank == 0 and not args.json)  # fmt: skip
        except ValueError as e:
            if ctx.rank != 0:  # the same message comes from rank 0
                raise SystemExit(2) from None
            raise InputError(str(e)) from None
        if ctx.rank == 0:
            _report(args, version)
    finally:
        shutdown()
    return 0


def _parent(path: str | None):
    from napari_unet.models.files import load_model

    return load_model(path) if path else None


def _rank_argv(args: argparse.Namespace) -> list[str]:
    """The ``train --cohort`` command line every process runs."""
    argv = ["train", "--cohort", str(args.cohort), "-o", str(args.out), "--nproc", str(args.nproc)]
    options = {"--from": args.from_model, "--steps": args.steps, "--seconds": args.seconds,
               "--device": args.device, "--seed": args.seed,
               "--ignore-label": args.ignore_label}  # fmt: skip
    for option, value in options.items():
        if value is not None:
            argv += [option, str(value)]
    if args.labels_names:
        argv += ["--labels-names", ",".join(args.labels_names)]
    argv += [flag for flag, on in (("--overwrite", args.overwrite), ("--json", args.json)) if on]
    return argv


def _report(args: argparse.Namespace, version) -> None:
    m = version.metrics
    summary = {
        "out": str(version.path),
        "hash": version.hash,
        "parent": version.parent,
        "cases": version.cases,
        "steps": m.get("steps"),
        "seconds": m.get("seconds"),
        "val_dice": m.get("val_dice"),
        "val_dice_per_class": m.get("val_dice_per_class"),
        "device": m.get("device"),
        "world_size": m.get("world_size", 1),
        "global_batch": m.get("global_batch"),
    }
    if args.json:
        print(json.dumps(summary))
        return
    val = "n/a" if m.get("val_dice") is None else f"{m['val_dice']:.4f}"
    print(one_line(
        f"wrote {version.path} ({len(version.cases)} cases, {m.get('steps')} steps, "
        f"{m.get('seconds', 0):.1f} s on {m.get('device')} x{summary['world_size']}; "
        f"validation Dice {val}; hash {version.hash[:12]})"
    ))  # fmt: skip
