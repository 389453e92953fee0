from __future__ import annotations

import numpy as np
import pytest

from napari_unet.errors import InputError
from napari_unet.training.data import holdout_bands, reviewed_mask, sparse_volume
from napari_unet.training.sampler import PatchSampler

from .conftest import tiny_spec


def test_slices_define_labelled_voxels(pair):
    image, labels = pair
    v = sparse_volume(image, labels, tiny_spec(), slices=[1, 5], slice_axis=2, val_fraction=0.2)
    labelled = v.train | v.val
    assert v.slices == [1, 5]
    assert labelled[:, :, [1, 5]].all() and not labelled[:, :, [0, 2, 3, 4, 6, 7]].any()
    assert not (v.train & v.val).any() and v.val.any()
    # normalised: z-scores
    assert abs(float(v.image.mean())) < 0.5 and 0.5 < float(v.image.std()) < 2


def test_ignore_label_and_other_grid(pair):
    image, labels = pair
    arr = labels.array.copy()
    arr[:16] = 255
    v = sparse_volume(image, labels.with_array(arr), tiny_spec(), ignore_label=255, val_fraction=0)
    assert not v.train[:16].any() and v.train[16:].all()
    shifted = labels.with_array(labels.array)
    shifted.affine = shifted.affine.copy()
    shifted.affine[0, 3] += 5
    with pytest.raises(InputError, match="affine differs"):
        sparse_volume(image, shifted, tiny_spec())
    with pytest.raises(InputError, match="label value 2"):
        sparse_volume(image, labels.with_array(arr.clip(0, 2)), tiny_spec(), ignore_label=255)


def test_holdout_bands_and_reviewed_mask():
    m = reviewed_mask((10, 12, 6), 2, [0, 3])
    val = holdout_bands(m, 2, 0.2, seed=1)
    assert val[:, :, 0].any() and val[:, :, 3].any() and not val[:, :, 1].any()
    assert (val <= m).all()
    with pytest.raises(ValueError, match="outside"):
        reviewed_mask((4, 4, 4), 2, [4])


@pytest.mark.parametrize("dims", [2, 3])
def test_sampler_shapes_and_mask(pair, dims):
    image, labels = pair
    spec = tiny_spec(dims)
    v = sparse_volume(image, labels, spec, slices=[3], slice_axis=2)
    s = PatchSampler(
        [v],
        spatial_dims=dims,
        patch_size=spec.patch_size,
        batch_size=3,
        context_slices=spec.context_slices,
        n_classes=2,
    )
    x, y, m = s.sample()
    assert x.shape == (3, spec.in_channels, *spec.patch_size)
    assert y.shape == m.shape == (3, *spec.patch_size)
    assert m.any()
    if dims == 3:  # only the reviewed slice is labelled inside a 3D patch
        assert int(m.sum(dim=(1, 2)).gt(0).sum(dim=1).max()) == 1
    assert np.isin(y.numpy(), [0, 1]).all()
