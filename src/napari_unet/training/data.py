"""Sparse-label training data: what the user reviewed, normalised for a model.

A `SparseVolume` is one scan prepared for training: its normalised intensities, its
label map and two boolean masks that say which voxels may be learned from (``train``)
and which are held out to validate on (``val``). Voxels in neither mask carry no
information: their label values are never read by the loss.

Where labels come from (`sparse_volume`):

* ``slices``: the reviewed slices along ``slice_axis`` — every voxel of those slices
  counts, whatever its value (background included);
* ``ignore_label``: every voxel whose value is not the ignore label;
* both: voxels of the listed slices that are not the ignore label.

Validation hold-out: on every labelled slice a band of rows (a share ``val_fraction`` of
the slice's labelled extent along its first in-plane axis, at a seeded random position)
goes to ``val``. Holding out a band of each slice rather than whole slices keeps every
reviewed level of the anatomy in training, which matters when the user reviewed five.

All arrays are on the model's grid (``spec.target_spacing``, a 2D model's slice axis is
never resampled), layout ``(i, j, k)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from napari_unet.errors import InputError
from napari_unet.io.volume import Volume
from napari_unet.models.spec import MAX_LABELS, ModelSpec


@dataclass
class SparseVolume:
    """One scan with sparse labels, ready for sampling.

    Attributes:
        image: normalised intensities, float32 ``(i, j, k)`` on the model grid.
        labels: label map, uint8/uint16 ``(i, j, k)``; 0 background, v = ``labels[v-1]``.
        train: voxels to learn from, bool ``(i, j, k)``.
        val: held-out voxels to validate on, bool ``(i, j, k)`` (disjoint from train).
        slice_axis: the array axis reviewed slices lie across.
        slices: indices of the reviewed slices along ``slice_axis`` (those with any
            labelled voxel), sorted.
        name: where it came from (file name or "sample:…"), for the lineage.
        grid_shape: shape of the original scan (before any resampling).
    """

    image: np.ndarray
    labels: np.ndarray
    train: np.ndarray
    val: np.ndarray
    slice_axis: int
    slices: list[int]
    name: str = ""
    grid_shape: tuple[int, ...] = field(default_factory=tuple)

    @property
    def n_train(self) -> int:
        return int(self.train.sum())

    @property
    def n_val(self) -> int:
        return int(self.val.sum())

    def describe(self) -> dict:
        """Plain-JSON summary for the lineage (name, axis, slices, voxel counts)."""
        return {
            "name": self.name,
            "shape": list(self.grid_shape or self.image.shape),
            "slice_axis": self.slice_axis,
            "slices": list(self.slices),
            "train_voxels": self.n_train,
            "val_voxels": self.n_val,
        }


def check_same_grid(image: Volume, labels: Volume, *, what: str = "labels") -> None:
    """Raise InputError unless ``labels`` lies on the grid of ``image`` (shape and affine).

    Args:
        image: the scan.
        labels: a label volume.
        what: how to call ``labels`` in the message.

    Raises:
        InputError: one line naming both files and the difference.
    """
    src = labels.source or what
    img = image.source or "the image"
    if labels.shape != image.shape:
        raise InputError(
            f"{src}: {what} shape {'x'.join(map(str, labels.shape))} differs from "
            f"{img} shape {'x'.join(map(str, image.shape))} (labels must be on the image grid)"
        )
    if not np.allclose(labels.affine, image.affine, atol=1e-3, rtol=1e-5):
        worst = float(np.abs(labels.affine - image.affine).max())
        raise InputError(
            f"{src}: {what} affine differs from {img} (by up to {worst:.4g} mm): "
            "labels must be on the image grid"
        )


#: Voxels examined at a time by `check_training_pair` (keeps its temporaries small).
_CHUNK_VOXELS = 1 << 22


@dataclass
class PairCheck:
    """What `check_training_pair` found in a label map.

    Attributes:
        labelled: voxels that count for training (reviewed, not the ignore label).
        foreground: labelled voxels whose value is a class (> 0).
        top_label: the largest label value of any voxel but the ignore label (the
            classes a new model needs).
        warnings: one-line messages for the user (e.g. no foreground at all).
    """

    labelled: int
    foreground: int
    top_label: int
    warnings: list[str] = field(default_factory=list)


def check_training_pair(
    image: Volume,
    labels: Volume,
    *,
    n_classes: int | None = None,
    ignore_label: int | None = None,
    slices: Sequence[int] | None = None,
    slice_axis: int | None = None,
    what: str = "labels",
) -> PairCheck:
    """Refuse a scan and label map that cannot be trained on, before anything is allocated.

    Cheap checks first, so that a hostile file fails at once: the grid; then the label
    values, read slab by slab without any copy of the map (an integer map's min and max
    first: a value of 2**31-1 is refused before a single class array exists); then the
    labelled voxels; then the image's intensities. The CLI, the panel and the
    simulation call this before `sparse_volume`.

    Args:
        image: the scan, array ``(i, j, k)``.
        labels: label map on the same grid (integer values, 0 = background).
        n_classes: foreground classes of the model; None = a new model, which may have
            up to ``MAX_LABELS``.
        ignore_label: value meaning "not labelled"; None = none.
        slices: reviewed slice indices along ``slice_axis``; None = every slice.
        slice_axis: axis of ``slices`` (default: the scan's through-plane axis).
        what: how to call ``labels`` in messages ("labels", "truth").

    Returns:
        PairCheck; its ``warnings`` say, e.g., that there is no foreground at all (not an
        error: reviewed slices that are all background are legitimate).

    Raises:
        InputError: another grid; NaN, Inf, fractional or negative label values; a
            label value beyond the model's classes; no labelled voxel; NaN or Inf
            image voxels. One line naming the file.
    """
    from napari_unet.inference.checks import check_finite_image

    check_same_grid(image, labels, what=what)
    src = labels.source or what
    limit = MAX_LABELS if n_classes is None else int(n_classes)
    lab = np.asarray(labels.array)
    if lab.dtype.kind not in "biuf":
        raise InputError(f"{src}: {what} hold {lab.dtype} values; label values are integers")
    if lab.dtype.kind in "iu" and lab.size:
        _check_label_range(int(lab.min()), int(lab.max()), limit, n_classes, ignore_label, src)
    axis = image.through_plane_axis if slice_axis is None else int(slice_axis)
    keep = None
    if slices is not None:
        keep = reviewed_mask(lab.shape, axis, slices) if len(slices) else None
        if keep is None:
            raise InputError("no reviewed slices given: nothing to learn from")
    labelled, foreground, top = _count_labels(lab, keep, ignore_label, src, what)
    if labelled == 0:
        where = " in the reviewed slices" if slices is not None else ""
        why = "" if ignore_label is None else f": every voxel is the ignore label {ignore_label}"
        raise InputError(f"{src}: no labelled voxels{where}{why}; nothing to learn from")
    _check_label_range(0, top, limit, n_classes, None, src)
    check_finite_image(image)
    warnings = []
    if foreground == 0:
        warnings.append(
            f"{src}: no foreground in the {labelled} labelled voxels (all background); "
            "the model can only learn what background looks like"
        )
    return PairCheck(labelled=labelled, foreground=foreground, top_label=top, warnings=warnings)


def _check_label_range(
    low: int, high: int, limit: int, n_classes: int | None, ignore: int | None, src: str
) -> None:
    """Refuse negative labels, and a top label beyond ``limit`` unless it is ``ignore``."""
    if low < 0 and low != ignore:
        raise InputError(f"{src}: negative label value {low}; labels are 0 (background) or more")
    if high <= limit or high == ignore:
        return
    if n_classes is None:
        raise InputError(
            f"{src}: label value {high}, but a model has at most {MAX_LABELS} classes "
            f"(label values 0..{MAX_LABELS}; is this a label map?)"
        )
    raise InputError(f"{src}: label value {high} but the model has {n_classes} classes")


def _count_labels(
    lab: np.ndarray, keep: np.ndarray | None, ignore: int | None, src: str, what: str
) -> tuple[int, int, int]:
    """(labelled voxels, foreground voxels, top label) of a label map, slab by slab.

    ``top`` is the largest value of any voxel that is not the ignore label (it sets the
    classes a new model gets); the counts are over the reviewed voxels (``keep``).

    Raises:
        InputError: NaN/Inf, fractional or negative values (float maps).
    """
    labelled = foreground = top = 0
    bad_finite = bad_fraction = 0
    rows = max(1, _CHUNK_VOXELS // max(1, lab[0].size)) if lab.size else 1
    for i in range(0, lab.shape[0], rows):
        slab = lab[i : i + rows]
        if slab.dtype.kind == "f":
            finite = np.isfinite(slab)
            bad_finite += int(slab.size - np.count_nonzero(finite))
            bad_fraction += int(np.count_nonzero(finite & (np.mod(slab, 1) != 0)))
            if bad_finite or bad_fraction:
                continue  # only count the bad values from here on
        counted = np.ones(slab.shape, dtype=bool) if ignore is None else slab != ignore
        values = slab[counted]
        if values.size:
            low = values.min()
            if low < 0:
                raise InputError(f"{src}: negative label value {low:g}; labels are 0 or more")
            top = max(top, int(values.max()))
        if keep is not None:
            counted &= keep[i : i + rows]
            values = slab[counted]
        labelled += int(values.size)
        foreground += int(np.count_nonzero(values))
    if bad_finite:
        raise InputError(
            f"{src}: {bad_finite} voxels are NaN or Inf; label values must be integers "
            "(napari-unet does not guess them: set unlabelled voxels to an --ignore-label)"
        )
    if bad_fraction:
        raise InputError(
            f"{src}: {bad_fraction} voxels hold fractional values; label values must be "
            f"integers (is this {what} file a probability map or an image?)"
        )
    return labelled, foreground, top


def reviewed_mask(shape: Sequence[int], axis: int, slices: Sequence[int]) -> np.ndarray:
    """Boolean mask of whole slices ``slices`` along ``axis`` of a ``shape`` volume.

    Raises:
        ValueError: an axis or slice index out of range (names it).
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"slice axis must be 0, 1 or 2, got {axis!r}")
    n = int(shape[axis])
    bad = [int(s) for s in slices if not 0 <= int(s) < n]
    if bad:
        raise ValueError(f"slices {bad[:5]} outside 0..{n - 1} along axis {axis}")
    keep = np.zeros(n, dtype=bool)
    keep[[int(s) for s in slices]] = True
    mask = np.zeros(tuple(int(s) for s in shape), dtype=bool)
    mask[tuple(keep if a == axis else slice(None) for a in range(3))] = True
    return mask


def sparse_volume(
    image: Volume,
    labels: Volume,
    spec: ModelSpec,
    *,
    slices: Sequence[int] | None = None,
    slice_axis: int | None = None,
    ignore_label: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    name: str | None = None,
) -> SparseVolume:
    """Prepare a scan and its (partial) labels for training a model of ``spec``.

    Args:
        image: the scan, array ``(i, j, k)`` (CT in HU).
        labels: label map on the same grid (integer values 0..len(spec.labels)).
        spec: the model's spec (normalisation, target spacing, slice axis).
        slices: reviewed slice indices along ``slice_axis``; None = no slice restriction.
        slice_axis: axis of ``slices``; None = ``spec.slice_axis``, else the scan's
            through-plane axis.
        ignore_label: label value that means "not labelled"; None = none.
        val_fraction: share of every labelled slice held out for validation (0 = none).
        seed: seeds the position of the held-out bands.
        name: for the lineage; default the label file's source.

    Returns:
        SparseVolume on the model's grid.

    Raises:
        InputError: labels on another grid; no labelled voxel at all; label values
            beyond the spec's classes.
        ValueError: bad ``slices``, ``slice_axis`` or ``val_fraction``.
    """
    from napari_unet.inference.preprocess import (
        apply_normalization,
        model_grid_shape,
        normalization_params,
        resample,
    )

    check_same_grid(image, labels)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    axis = slice_axis if slice_axis is not None else spec.slice_axis
    axis = image.through_plane_axis if axis is None else int(axis)
    from napari_unet.inference.orientation import to_model_orientation

    # a model that expects another orientation (e.g. RAS) trains on the scan reoriented
    # by flips and transposes, as it predicts (`inference.orientation`)
    image, moved_labels, axis, slices, _ = to_model_orientation(
        image, spec, labels=np.asarray(labels.array), slice_axis=axis, slices=slices
    )
    labels = image.with_array(moved_labels, source=labels.source)
    lab, labelled = _labelled_voxels(np.asarray(labels.array), spec, axis, slices,
                                     ignore_label, labels.source or "labels")  # fmt: skip

    keep = (axis,) if spec.spatial_dims == 2 else ()
    grid = model_grid_shape(image.shape, image.spacing, spec.target_spacing, keep_axes=keep)
    params = normalization_params(image.array, spec.normalization)
    arr = image.array if grid == image.shape else resample(image.array, grid)
    norm = apply_normalization(np.ascontiguousarray(arr), params).numpy()
    if grid != image.shape:
        lab = resample(lab, grid, labels=True)
        labelled = resample(labelled.astype(np.uint8), grid, labels=True).astype(bool)

    val = holdout_bands(labelled, axis, val_fraction, seed=seed)
    train = labelled & ~val
    reviewed = np.flatnonzero(labelled.any(axis=tuple(a for a in range(3) if a != axis)))
    return SparseVolume(
        image=np.ascontiguousarray(norm, dtype=np.float32),
        labels=np.ascontiguousarray(lab),
        train=train,
        val=val,
        slice_axis=axis,
        slices=[int(s) for s in reviewed],
        name=name or labels.source or image.source or "",
        grid_shape=image.shape,
    )


def holdout_bands(labelled: np.ndarray, axis: int, fraction: float, *, seed: int = 0) -> np.ndarray:
    """Validation mask: a band of rows from every labelled slice along ``axis``.

    On each slice, the band spans ``fraction`` of the labelled extent along the slice's
    first in-plane axis (at least one row, at most all but one), at a seeded position.

    Args:
        labelled: bool ``(i, j, k)``.
        axis: the slice axis.
        fraction: share to hold out, in [0, 1).
        seed: random seed of the band positions.

    Returns:
        bool ``(i, j, k)``, a subset of ``labelled``.
    """
    val = np.zeros_like(labelled, dtype=bool)
    if fraction <= 0:
        return val
    rng = np.random.default_rng(seed)
    lab_t = np.moveaxis(labelled, axis, 0)
    val_t = np.moveaxis(val, axis, 0)
    for s in np.flatnonzero(lab_t.any(axis=(1, 2))):
        rows = np.flatnonzero(lab_t[s].any(axis=1))
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        extent = hi - lo
        if extent < 2:
            continue
        width = int(np.clip(round(fraction * extent), 1, extent - 1))
        start = lo + int(rng.integers(0, extent - width + 1))
        val_t[s, start : start + width] = lab_t[s, start : start + width]
    return val


def _labelled_voxels(lab, spec, axis: int, slices, ignore_label, source: str):
    """The labels as a compact uint8/uint16 array (0 outside the labelled voxels) and the
    boolean mask of labelled voxels: the reviewed ``slices`` (all when None), less the
    ``ignore_label``; refused with one line naming ``source`` when nothing is labelled or
    a value is not one of the spec's classes."""
    if lab.dtype.kind == "f" and not np.all(np.mod(lab, 1) == 0):
        raise InputError(f"{source}: label values must be integers")
    labelled = np.ones(lab.shape, dtype=bool)
    if slices is not None:
        if len(slices) == 0:
            raise InputError("no reviewed slices given: nothing to learn from")
        labelled &= reviewed_mask(lab.shape, axis, slices)
    if ignore_label is not None:
        labelled &= lab != ignore_label
    n_classes = spec.out_channels
    values = lab[labelled]
    if values.size == 0:
        raise InputError(f"{source}: no labelled voxel to learn from")
    top = int(values.max())
    if top >= n_classes or int(values.min()) < 0:
        raise InputError(
            f"{source}: label value {top} but the model has only "
            f"{n_classes - 1} classes ({', '.join(spec.labels)})"
        )
    lab_dtype = np.uint8 if n_classes <= 256 else np.uint16
    lab = np.where(labelled, lab, 0).astype(lab_dtype)
    return lab, labelled
