"""Inference speed against MONAI's sliding_window_inference (see napari_unet.inference.bench).

Usage: python benchmarks/bench_inference.py [--quick | --full-only] [--retrain] [--json]
       [--note TEXT] [--out FILE]
"""

from __future__ import annotations

import sys

from napari_unet.inference.bench import main

if __name__ == "__main__":
    sys.exit(main())
