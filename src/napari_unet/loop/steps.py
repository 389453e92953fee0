"""The loop's two long jobs, over snapshots: predicting and fine-tuning.

Each job reads what it needs when it is *created* (on the caller's thread) and returns
a plain result; the `Loop` applies the result afterwards (`Loop.merge`,
`Loop.add_version`) on the caller's thread again. So a job never changes the loop's
state or a model another job is using: the parent of a fine-tune is deep-copied inside
the job, and global switches (threads, garbage collection) are restored by the
engine's own jobs when they end.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet.io.volume import Volume
from napari_unet.jobs import Job, never
from napari_unet.training.scoring import DriftCheck
from napari_unet.typing import Device


@dataclass
class VersionMetrics:
    """Figures of a new model version (`workspace.ModelVersion.metrics` holds `to_dict`).

    Attributes:
        val_dice: mean foreground Dice on the held-out reviewed voxels (None: none held
            out).
        val_dice_per_class: the same per foreground class.
        steps: optimizer steps run.
        seconds: wall time of the fine-tune, s.
        stopped: the user stopped it early (the best state so far was kept).
        device: where it trained.
        best_step: the step of the kept state.
        trained_slices: every slice the version learned from (new and replayed).
        drift: the version does worse than its parent on earlier slices (flagged).
        drift_check: parent and child scored on the replayed slices, or None.
        earlier_slices_dice: (parent, child) mean Dice on the replayed slices, or None.
        labelled_voxels: labelled voxels trained and validated on.
    """

    val_dice: float | None = None
    val_dice_per_class: list[float | None] | None = None
    steps: int = 0
    seconds: float = 0.0
    stopped: bool = False
    device: str = ""
    best_step: int = 0
    trained_slices: list[int] = field(default_factory=list)
    drift: bool = False
    drift_check: DriftCheck | None = None
    earlier_slices_dice: list[float | None] | None = None
    labelled_voxels: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON; ``earlier_slices_dice`` only when there was a drift check."""
        out = asdict(self)
        if self.earlier_slices_dice is None:
            del out["earlier_slices_dice"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VersionMetrics:
        """Read back `to_dict` (e.g. a `ModelVersion`'s metrics); unknown keys are
        ignored, missing ones get their defaults."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        check = values.get("drift_check")
        if isinstance(check, dict):
            values["drift_check"] = DriftCheck.from_dict(check)
        return cls(**values)


@dataclass
class TrainedVersion:
    """A fine-tune's outcome, written to its file, not yet part of the loop.

    Attributes:
        path: the new version's ``.safetensors`` file.
        hash: its content hash.
        parent: the parent's hash (None for a model trained from scratch).
        model: the new version loaded back from its file (`LoadedModel`).
        metrics: its `VersionMetrics`.
    """

    path: Path
    hash: str
    parent: str | None
    model: Any
    metrics: VersionMetrics = field(default_factory=VersionMetrics)

    @property
    def flagged(self) -> bool:
        """Worse than its parent on the earlier slices."""
        return self.metrics.drift


@dataclass
class TrainingData:
    """Which voxels of the labels count, split into new and replayed slices.

    Attributes:
        new: slices never trained on by the parent (None: every labelled voxel).
        replay: slices the parent already learned from (trained again and scored).
        ignore_label: a value meaning "not labelled" (with ``new=None``).
    """

    new: list[int] | None
    replay: list[int]
    ignore_label: int | None = None


def split_slices(reviewed: Sequence[int], previous: Sequence[int]) -> TrainingData:
    """New slices train the child; earlier ones are replayed for the drift guard."""
    new = sorted(set(reviewed) - set(previous))
    old = sorted(set(reviewed) & set(previous))
    if not new:  # nothing new: train on everything, no drift comparison
        new, old = sorted(reviewed), []
    return TrainingData(new, old)


def predict_job(
    model: Any,
    image: Volume,
    *,
    slice_axis: int,
    slices: Sequence[int] | None,
    device: Device | str,
    uncertainty: bool,
    batch_size: int | None = None,
    stop: Callable[[], bool] = never,
) -> Job[Any]:
    """Predict the scan (a 2D model: only ``slices`` when given); returns a `Prediction`."""
    from napari_unet.inference.predict import predict_steps

    two_d = model.spec.spatial_dims == 2
    return (
        yield from predict_steps(
            model,
            None,
            image,
            device=device,
            slices=slices if two_d else None,
            slice_axis=slice_axis if two_d else None,
            uncertainty=uncertainty,
            batch_size=batch_size,
            stop=stop,
        )
    )


def finetune_job(
    model: Any,
    spec: Any,
    image: Volume,
    labels: np.ndarray,
    data: TrainingData,
    *,
    slice_axis: int,
    config: Any,
    out: Path,
    name: str,
    note: str = "",
    seed: int = 0,
    stop: Callable[[], bool] = never,
) -> Job[TrainedVersion]:
    """Train on the labelled voxels, save the version atomically, load it back.

    Args:
        model: the parent (`LoadedModel`), or None to train ``spec`` from scratch.
        spec: the ModelSpec.
        image: the scan.
        labels: a snapshot of the labels ``(i, j, k)`` (not the live array).
        data: which slices count (see `TrainingData`).
        slice_axis: the axis of the slices.
        config: a `training.TrainConfig`.
        out: the new version's file.
        name: names the data in the lineage (the scan's file).
        note: a lineage note.
        seed: seeds the sampling of the data.
        stop: returns True to stop; the best state so far is kept.
    """
    from napari_unet.models.files import load_model
    from napari_unet.training import finetune_steps, save_version, sparse_volume

    label_volume = image.with_array(labels)

    def sparse(slices, tag, offset):
        return sparse_volume(image, label_volume, spec, slices=slices, slice_axis=slice_axis,
                             ignore_label=data.ignore_label, seed=seed + offset,
                             name=f"{name}{tag}")  # fmt: skip

    train = [sparse(data.new, "", 0)]
    replay = [sparse(data.replay, " (earlier slices)", 1000)] if data.replay else []
    parent = copy.deepcopy(model) if model is not None else None
    result = yield from finetune_steps(parent, spec, train, replay=replay, config=config,
                                       stop=stop)  # fmt: skip
    digest = save_version(out, result, image=name, note=note)
    trained = sorted(set(data.new or []) | set(data.replay))
    m, drift = result.metrics, result.drift
    metrics = VersionMetrics(
        val_dice=m.val_dice,
        val_dice_per_class=m.val_dice_per_class,
        steps=m.steps,
        seconds=m.seconds,
        stopped=m.stopped,
        device=m.device,
        best_step=m.best_step,
        trained_slices=trained,
        drift=bool(drift and drift.flagged),
        drift_check=drift,
        earlier_slices_dice=None if drift is None else [drift.parent_dice, drift.child_dice],
        labelled_voxels=int(sum(d["train_voxels"] + d["val_voxels"] for d in result.data)),
    )
    return TrainedVersion(out, digest, result.parent_hash or None, load_model(out), metrics)


def version_file(folder: Path, spec: Any) -> Path:
    """A new, unused file name for a version of ``spec`` in ``folder``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"{spec.name}-{stamp}.safetensors"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"{spec.name}-{stamp}-{n}.safetensors"
    return path
