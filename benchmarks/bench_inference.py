"""Inference speed against MONAI's sliding_window_inference (see napari_unet.evaluation.bench).

Uses (and, with --retrain, rewrites) the committed benchmark nets in benchmarks/weights/.

Usage: python benchmarks/bench_inference.py [--quick | --full-only] [--retrain] [--json]
       [--note TEXT] [--out FILE] [--weights-dir DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

from napari_unet.evaluation.bench import main

WEIGHTS = Path(__file__).resolve().parent / "weights"

if __name__ == "__main__":
    sys.exit(main(weights_dir=WEIGHTS))
