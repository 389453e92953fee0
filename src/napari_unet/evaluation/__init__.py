"""Evaluation, apart from the engine: metrics (the one Dice) and the inference benchmark.

* `metrics`: `dice_per_class`, `mean_dice` — numpy only, used by training and scoring;
* `bench`: napari_unet's `predict_volume` against MONAI's `sliding_window_inference`,
  with its defaults and tuned (`run_benchmark`; ``python -m napari_unet.evaluation.bench``),
  with its networks and data in `bench_nets`, the timed methods in `baselines`, FLOP
  counts and the conv peak in `flops`, and its fresh-process measurements in `timing`;
* `gpu`: the GPU-only figures of ``benchmarks/gpu.sh`` (a fine-tune round, GPU memory
  against volume size).

This package imports nothing at import time: the engine (`training`) may use `metrics`
without loading the benchmark.
"""

from __future__ import annotations
