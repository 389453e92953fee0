"""Shared type aliases."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: 4×4 voxel-index → world (mm) matrix, RAS+ convention (x to patient Right,
#: y to Anterior, z to Superior), as in nibabel.
Affine = NDArray[np.float64]
#: Voxel sizes in mm, one per array axis.
Spacing = tuple[float, ...]
#: Callback receiving (done, total) counts of a long job.
ProgressFn = Callable[[int, int], None]
#: Returns True when a long job should stop at its next checkpoint.
StopFn = Callable[[], bool]
#: Free-form metadata attached to a volume.
Metadata = dict[str, Any]
