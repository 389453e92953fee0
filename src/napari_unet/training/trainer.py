"""`finetune_steps`: train a model on sparse labels, as a long job (see `napari_unet.jobs`).

Recipe (defaults in `TrainConfig`, measured on the MR sample with
``benchmarks/bench_learning.py``): random patches from the reviewed voxels, a share
centred on each foreground class; light MONAI augmentation; Dice + class-weighted
cross-entropy on labelled voxels only; AdamW with linear warm-up then cosine decay over
the budget (steps or seconds, whichever ends first); mixed precision on CUDA (bf16, or
fp16 with a gradient scaler); validation on the held-out voxels every ``val_every`` steps
and at the end, keeping the best state. A stop request ends the loop at the next step and
the job returns the best state so far, never a half-trained mixture.

The network is a copy: the parent model passed in is not modified, so it can keep
predicting while its child trains.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from napari_unet.evaluation.metrics import dice_per_class, mean_dice
from napari_unet.jobs import Job, Progress, never
from napari_unet.models.spec import ModelSpec
from napari_unet.training.config import TrainConfig, cpu_threads, lr_factor
from napari_unet.training.data import SparseVolume
from napari_unet.training.loss import MaskedDiceCELoss, class_weights
from napari_unet.training.scoring import check_drift


@dataclass
class FinetuneResult:
    """What a fine-tuning run returns.

    Attributes:
        model: the network with the best state (eval mode, on the CPU).
        spec: its ModelSpec (unchanged from the input).
        metrics: ``val_dice`` (mean over foreground classes, None without validation
            voxels), ``val_dice_per_class``, ``best_step``, ``steps``, ``seconds``,
            ``seconds_per_step``, ``stopped``, ``final_loss``, ``device``, ``precision``.
        history: one dict per logged step (``step``, ``loss``, ``lr``, ``val_dice``,
            ``elapsed``).
        data: `SparseVolume.describe` of each training volume (new, then replayed).
        config: the TrainConfig used.
        parent_hash: content hash of the parent model file, "" for a new model.
        drift: `scoring.DriftCheck` as a dict (filled in when replayed data were given
            and the run had a parent), else None.
    """

    model: torch.nn.Module
    spec: ModelSpec
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    data: list[dict[str, Any]]
    config: TrainConfig
    parent_hash: str = ""
    drift: dict[str, Any] | None = None
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
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return (yield from _train(model, spec, list(data), list(replay), cfg, dev, stop))
    finally:
        if threads:
            torch.set_num_threads(old_threads)


def _train(
    model: Any,
    spec: ModelSpec,
    data: list[SparseVolume],
    replay: list[SparseVolume],
    cfg: TrainConfig,
    dev: torch.device,
    stop: Callable[[], bool],
) -> Job[FinetuneResult]:
    from napari_unet.inference.device import autocast, autocast_dtype
    from napari_unet.models.build import build_model, size_divisor
    from napari_unet.models.files import LoadedModel
    from napari_unet.training.augment import build_augmentation
    from napari_unet.training.sampler import PatchSampler, validation_inputs

    t0 = time.perf_counter()
    parent_hash = ""
    if model is None:
        torch.manual_seed(cfg.seed)
        net = build_model(spec)
        parent_net = None
    else:
        if isinstance(model, LoadedModel):
            parent_hash = model.hash
            model = model.model
        if not isinstance(model, torch.nn.Module):
            raise ValueError(f"model must be a LoadedModel, a torch Module or None, got {model!r}")
        parent_net = model
        net = copy.deepcopy(model).cpu()
    volumes = data + replay
    amp = autocast_dtype(dev, cfg.precision)
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

    best_state = _snapshot(net)
    best = {"score": -math.inf, "dice": None, "per_class": None, "step": 0}
    history: list[dict[str, Any]] = []
    step, loss_value, val_dice, stopped = 0, float("nan"), None, False
    t_train = time.perf_counter()

    def validate() -> None:
        nonlocal val_dice
        if cfg.bn_batches:
            _recalibrate_batchnorm(net, sampler, cfg.bn_batches, dev, amp)
        if not val_items:
            return
        per_class = _validate(net, val_items, dev, amp, spec.out_channels)
        val_dice = mean_dice(per_class)
        score = -math.inf if val_dice is None else val_dice
        late = _progress(step, time.perf_counter() - t_train, cfg) >= cfg.best_after
        if late and (score > best["score"] or best["dice"] is None):
            best.update(score=score, dice=val_dice, per_class=per_class, step=step)
            best_state.update(_snapshot(net))

    while True:
        elapsed = time.perf_counter() - t_train
        progress = _progress(step, elapsed, cfg)
        if progress >= 1.0:
            break
        if stop():
            stopped = True
            break
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_factor(progress, cfg.warmup, cfg.min_lr_ratio)
        x, y, m = sampler.sample()
        if augment is not None:
            x, y, m = augment(x, y, m)
        x, y, m = x.to(dev), y.to(dev), m.to(dev)
        opt.zero_grad(set_to_none=True)
        with autocast(dev, amp):
            logits = net(x)
        loss = loss_fn(logits.float(), y, m)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        step += 1
        loss_value = float(loss.detach())
        if step % cfg.val_every == 0:
            validate()
            net.train()
        elapsed = time.perf_counter() - t_train
        total, eta = _plan(step, elapsed, cfg)
        record = {
            "step": step,
            "loss": loss_value,
            "val_dice": val_dice,
            "elapsed": elapsed,
            "eta": eta,
        }
        if step % max(1, cfg.val_every // 5) == 0 or step == 1:
            history.append({**record, "lr": opt.param_groups[0]["lr"], "eta": round(eta, 2)})
        yield Progress(step, total, f"step {step}/{total} loss {loss_value:.3f}", record)
    if step % cfg.val_every != 0 or (stopped and not val_items):
        validate()
    final_pc = _validate(net, val_items, dev, amp, spec.out_channels) if val_items else None
    final = None if final_pc is None else mean_dice(final_pc)
    if final is not None and (best["dice"] is None or final >= best["dice"] - cfg.best_margin):
        best.update(
            dice=final, per_class=final_pc, step=step
        )  # prefer the final state unless clearly beaten
        best_state.update(_snapshot(net))
    if not val_items or best["dice"] is None:
        best_state.update(_snapshot(net))
        best["step"] = step
    net.load_state_dict(best_state)
    net.eval().cpu()
    train_seconds = time.perf_counter() - t_train
    metrics = {
        "val_dice": best["dice"],
        "val_dice_per_class": best["per_class"],
        "best_step": best["step"],
        "steps": step,
        "seconds": round(time.perf_counter() - t0, 3),
        "train_seconds": round(train_seconds, 3),
        "seconds_per_step": round(train_seconds / max(step, 1), 4),
        "stopped": stopped,
        "final_loss": loss_value,
        "device": str(dev),
        "precision": str(amp).replace("torch.", "") if amp else "float32",
        "class_weights": [round(w, 4) for w in weights],
    }
    result = FinetuneResult(
        model=net,
        spec=spec,
        metrics=metrics,
        history=history,
        data=[v.describe() for v in data] + [{**v.describe(), "replay": True} for v in replay],
        config=cfg,
        parent_hash=parent_hash,
    )
    if parent_net is not None and replay and not stopped:
        result.drift = check_drift(parent_net, net, spec, replay, device=cfg.device).to_dict()
    return result


def _progress(step: int, elapsed: float, cfg: TrainConfig) -> float:
    p = 0.0
    if cfg.steps is not None:
        p = max(p, step / cfg.steps)
    if cfg.seconds is not None:
        p = max(p, elapsed / cfg.seconds)
    return p


def _plan(step: int, elapsed: float, cfg: TrainConfig) -> tuple[int, float]:
    """(planned total steps, estimated seconds left)."""
    per_step = elapsed / max(step, 1)
    total = cfg.steps if cfg.steps is not None else 0
    if cfg.seconds is not None:
        by_time = int(cfg.seconds / max(per_step, 1e-9))
        total = min(total, by_time) if total else by_time
    total = max(total, step)
    return total, max(0.0, (total - step) * per_step)


@torch.no_grad()
def _recalibrate_batchnorm(net, sampler, n_batches: int, dev, amp) -> None:
    """Recompute batch-norm running statistics over ``n_batches`` fresh batches."""
    from napari_unet.inference.device import autocast

    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    for _ in range(n_batches):
        x, _, _ = sampler.sample()
        with autocast(dev, amp):
            net(x.to(dev))
    for m, mom in zip(norms, momenta, strict=True):
        m.momentum = mom


def _snapshot(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


@torch.no_grad()
def _validate(net, items, dev, amp, n_classes: int) -> list[float | None]:
    """Dice per foreground class over all validation voxels (pooled)."""
    from napari_unet.inference.device import autocast

    net.eval()
    preds, truths = [], []
    for x, y, m in items:
        with autocast(dev, amp):
            logits = net(x.to(dev))
        p = logits.argmax(1).cpu()
        preds.append(p[m])
        truths.append(y[m])
    return dice_per_class(torch.cat(preds), torch.cat(truths), n_classes)


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
