"""Volumes and their files: NIfTI and DICOM readers, the NIfTI writer. No torch, no Qt."""

from __future__ import annotations

from napari_unet.io.volume import Volume

__all__ = ["Volume"]
