"""Model versions: lineage metadata, saving, history, rollback, and the drift guard.

Every fine-tuning run gives a new model version, one `.safetensors` file written
atomically by `models.files.save_model`. Its ``lineage`` metadata (JSON) holds:

* ``parent``: content hash of the parent version ("" / None for a new model);
* ``trained_on``: one entry per training volume (name, shape, slice axis, reviewed
  slices, voxel counts; ``replay: true`` for previously reviewed data);
* ``reviewed_slices``: ``[{"name", "axis", "slices"}]``, the union the model learned from;
* ``metrics``: validation Dice (mean and per class), best step, steps, stop flag, device…;
* ``timings``: ``train_seconds``, ``seconds``, ``seconds_per_step``;
* ``config``: the `TrainConfig`;
* ``drift``: the drift-guard check (see `check_drift`) or None;
* ``created`` and ``versions`` (filled in by ``save_model``).

Rollback is loading an older file: versions are never modified once written, and
`version_history` follows the parent hashes through the files of a folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_unet.models.spec import ModelSpec
from napari_unet.training.data import SparseVolume
from napari_unet.training.loss import dice_per_class, mean_dice
from napari_unet.training.trainer import FinetuneResult

#: A child may lose this much Dice on replayed slices before it is flagged.
DRIFT_TOLERANCE = 0.01


@dataclass
class DriftCheck:
    """Parent and child scored on previously reviewed voxels.

    Attributes:
        parent_dice: mean foreground Dice of the parent (None: no foreground there).
        child_dice: the same for the new version.
        tolerance: allowed loss of Dice.
        flagged: True when ``child_dice < parent_dice - tolerance``.
        voxels: number of replayed voxels scored.
    """

    parent_dice: float | None
    child_dice: float | None
    tolerance: float
    flagged: bool
    voxels: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def replay_dice(
    net: torch.nn.Module,
    spec: ModelSpec,
    volumes: Sequence[SparseVolume],
    *,
    device: str = "auto",
) -> tuple[list[float | None], int]:
    """Dice per foreground class of a network on all labelled voxels of ``volumes``.

    Predicts only the reviewed slices (`inference.predict_volume` with ``slices``) on
    the model grid, from the volumes' normalised images.

    Returns:
        (Dice per class 1..C-1, pooled over the volumes; number of voxels scored).
    """
    from napari_unet.inference.predict import predict_volume
    from napari_unet.io.volume import Volume
    from napari_unet.models.spec import Normalization

    # The images are normalised already: predict them as they are.
    plain = ModelSpec.from_dict({**spec.to_dict(), "target_spacing": None})
    plain.normalization = Normalization(mode="none")
    preds, truths = [], []
    for v in volumes:
        labelled = v.train | v.val
        if not labelled.any():
            continue
        vol = Volume(v.image, np.eye(4))
        out = predict_volume(
            net, plain, vol, slices=v.slices, slice_axis=v.slice_axis, device=device
        )
        preds.append(out.labels.array[labelled])
        truths.append(v.labels[labelled])
    if not preds:
        return [None] * (spec.out_channels - 1), 0
    p, t = np.concatenate(preds), np.concatenate(truths)
    return dice_per_class(p, t, spec.out_channels), int(p.size)


def check_drift(
    parent: torch.nn.Module,
    child: torch.nn.Module,
    spec: ModelSpec,
    replay: Sequence[SparseVolume],
    *,
    tolerance: float = DRIFT_TOLERANCE,
    device: str = "auto",
) -> DriftCheck:
    """Score parent and child on previously reviewed voxels; flag a child that got worse.

    Args:
        parent: the parent network.
        child: the new network.
        spec: their spec.
        replay: previously reviewed data.
        tolerance: Dice the child may lose before being flagged.
        device: where to predict.
    """
    p_dice, n = replay_dice(parent, spec, replay, device=device)
    c_dice, _ = replay_dice(child, spec, replay, device=device)
    pm, cm = mean_dice(p_dice), mean_dice(c_dice)
    flagged = pm is not None and cm is not None and cm < pm - tolerance
    return DriftCheck(pm, cm, tolerance, bool(flagged), n)


def lineage_for(result: FinetuneResult, **extra: Any) -> dict[str, Any]:
    """The lineage dict of a fine-tuning result (see module docstring)."""
    reviewed = [
        {"name": d["name"], "axis": d["slice_axis"], "slices": d["slices"]} for d in result.data
    ]
    m = result.metrics
    lineage = {
        "parent": result.parent_hash or None,
        "trained_on": result.data,
        "reviewed_slices": reviewed,
        "metrics": {k: v for k, v in m.items() if k not in ("seconds", "train_seconds")},
        "timings": {
            "seconds": m.get("seconds"),
            "train_seconds": m.get("train_seconds"),
            "seconds_per_step": m.get("seconds_per_step"),
        },
        "config": result.config.to_dict(),
        "drift": result.drift,
    }
    lineage.update(extra)
    return lineage


def save_version(path: str | os.PathLike, result: FinetuneResult, **extra: Any) -> str:
    """Write a fine-tuning result as a new model version (atomic; see `save_model`).

    Args:
        path: the ``.safetensors`` file to write; its folder must exist.
        result: from `finetune_steps`.
        **extra: more lineage entries (e.g. ``note="after round 2"``).

    Returns:
        The content hash of the new version.
    """
    from napari_unet.models.files import save_model

    return save_model(path, result.model, result.spec, lineage_for(result, **extra))


def version_history(path: str | os.PathLike) -> list[dict[str, Any]]:
    """A model file and its ancestors found in the same folder, newest first.

    Returns:
        One ``{"path", "hash", "parent", "created", "metrics", "drift"}`` per version,
        following ``lineage.parent`` hashes until a version has no parent or its parent
        is not in the folder. Load any of them with `models.load_model` to roll back.
    """
    from napari_unet.errors import ModelFileError
    from napari_unet.models.files import read_model_header

    path = Path(path)
    by_hash: dict[str, dict[str, Any]] = {}
    for f in sorted(path.parent.glob("*.safetensors")):
        try:
            head = read_model_header(f)
        except ModelFileError:
            continue
        by_hash[head["hash"]] = {
            "path": str(f),
            "hash": head["hash"],
            "parent": head["lineage"].get("parent"),
            "created": head["lineage"].get("created"),
            "metrics": head["lineage"].get("metrics", {}),
            "drift": head["lineage"].get("drift"),
        }
    first = read_model_header(path)
    chain, seen = [], set()
    h = first["hash"]
    while h and h in by_hash and h not in seen:
        seen.add(h)
        chain.append(by_hash[h])
        h = by_hash[h]["parent"]
    return chain
