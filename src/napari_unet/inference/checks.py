"""Checks on a scan before it is segmented or learned from.

A NaN or Inf voxel has no intensity: normalisation statistics, the network and the loss
would all turn it (and, through percentiles and convolutions, its neighbours) into
garbage. napari-unet does not guess a value for it; the user decides (fill with the
background value, crop, or fix the export that produced it).

numpy only; no torch.
"""

from __future__ import annotations

import numpy as np

from napari_unet.errors import InputError
from napari_unet.io.volume import Volume

#: Voxels examined at a time: keeps the temporary mask small on big scans.
_CHUNK_VOXELS = 1 << 22


def count_nonfinite(array: np.ndarray) -> int:
    """Number of NaN or ±Inf values in ``array`` (0 for integer arrays).

    Works slab by slab along the first axis, so the temporary mask stays a few MB
    whatever the size of the scan.
    """
    array = np.asarray(array)
    if array.dtype.kind not in "fc" or array.size == 0:
        return 0
    if array.ndim == 0:
        return int(not np.isfinite(array))
    rows = max(1, _CHUNK_VOXELS // max(1, array[0].size))
    return sum(
        int(array[i : i + rows].size - np.count_nonzero(np.isfinite(array[i : i + rows])))
        for i in range(0, array.shape[0], rows)
    )


def check_finite_image(volume: Volume, *, what: str | None = None) -> None:
    """Raise InputError if any voxel of ``volume`` is NaN or Inf.

    Args:
        volume: the scan, array ``(i, j, k)``.
        what: how to name it in the message; default its source file.

    Raises:
        InputError: "FILE: N voxels are NaN or Inf; napari-unet does not guess values
            for them" (with a remedy).
    """
    bad = count_nonfinite(volume.array)
    if not bad:
        return
    name = what or volume.source or "the image"
    count = f"all {bad}" if bad == volume.array.size else f"{bad} of {volume.array.size}"
    raise InputError(
        f"{name}: {count} voxels are NaN or Inf; napari-unet does not guess values for them "
        "(replace them, e.g. with the background value, and try again)"
    )
