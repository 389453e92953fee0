"""Scoring model versions: Dice on replayed (previously reviewed) voxels and the drift guard.

A fine-tuned child is scored, with its parent, on the voxels the user reviewed before
this run (`replay_dice`); `check_drift` flags a child that lost more than
`DRIFT_TOLERANCE` Dice there. Storing versions is `training.versions`; the Dice itself
is `evaluation.metrics.dice_per_class`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_unet.evaluation.metrics import dice_per_class, mean_dice
from napari_unet.models.spec import ModelSpec
from napari_unet.training.data import SparseVolume
from napari_unet.typing import Device

if TYPE_CHECKING:  # torch loads when a model is scored, not when a DriftCheck is read
    import torch

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
        """Plain JSON (the ``drift`` entry of a version's lineage)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftCheck:
        """Read back `to_dict` (unknown keys are ignored, missing ones are None)."""
        return cls(
            parent_dice=data.get("parent_dice"),
            child_dice=data.get("child_dice"),
            tolerance=float(data.get("tolerance", DRIFT_TOLERANCE)),
            flagged=bool(data.get("flagged")),
            voxels=int(data.get("voxels") or 0),
        )


def replay_dice(
    net: torch.nn.Module,
    spec: ModelSpec,
    volumes: Sequence[SparseVolume],
    *,
    device: Device | str = Device.AUTO,
) -> tuple[list[float | None], int]:
    """Dice per foreground class of a network on all labelled voxels of ``volumes``.

    Predicts only the reviewed slices (`inference.predict_volume` with ``slices``) on
    the model grid, from the volumes' normalised images.

    Args:
        net: the network to score.
        spec: its spec.
        volumes: sparse-label data (`training.data.sparse_volume`), arrays ``(i, j, k)``.
        device: where to predict.

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
    device: Device | str = Device.AUTO,
) -> DriftCheck:
    """Score parent and child on previously reviewed voxels; flag a child that got worse.

    Args:
        parent: the parent network.
        child: the new network.
        spec: their spec.
        replay: previously reviewed data.
        tolerance: Dice the child may lose before being flagged.
        device: where to predict.

    Returns:
        The DriftCheck (mean foreground Dice of each, and the flag).
    """
    p_dice, n = replay_dice(parent, spec, replay, device=device)
    c_dice, _ = replay_dice(child, spec, replay, device=device)
    pm, cm = mean_dice(p_dice), mean_dice(c_dice)
    flagged = pm is not None and cm is not None and cm < pm - tolerance
    return DriftCheck(pm, cm, tolerance, bool(flagged), n)
