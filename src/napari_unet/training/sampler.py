"""Random training patches from sparse labels, and the validation inputs.

`PatchSampler` draws batches of patches centred (with jitter) on labelled training
voxels of one or several `SparseVolume`s:

* 2D models: a patch of one reviewed slice along the volume's slice axis, with
  ``context_slices`` neighbours on each side as channels (`inference.slice_stack`
  order: lowest slice index first, edges repeated) — layout ``(N, C, H, W)`` with
  ``H, W`` the two in-plane array axes in increasing order;
* 3D models: a ``(N, 1, P0, P1, P2)`` patch around a labelled voxel; the loss mask
  then covers only the reviewed voxels inside it.

A share ``fg_fraction`` of the patches is centred on a foreground voxel of a class
drawn uniformly among the classes present (small structures get seen), the rest on any
labelled voxel. Patches reaching past the scan are padded with zeros (after
normalisation, as in inference) and with "unlabelled" in the mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from napari_unet.training.data import SparseVolume

#: Candidate centres kept per volume and class (a random subset beyond this).
_MAX_CANDIDATES = 200_000


class PatchSampler:
    """Draw training batches from sparse labels.

    Args:
        volumes: the training data (one or several scans).
        spatial_dims: 2 or 3.
        patch_size: patch in voxels (2 values for 2D, 3 for 3D; model axis order).
        batch_size: patches per batch.
        context_slices: neighbours each side as channels (2D only).
        n_classes: output channels of the model (background included).
        fg_fraction: share of patches centred on foreground, in [0, 1].
        seed: random seed.

    Raises:
        ValueError: no volume with training voxels; bad sizes.
    """

    def __init__(
        self,
        volumes: Sequence[SparseVolume],
        *,
        spatial_dims: int,
        patch_size: Sequence[int],
        batch_size: int,
        context_slices: int = 0,
        n_classes: int = 2,
        fg_fraction: float = 0.5,
        seed: int = 0,
    ) -> None:
        if len(patch_size) != spatial_dims:
            raise ValueError(f"patch_size must have {spatial_dims} values, got {patch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        self.volumes = [v for v in volumes if v.n_train > 0]
        if not self.volumes:
            raise ValueError("no labelled training voxel in the given volumes")
        self.dims = spatial_dims
        self.patch = tuple(int(p) for p in patch_size)
        self.batch_size = int(batch_size)
        self.context = int(context_slices)
        self.fg_fraction = float(fg_fraction)
        self.rng = np.random.default_rng(seed)
        self.n_classes = n_classes
        self._weights = np.array([v.n_train for v in self.volumes], dtype=np.float64)
        self._weights /= self._weights.sum()
        self._cands = [self._candidates(v) for v in self.volumes]

    def _candidates(self, vol: SparseVolume) -> dict[int, np.ndarray]:
        """Flat indices of training voxels: key -1 = any, c ≥ 1 = that class."""
        flat_train = vol.train.reshape(-1)
        flat_lab = vol.labels.reshape(-1)
        idx = np.flatnonzero(flat_train)
        out = {-1: self._cap(idx)}
        lab = flat_lab[idx]
        for c in range(1, self.n_classes):
            sel = idx[lab == c]
            if sel.size:
                out[c] = self._cap(sel)
        return out

    def _cap(self, idx: np.ndarray) -> np.ndarray:
        if idx.size > _MAX_CANDIDATES:
            idx = np.sort(self.rng.choice(idx, _MAX_CANDIDATES, replace=False))
        return idx

    def sample(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch.

        Returns:
            ``(x, y, mask)``: x float32 ``(N, C, *patch)``; y int64 ``(N, *patch)``
            labels; mask bool ``(N, *patch)``, True where the label counts.
        """
        xs, ys, ms = [], [], []
        for _ in range(self.batch_size):
            v = int(self.rng.choice(len(self.volumes), p=self._weights))
            vol, cands = self.volumes[v], self._cands[v]
            fg = [c for c in cands if c > 0]
            key = -1
            if fg and self.rng.random() < self.fg_fraction:
                key = fg[int(self.rng.integers(len(fg)))]
            pool = cands[key]
            centre = np.unravel_index(int(pool[self.rng.integers(pool.size)]), vol.labels.shape)
            x, y, m = self._crop(vol, tuple(int(c) for c in centre))
            xs.append(x)
            ys.append(y)
            ms.append(m)
        return (
            torch.from_numpy(np.stack(xs)),
            torch.from_numpy(np.stack(ys).astype(np.int64)),
            torch.from_numpy(np.stack(ms)),
        )

    def _crop(self, vol: SparseVolume, centre: tuple[int, ...]):
        from napari_unet.inference.preprocess import slice_stack

        if self.dims == 2:
            ax = vol.slice_axis
            s = centre[ax]
            inplane = [c for a, c in enumerate(centre) if a != ax]
            img = slice_stack(vol.image, s, self.context, ax)  # (C, H, W)
            lab = np.take(vol.labels, s, axis=ax)
            msk = np.take(vol.train, s, axis=ax)
        else:
            inplane = list(centre)
            img, lab, msk = vol.image[None], vol.labels, vol.train
        box = []
        for c, p, n in zip(inplane, self.patch, lab.shape, strict=True):
            start = c - int(self.rng.integers(p // 4, p - p // 4)) if p > 3 else c - p // 2
            start = int(np.clip(start, min(0, n - p), max(0, n - p)))
            box.append((start, start + p))
        return (
            _window(img, box, lead=1, fill=0.0),
            _window(lab, box, lead=0, fill=0),
            _window(msk, box, lead=0, fill=False),
        )


def _window(a: np.ndarray, box: list[tuple[int, int]], *, lead: int, fill) -> np.ndarray:
    """``a[..., box]`` with out-of-range parts filled (``lead`` leading axes kept)."""
    spatial = a.shape[lead:]
    src, dst = [], []
    for (lo, hi), n in zip(box, spatial, strict=True):
        s0, s1 = max(lo, 0), min(hi, n)
        src.append(slice(s0, s1))
        dst.append(slice(s0 - lo, s1 - lo))
    out = np.full(a.shape[:lead] + tuple(hi - lo for lo, hi in box), fill, dtype=a.dtype)
    out[(slice(None),) * lead + tuple(dst)] = a[(slice(None),) * lead + tuple(src)]
    return out


def validation_inputs(
    volumes: Sequence[SparseVolume],
    *,
    spatial_dims: int,
    patch_size: Sequence[int],
    context_slices: int,
    divisor: int,
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Fixed inputs covering the held-out voxels, for validation during training.

    2D: every slice holding validation voxels, whole, padded with zeros to a multiple
    of ``divisor`` (one item per slice). 3D: per such slice, one patch of ``patch_size``
    centred on the slice's validation voxels (voxels outside it are not scored).

    Returns:
        A list of ``(x (1, C, *spatial), y (1, *spatial) int64, mask (1, *spatial) bool)``.
    """
    items = []
    for vol in volumes:
        if vol.n_val == 0:
            continue
        ax = vol.slice_axis
        others = tuple(a for a in range(3) if a != ax)
        for s in np.flatnonzero(vol.val.any(axis=others)):
            if spatial_dims == 2:
                from napari_unet.inference.preprocess import slice_stack

                img = slice_stack(vol.image, int(s), context_slices, ax)
                lab = np.take(vol.labels, int(s), axis=ax)
                msk = np.take(vol.val, int(s), axis=ax)
                box = [(0, -(-n // divisor) * divisor) for n in lab.shape]
            else:
                img, lab, msk = vol.image[None], vol.labels, vol.val
                plane = np.take(vol.val, int(s), axis=ax)
                coords = np.argwhere(plane).mean(axis=0)
                centre = list(coords.round().astype(int))
                centre.insert(ax, int(s))
                box = []
                for c, p, n in zip(centre, patch_size, lab.shape, strict=True):
                    start = int(np.clip(c - p // 2, min(0, n - p), max(0, n - p)))
                    box.append((start, start + p))
            items.append(
                (
                    torch.from_numpy(_window(img, box, lead=1, fill=0.0))[None],
                    torch.from_numpy(_window(lab, box, lead=0, fill=0).astype(np.int64))[None],
                    torch.from_numpy(_window(msk, box, lead=0, fill=False))[None],
                )
            )
    return items
