"""`TrainConfig`: the options of a fine-tuning run, and its learning-rate schedule.

The defaults are what was measured to work on the MR sample from scratch (see
``benchmarks/bench_learning.py`` and `training.recipe`), so the CLI and the widgets get
them for free: 600 steps of 8 patches of 96², AdamW at 3e-3 with 5 % warm-up then cosine
decay, light augmentation, 60 % of patches centred on foreground.

Why 600 steps (300 until session 6): from scratch on 5 revealed slices, scored on slices
never revealed, 300 steps left the network under-trained. Measured on the two volumes
that tune the recipe (3 seeds each, CPU): CT phantom 0.922 → 0.952, MR sample 0.964 →
0.970; 1000 steps gave 0.951 on one CT seed (0.940 at 600) for 1.7× the time. Stronger
augmentation and class weights ∝ 1/frequency were worse there. 600 steps take about
65 s on two cores, close to the panel's default time budget (60 s).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from napari_unet.typing import Device, Precision


@dataclass
class TrainConfig:
    """Options of one fine-tuning run.

    Attributes:
        steps: optimizer steps budget (None = no step limit; then ``seconds`` is needed).
        seconds: wall-time budget in s (None = no time limit). With both, the first to
            run out ends the run; the learning-rate schedule follows whichever is nearer.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup: share of the budget with a linear warm-up from ``lr / 20``.
        min_lr_ratio: final learning rate as a share of ``lr`` (cosine decay).
        batch_size: patches per step.
        patch_size: patch in voxels (model axis order); None = ``spec.patch_size``.
        fg_fraction: share of patches centred on a foreground voxel.
        val_every: steps between validations (also at the end).
        augmentation: "none", "light" or "strong" (see `training.augment`).
        flip_axes: patch axes that may be flipped (default none: lateralised anatomy).
        class_weight_power: cross-entropy class weights ∝ (1/frequency) ** power.
        precision: a `Precision`: "auto" (bf16/fp16 on CUDA, float32 elsewhere), "fp32",
            "bf16", "fp16".
        device: a `Device`: "auto", "cpu", "cuda", "mps" ("cuda:1" names a GPU).
        bn_batches: before each validation (and at the end), batch-norm running
            statistics are recomputed as the plain average over this many training
            batches of the current weights (0 = keep PyTorch's running averages). With
            the default momentum they follow the last ~10 random patches, and the
            eval-mode network drifted by up to 0.03 Dice between neighbouring steps.
        best_after: the best state is chosen among validations after this share of
            the budget (and the final state); earlier ones, taken at high learning rate,
            won on the small held-out bands by noise and generalised worse.
        best_margin: the final state is kept unless an earlier one beat it on validation
            by more than this Dice (validation on a few bands is noisy, ±0.03 measured).
        seed: seeds sampling, augmentation and (for new models) the weights.
        threads: CPU threads for torch during the run; None = all cores but one on the
            CPU (at least one), the torch setting elsewhere. Leaving a core free keeps
            the GUI responsive, and on a busy 2-core machine one thread measured 4–7×
            faster per step than two fighting another process for the cores.
    """

    steps: int | None = 600
    seconds: float | None = None
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: float = 0.05
    min_lr_ratio: float = 0.02
    batch_size: int = 8
    patch_size: tuple[int, ...] | None = None
    fg_fraction: float = 0.6
    val_every: int = 50
    augmentation: str = "light"
    flip_axes: tuple[int, ...] = ()
    class_weight_power: float = 0.5
    precision: Precision | str = "auto"
    device: Device | str = "auto"
    bn_batches: int = 8
    best_after: float = 0.5
    best_margin: float = 0.01
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.steps is None and self.seconds is None:
            raise ValueError("give a budget: steps or seconds (or both)")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps!r}")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"seconds must be > 0, got {self.seconds!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be in [0, 1), got {self.warmup!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size!r}")
        if not 0 <= self.fg_fraction <= 1:
            raise ValueError(f"fg_fraction must be in [0, 1], got {self.fg_fraction!r}")
        if self.val_every < 1:
            raise ValueError(f"val_every must be >= 1, got {self.val_every!r}")
        Device.check(self.device, "device")
        Precision.check(self.precision, "precision")
        self.flip_axes = tuple(int(a) for a in self.flip_axes)
        if self.patch_size is not None:
            self.patch_size = tuple(int(p) for p in self.patch_size)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def lr_factor(progress: float, warmup: float, min_ratio: float) -> float:
    """Learning-rate multiplier at ``progress`` ∈ [0, 1] of the budget.

    Linear warm-up from ``1/20`` to 1 over ``warmup``, then cosine decay to ``min_ratio``.
    """
    p = min(max(progress, 0.0), 1.0)
    if warmup > 0 and p < warmup:
        return 0.05 + 0.95 * p / warmup
    q = (p - warmup) / max(1e-9, 1.0 - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * q))


def cpu_threads(threads: int | None = None) -> int:
    """Torch CPU threads for training: ``threads``, else all cores but one (at least 1)."""
    if threads:
        return max(1, int(threads))
    return max(1, (os.cpu_count() or 2) - 1)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Torch uses ``threads`` CPU threads inside the block, and its former count after
    (None or 0: the count is left as it is)."""
    import torch

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(old_threads)
