"""Storing model versions: lineage metadata, saving, history and rollback.

Every fine-tuning run gives a new model version, one `.safetensors` file written
atomically by `models.files.save_model`. Its ``lineage`` metadata (JSON) holds:

* ``parent``: content hash of the parent version ("" / None for a new model);
* ``trained_on``: one entry per training volume (name, shape, slice axis, reviewed
  slices, voxel counts; ``replay: true`` for previously reviewed data);
* ``reviewed_slices``: ``[{"name", "axis", "slices"}]``, the union the model learned from;
* ``metrics``: validation Dice (mean and per class), best step, steps, stop flag, device…;
* ``timings``: ``train_seconds``, ``seconds``, ``seconds_per_step``;
* ``config``: the `TrainConfig`;
* ``drift``: the drift-guard check (`training.scoring.check_drift`) or None;
* ``created`` and ``versions`` (filled in by ``save_model``).

Rollback is loading an older file: versions are never modified once written, and
`version_history` follows the parent hashes through the files of a folder. Scoring
versions is `training.scoring`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_unet.training.trainer import FinetuneResult


def lineage_for(result: FinetuneResult, **extra: Any) -> dict[str, Any]:
    """The lineage dict of a fine-tuning result (see module docstring).

    Args:
        result: from `training.finetune_steps`.
        **extra: more lineage entries, added last.
    """
    reviewed = [
        {"name": d["name"], "axis": d["slice_axis"], "slices": d["slices"]} for d in result.data
    ]
    m = result.metrics
    lineage = {
        "parent": result.parent_hash or None,
        "trained_on": result.data,
        "reviewed_slices": reviewed,
        "metrics": {k: v for k, v in m.to_dict().items() if k not in ("seconds", "train_seconds")},
        "timings": {
            "seconds": m.seconds,
            "train_seconds": m.train_seconds,
            "seconds_per_step": m.seconds_per_step,
        },
        "config": result.config.to_dict(),
        "drift": None if result.drift is None else result.drift.to_dict(),
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

    Args:
        path: a model version's ``.safetensors`` file.

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
