"""`napari-unet demo`: the main job on a bundled sample."""

from __future__ import annotations

import argparse
from pathlib import Path

from napari_unet.cli._common import DEMO_SLICES, SECONDS
from napari_unet.errors import InputError
from napari_unet.outputs import check_writable
from napari_unet.samples import SAMPLE_KEYS


def register(subparsers: argparse._SubParsersAction) -> None:
    demo = subparsers.add_parser(
        "demo", help="open napari with the plugin and a sample (or run it offscreen)"
    )
    demo.add_argument(
        "--headless",
        action="store_true",
        help="run offscreen and write screenshots and the exported NIfTI to --out",
    )
    demo.add_argument("--out", default="demo_out", help="folder for the headless results")
    demo.add_argument("--sample", choices=SAMPLE_KEYS, default="mr_brain")
    demo.add_argument(
        "--slices", type=DEMO_SLICES, default=5, help="slices the simulated user corrects"
    )
    demo.add_argument("--seconds", type=SECONDS, default=90.0, help="fine-tuning budget (s)")
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.headless:
        _check_folder(Path(args.out))
    from napari_unet._demo import run_demo

    run_demo(
        sample=args.sample,
        headless=args.headless,
        out=args.out,
        slices=args.slices,
        train_seconds=args.seconds,
    )
    return 0


def _check_folder(out: Path) -> None:
    """``--out`` is a folder we can write in, or can be created (before napari starts)."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: is a file, not a folder")
    existing = next(p for p in (out, *out.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        raise InputError(f"--out {out}: {existing} is a file, not a folder")
    check_writable(existing, what=f"--out {out}")
