"""The correct-and-fine-tune loop, GUI-free: `Loop` (state, events, jobs) and `Edit`.

Imports no Qt and no napari; torch loads only when a model is created, opened or run.
"""

from __future__ import annotations

from napari_unet.loop.core import Loop
from napari_unet.loop.merge import Edit, merge_unreviewed
from napari_unet.loop.steps import TrainedVersion

__all__ = ["Edit", "Loop", "TrainedVersion", "merge_unreviewed"]
