"""`finetune_steps`: train a model on sparse labels, as a long job (see `napari_unet.jobs`).

Recipe (defaults in `TrainConfig`, measured on the MR sample with
``benchmarks/bench_learning.py``): random patches from the reviewed voxels, a share
centred on each foreground class; light MONAI augmentation; Dice + class-weighted
cross-entropy on labelled voxels only; AdamW with linear warm-up then cosine decay over
the budget (steps or seconds, whichever ends first); mixed precision on CUDA (bf16 where
the GPU computes it natively; else fp16 with a gradient scaler for networks with
normalisation layers and float32 for those without, such as the recommended one: see
`inference.device.autocast_dtype`); validation on the held-out voxels every ``val_every`` steps
and at the end, keeping the best state. A stop request ends the loop at the next step and
the job returns the best state so far, never a half-trained mixture.

The run reads like MONAI's ``SupervisedTrainer``: `_setup` builds the network, data,
loss and optimizer (`TrainRun`), `_iteration` is one optimizer step, and the handlers
in `training.handlers` do the rest (stopping, validation with best-state keeping,
progress with ETA).

The network is a copy: the parent model passed in is not modified, so it can keep
predicting while its child trains.

Out of memory on a GPU during a step (forward and backward) or a validation moves the
run to the CPU (network, optimizer state, loss; float32) and redoes that step on the same
batch, so the run goes on with the result it would have had on the CPU; out of memory
on the CPU is a ``MemoryError`` naming the batch and a remedy (see
`handlers.fall_back_to_cpu`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from napari_unet.jobs import Job, never
from napari_unet.models.spec import ModelSpec
from napari_unet.training.config import TrainConfig, cpu_threads, lr_factor, torch_threads
from napari_unet.training.data import SparseVolume
from napari_unet.training.handlers import (
    BestState,
    TrainState,
    budget_used,
    guarded,
    log_step,
    should_end,
)
from napari_unet.training.loss import MaskedDiceCELoss, class_weights
from napari_unet.training.scoring import DriftCheck, check_drift


@dataclass
class TrainMetrics:
    """Figures of a fine-tuning run (the ``metrics`` of a version's lineage).

    Attributes:
        val_dice: mean Dice over foreground classes on the held-out reviewed voxels,
            of the kept state (None without validation voxels).
        val_dice_per_class: the same per foreground class.
        best_step: the step of the kept state.
        steps: optimizer steps run.
        seconds: wall time of the whole job (set-up included), s.
        train_seconds: wall time of the steps and validations, s.
        seconds_per_step: ``train_seconds / steps``.
        stopped: the user stopped the run.
        final_loss: the last step's loss (NaN without a step).
        device: where it trained (``str(torch.device)``).
        precision: "float32", "bfloat16" or "float16".
        class_weights: the cross-entropy class weights used.
    """

    val_dice: float | None
    val_dice_per_class: list[float | None] | None
    best_step: int
    steps: int
    seconds: float
    train_seconds: float
    seconds_per_step: float
    stopped: bool
    final_loss: float
    device: str
    precision: str
    class_weights: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON, keys as the field names (the lineage format)."""
        return asdict(self)


@dataclass
class FinetuneResult:
    """What a fine-tuning run returns.

    Attributes:
        model: the network with the best state (eval mode, on the CPU).
        spec: its ModelSpec (unchanged from the input).
        metrics: the run's `TrainMetrics`.
        history: one dict per logged step (``step``, ``loss``, ``lr``, ``val_dice``,
            ``elapsed``, ``eta``).
        data: `SparseVolume.describe` of each training volume (new, then replayed).
        config: the TrainConfig used.
        parent_hash: content hash of the parent model file, "" for a new model.
        drift: the `scoring.DriftCheck` (when replayed data were given, the run had a
            parent and was not stopped), else None.
        replay_names: names of the replayed volumes.
    """

    model: torch.nn.Module
    spec: ModelSpec
    metrics: TrainMetrics
    history: list[dict[str, Any]]
    data: list[dict[str, Any]]
    config: TrainConfig
    parent_hash: str = ""
    drift: DriftCheck | None = None
    replay_names: list[str] = field(default_factory=list)


def finetune_steps(
    model: Any,
    spec: ModelSpec,
    data: Sequence[SparseVolume],
    *,
    replay: Sequence[SparseVolume] = (),
    config: TrainConfig | None = None,
    stop: Callable[[], bool] = never,
) -> Job[FinetuneResult]:
    """Fine-tune (or train from scratch) on sparse labels, as a long job.

    Args:
        model: the parent — a `LoadedModel`, a ``torch.nn.Module`` of ``spec`` — or None
            for a new network (`models.build_model`, seeded by ``config.seed``).
        spec: the model's spec.
        data: the newly reviewed data (`training.data.sparse_volume`); several volumes
            are mixed, weighted by their number of labelled voxels.
        replay: previously reviewed data: mixed into training and, when there is a
            parent, scored with parent and child for the drift guard.
        config: options; None = `TrainConfig()` defaults.
        stop: returns True to stop; checked before every step.

    Yields:
        Progress(done=step, total=planned steps (estimated from the time budget when
        there is one), message, data={"step", "loss", "val_dice", "elapsed", "eta"})
        after every step; ``val_dice`` is the latest validation (None before the first),
        ``elapsed``/``eta`` in s.

    Returns:
        FinetuneResult with the best state (the last one without validation voxels).

    Raises:
        ValueError: no labelled voxel, mismatched channels, bad config.
    """
    from napari_unet.inference.device import resolve_device

    cfg = config or TrainConfig()
    dev = resolve_device(cfg.device)
    threads = cpu_threads(cfg.threads) if dev.type == "cpu" else None
    with torch_threads(threads):
        return (yield from _train(model, spec, list(data), list(replay), cfg, dev, stop))


@dataclass
class TrainRun:
    """What one run is built from (MONAI: the engine's network, loader, loss …).

    Attributes:
        net: the network being trained (a copy of the parent's, or a new one).
        spec: its ModelSpec.
        cfg: the options.
        dev: where it trains.
        amp: the autocast dtype, None for float32.
        sampler: draws training batches (`training.sampler.PatchSampler`).
        augment: batch augmentation, or None.
        loss_fn: the masked Dice + cross-entropy loss.
        opt: the AdamW optimizer.
        scaler: the gradient scaler (active for fp16 on CUDA only).
        val_items: validation batches ``(x, y, mask)``, empty without held-out voxels.
        weights: the cross-entropy class weights.
        parent: the parent network (untouched), None for a new model.
        parent_hash: the parent file's content hash, "" when unknown.
        messages: fallbacks that happened (out of memory on the GPU → the CPU).
    """

    net: torch.nn.Module
    spec: ModelSpec
    cfg: TrainConfig
    dev: torch.device
    amp: torch.dtype | None
    sampler: Any
    augment: Callable[..., Any] | None
    loss_fn: torch.nn.Module
    opt: torch.optim.Optimizer
    scaler: Any
    val_items: list[Any]
    weights: list[float]
    parent: torch.nn.Module | None
    parent_hash: str
    messages: list[str] = field(default_factory=list)


def _train(
    model: Any,
    spec: ModelSpec,
    data: list[SparseVolume],
    replay: list[SparseVolume],
    cfg: TrainConfig,
    dev: torch.device,
    stop: Callable[[], bool],
) -> Job[FinetuneResult]:
    """Iterations until the budget is spent or a stop request, with the handlers."""
    t0 = time.perf_counter()
    run = _setup(model, spec, data + replay, cfg, dev)
    best = BestState(run)
    state = TrainState()
    while True:
        progress = budget_used(state.step, state.elapsed(), cfg)
        if should_end(progress, state, stop):
            break
        _iteration(run, state, progress)
        best.after_step(run, state)
        yield log_step(run, state)
    best.finish(run, state)
    return _result(run, state, best, data, replay, started=t0)


def _networks(model: Any, spec: ModelSpec, seed: int) -> tuple[torch.nn.Module, Any, str]:
    """(network to train, parent network or None, parent hash)."""
    from napari_unet.models.build import build_model
    from napari_unet.models.files import LoadedModel

    if model is None:
        torch.manual_seed(seed)
        return build_model(spec), None, ""
    parent_hash = ""
    if isinstance(model, LoadedModel):
        parent_hash = model.hash
        model = model.model
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a LoadedModel, a torch Module or None, got {model!r}")
    return copy.deepcopy(model).cpu(), model, parent_hash


def _setup(
    model: Any, spec: ModelSpec, volumes: list[SparseVolume], cfg: TrainConfig, dev: torch.device
) -> TrainRun:
    """The network, sampler, loss, augmentation, validation batches and optimizer."""
    from napari_unet.inference.device import autocast_dtype
    from napari_unet.models.build import size_divisor
    from napari_unet.training.augment import build_augmentation
    from napari_unet.training.sampler import PatchSampler, validation_inputs

    net, parent, parent_hash = _networks(model, spec, cfg.seed)
    amp = autocast_dtype(dev, cfg.precision, net=net)
    patch = cfg.patch_size or tuple(spec.patch_size)
    sampler = PatchSampler(
        volumes,
        spatial_dims=spec.spatial_dims,
        patch_size=patch,
        batch_size=cfg.batch_size,
        context_slices=spec.context_slices,
        n_classes=spec.out_channels,
        fg_fraction=cfg.fg_fraction,
        seed=cfg.seed,
    )
    counts = np.zeros(spec.out_channels, dtype=np.int64)
    for v in volumes:
        counts += np.bincount(v.labels[v.train], minlength=spec.out_channels)[: spec.out_channels]
    weights = class_weights(counts, power=cfg.class_weight_power)
    loss_fn = MaskedDiceCELoss(spec.out_channels, class_weights=weights).to(dev)
    augment = build_augmentation(
        spec.spatial_dims, level=cfg.augmentation, flip_axes=cfg.flip_axes, seed=cfg.seed
    )
    val_items = validation_inputs(
        volumes,
        spatial_dims=spec.spatial_dims,
        patch_size=patch,
        context_slices=spec.context_slices,
        divisor=size_divisor(spec),
    )
    net.to(dev).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=dev.type == "cuda" and amp == torch.float16)
    return TrainRun(
        net,
        spec,
        cfg,
        dev,
        amp,
        sampler,
        augment,
        loss_fn,
        opt,
        scaler,
        val_items,
        list(weights),
        parent,
        parent_hash,
    )


def _iteration(run: TrainRun, state: TrainState, progress: float) -> None:
    """One optimizer step at ``progress`` of the budget (MONAI: ``_iteration``):
    learning rate, batch, augmentation, forward under autocast, loss, backward, step.

    Forward and backward are `guarded`: out of memory on a GPU moves the run to the CPU
    and redoes them on the same batch. The optimizer step is not: its temporaries are
    the size of the weights, and one failing half-way would leave Adam's moments partly
    updated, which no redo could undo.
    """
    cfg = run.cfg
    for group in run.opt.param_groups:
        group["lr"] = cfg.lr * lr_factor(progress, cfg.warmup, cfg.min_lr_ratio)
    x, y, m = run.sampler.sample()
    if run.augment is not None:
        x, y, m = run.augment(x, y, m)
    what = f"in a training step on a batch of shape {tuple(x.shape)}"
    loss = guarded(run, lambda: _forward_backward(run, x, y, m), what)
    run.scaler.step(run.opt)
    run.scaler.update()
    state.step += 1
    state.loss = float(loss.detach())


def _forward_backward(run: TrainRun, x, y, m) -> torch.Tensor:
    """The loss of one batch and its gradients, on the run's current device and
    precision (gradients are zeroed first, so a failed call can be redone)."""
    from napari_unet.inference.device import autocast

    dev = run.dev
    run.opt.zero_grad(set_to_none=True)
    x, y, m = x.to(dev), y.to(dev), m.to(dev)
    with autocast(dev, run.amp):
        logits = run.net(x)
    loss = run.loss_fn(logits.float(), y, m)
    run.scaler.scale(loss).backward()
    return loss


def _result(
    run: TrainRun,
    state: TrainState,
    best: BestState,
    data: list[SparseVolume],
    replay: list[SparseVolume],
    *,
    started: float,
) -> FinetuneResult:
    """The FinetuneResult, with the drift check when a parent was fine-tuned on replay."""
    train_seconds = state.elapsed()
    metrics = TrainMetrics(
        val_dice=best.dice,
        val_dice_per_class=best.per_class,
        best_step=best.step,
        steps=state.step,
        seconds=round(time.perf_counter() - started, 3),
        train_seconds=round(train_seconds, 3),
        seconds_per_step=round(train_seconds / max(state.step, 1), 4),
        stopped=state.stopped,
        final_loss=state.loss,
        device=str(run.dev),
        precision=str(run.amp).replace("torch.", "") if run.amp else "float32",
        class_weights=[round(w, 4) for w in run.weights],
    )
    result = FinetuneResult(
        model=run.net,
        spec=run.spec,
        metrics=metrics,
        history=state.history,
        data=[v.describe() for v in data] + [{**v.describe(), "replay": True} for v in replay],
        config=run.cfg,
        parent_hash=run.parent_hash,
    )
    if run.parent is not None and replay and not state.stopped:
        result.drift = check_drift(run.parent, run.net, run.spec, replay, device=run.cfg.device)
    return result


def finetune(
    model: Any,
    spec: ModelSpec,
    data: Sequence[SparseVolume],
    *,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> FinetuneResult:
    """Run `finetune_steps` to the end (same arguments) and return its result."""
    from napari_unet.jobs import run_job

    return run_job(finetune_steps(model, spec, data, **options), progress)
