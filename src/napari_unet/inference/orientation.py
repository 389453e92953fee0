"""Scans reoriented to a model's axis codes by flips and transposes only, and back exactly.

A model imported from a MONAI bundle with ``Orientationd(axcodes="RAS")`` (or from an
nnU-Net folder whose reader reorients, like TotalSegmentator's) expects its array axes
to point Right, Anterior, Superior. `ModelSpec.orientation` records that; here a scan
stored in any orientation is brought to it with nibabel's orientation helpers
(``io_orientation`` → ``ornt_transform`` → ``apply_orientation``): a permutation of the
array axes and flips, never a resampling, so every voxel keeps its value and the
prediction comes back onto the scan's own grid voxel for voxel.

Conventions: a `Reorientation` maps a *source* array ``(i, j, k)`` (the scan as stored)
to the *model* array: model axis ``m`` is source axis ``perm[m]``, reversed when
``flip[m]``. The model array's affine is ``affine @ inv_ornt_aff(transform, shape)``,
so both arrays describe the same voxels in the same world (RAS+ mm) coordinates.

`predict_oriented_steps` wraps `napari_unet.inference.predict.predict_steps`: reorient,
predict, bring the label map (and uncertainty) back. With ``spec.orientation`` None it
is `predict_steps` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_unet.io.volume import Volume
from napari_unet.jobs import Job
from napari_unet.models.spec import ModelSpec


@dataclass(frozen=True)
class Reorientation:
    """Flips and a transpose taking a source array to a model's orientation.

    Attributes:
        perm: model axis ``m`` is source axis ``perm[m]``.
        flip: whether model axis ``m`` runs backwards along its source axis.
        shape: the source array's shape ``(i, j, k)``.
        transform: the nibabel orientation transform (``ornt_transform`` output).
    """

    perm: tuple[int, int, int]
    flip: tuple[bool, bool, bool]
    shape: tuple[int, int, int]
    transform: np.ndarray

    @classmethod
    def between(cls, affine: np.ndarray, shape: Sequence[int], codes: str) -> Reorientation:
        """From a source array with this ``affine`` (RAS+) to axis codes ``codes`` ("RAS")."""
        import nibabel.orientations as ornt

        source = ornt.io_orientation(np.asarray(affine, dtype=np.float64))
        transform = ornt.ornt_transform(source, ornt.axcodes2ornt(tuple(codes)))
        # transform[s] = (model axis that source axis s becomes, flip of it)
        perm = [0, 0, 0]
        flip = [False, False, False]
        for s, (m, f) in enumerate(transform):
            perm[int(m)] = s
            flip[int(m)] = bool(f < 0)
        return cls(tuple(perm), tuple(flip), tuple(int(n) for n in shape), transform)  # type: ignore[arg-type]

    @property
    def identity(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flip)

    @property
    def model_shape(self) -> tuple[int, int, int]:
        return tuple(self.shape[p] for p in self.perm)  # type: ignore[return-value]

    def apply(self, array: np.ndarray) -> np.ndarray:
        """Source ``(i, j, k)`` array → model array (a view: flips and transposes only)."""
        out = np.transpose(array, self.perm)
        return out[tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)]

    def invert(self, array: np.ndarray) -> np.ndarray:
        """Model array → source ``(i, j, k)`` array (exact inverse of `apply`, a view)."""
        unflipped = array[tuple(slice(None, None, -1) if f else slice(None) for f in self.flip)]
        return np.transpose(unflipped, np.argsort(self.perm))

    def affine(self, affine: np.ndarray) -> np.ndarray:
        """The model array's voxel → world affine."""
        import nibabel.orientations as ornt

        return np.asarray(affine, dtype=np.float64) @ ornt.inv_ornt_aff(self.transform, self.shape)

    def axis(self, source_axis: int) -> int:
        """The model axis that source axis ``source_axis`` became."""
        return self.perm.index(int(source_axis))

    def indices(self, source_axis: int, indices: Sequence[int]) -> list[int]:
        """Slice indices along ``source_axis`` → the same slices along `axis` of the model."""
        m = self.axis(source_axis)
        n = self.shape[source_axis]
        return sorted(n - 1 - int(i) if self.flip[m] else int(i) for i in indices)

    def volume(self, volume: Volume) -> Volume:
        """The scan in the model's orientation (same voxels and world positions)."""
        return Volume(
            np.ascontiguousarray(self.apply(volume.array)),
            self.affine(volume.affine),
            volume.modality,
            dict(volume.metadata),
            volume.source,
        )


def reorientation_for(spec: ModelSpec, volume: Volume) -> Reorientation | None:
    """The reorientation ``spec`` asks for on ``volume`` (None: none, or already there)."""
    if spec.orientation is None:
        return None
    r = Reorientation.between(volume.affine, volume.shape, spec.orientation)
    return None if r.identity else r


def to_model_orientation(
    volume: Volume,
    spec: ModelSpec,
    *,
    labels: np.ndarray | None = None,
    slice_axis: int | None = None,
    slices: Sequence[int] | None = None,
) -> tuple[Volume, np.ndarray | None, int | None, list[int] | None, Reorientation | None]:
    """Everything a model of ``spec`` is given, in its orientation.

    Args:
        volume: the scan as stored, ``(i, j, k)``.
        spec: the model's spec (``spec.orientation``).
        labels: a label array on the scan's grid (moved along).
        slice_axis: a source axis (e.g. the loop's review axis).
        slices: indices along ``slice_axis``.

    Returns:
        ``(volume, labels, slice_axis, slices, reorientation)`` in the model's
        orientation; the inputs unchanged (and None) when no reorientation is needed.
    """
    r = reorientation_for(spec, volume)
    if r is None:
        return volume, labels, slice_axis, None if slices is None else list(slices), None
    moved_labels = None if labels is None else np.ascontiguousarray(r.apply(labels))
    axis = None if slice_axis is None else r.axis(slice_axis)
    moved_slices = None
    if slices is not None:
        moved_slices = r.indices(slice_axis, slices) if slice_axis is not None else list(slices)
    return r.volume(volume), moved_labels, axis, moved_slices, r


def predict_oriented_steps(
    model: Any,
    spec: ModelSpec | None,
    volume: Volume,
    *,
    slice_axis: int | None = None,
    slices: Sequence[int] | None = None,
    **options: Any,
) -> Job[Any]:
    """`predict_steps` in the model's orientation; the result on ``volume``'s grid.

    Args:
        model: a `LoadedModel` or a ``torch.nn.Module``.
        spec: the ModelSpec (None: ``model.spec``).
        volume: the scan as stored.
        slice_axis, slices: in the scan's own axes (mapped to the model's).
        **options: the other `predict_steps` options.

    Returns:
        The `Prediction`, labels (and uncertainty) on ``volume``'s grid and affine.
    """
    from napari_unet.inference.predict import predict_steps

    spec = spec if spec is not None else model.spec
    moved, _, axis, moved_slices, r = to_model_orientation(
        volume, spec, slice_axis=slice_axis, slices=slices
    )
    result = yield from predict_steps(
        model, spec, moved, slice_axis=axis, slices=moved_slices, **options
    )
    if r is None:
        return result
    labels = volume.with_array(np.ascontiguousarray(r.invert(result.labels.array)))
    labels.metadata.update(result.labels.metadata)
    result.labels = labels
    if result.uncertainty is not None:
        result.uncertainty = volume.with_array(
            np.ascontiguousarray(r.invert(result.uncertainty.array))
        )
    result.info["orientation"] = {"model": spec.orientation, "scan": volume.orientation}
    return result
