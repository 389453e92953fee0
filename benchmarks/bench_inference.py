"""Inference speed against MONAI, defaults and tuned (see napari_unet.evaluation.bench).

Uses (and, with --retrain, rewrites) the committed benchmark nets in benchmarks/weights/.
Each method runs in a fresh process: a warm-up call, then the median of --repeats (≥ 3)
timed calls; the JSON holds every ratio (speedup = vs MONAI defaults, speedup_vs_tuned =
vs MONAI as a knowledgeable user tunes it: the headline), effective GFLOP/s and the
fraction of a plain-convolution peak measured in the same run.

Usage: python benchmarks/bench_inference.py [--quick | --full-only] [--device cpu|cuda]
       [--repeats 3] [--precision fp32|auto|bf16|fp16] [--retrain] [--json]
       [--note TEXT] [--out FILE] [--weights-dir DIR]

CPU results: --out benchmarks/results/inference_cpu.json; GPU: benchmarks/gpu.sh.
"""

from __future__ import annotations

import sys
from pathlib import Path

from napari_unet.evaluation.bench import main

WEIGHTS = Path(__file__).resolve().parent / "weights"

if __name__ == "__main__":
    sys.exit(main(weights_dir=WEIGHTS))
