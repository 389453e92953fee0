"""Re-exports of `training.scoring` and `training.versions` (the module was split in two).

TEMPORARY: cli/_train_cmds.py and _widgets/ import save_version from here; removed when
they import it from `napari_unet.training.versions` (or `napari_unet.training`).
"""

from __future__ import annotations

from napari_unet.training.scoring import (
    DRIFT_TOLERANCE,
    DriftCheck,
    check_drift,
    replay_dice,
)
from napari_unet.training.versions import lineage_for, save_version, version_history

__all__ = [
    "DRIFT_TOLERANCE",
    "DriftCheck",
    "check_drift",
    "lineage_for",
    "replay_dice",
    "save_version",
    "version_history",
]
