"""`napari-unet demo`: the main job on a bundled sample."""

from __future__ import annotations

import argparse

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
    demo.add_argument("--slices", type=int, default=5, help="slices the simulated user corrects")
    demo.add_argument("--seconds", type=float, default=90.0, help="fine-tuning budget (s)")
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from napari_unet._demo import run_demo

    run_demo(
        sample=args.sample,
        headless=args.headless,
        out=args.out,
        slices=args.slices,
        train_seconds=args.seconds,
    )
    return 0
