"""The shipped samples: real MR from nilearn's files, a seeded CT-like phantom."""

from __future__ import annotations

import numpy as np

from napari_unet.samples import load_sample


def test_mr_sample_is_the_mni_template_with_a_plausible_white_matter_mask():
    sample = load_sample("mr_brain")
    assert sample.image.shape == (197, 233, 189) == sample.labels.shape
    assert sample.image.modality == "MR" and sample.image.orientation == "RAS"
    wm_fraction = sample.labels.array.mean()
    assert 0.04 < wm_fraction < 0.12  # white matter ≈ 0.5 l of a 8.7 l box
    # white matter is bright on T1: its median beats the rest of the brain's
    wm = sample.image.array[sample.labels.array == 1]
    assert np.median(wm) > np.percentile(sample.image.array, 90)


def test_ct_sample_is_reproducible_hu_with_three_organs():
    a, b = load_sample("ct_abdomen"), load_sample("ct_abdomen")
    np.testing.assert_array_equal(a.image.array, b.image.array)
    assert a.image.orientation == "LPS" and a.image.spacing == (1.6, 1.6, 3.0)
    assert a.image.array.min() >= -1024 and -1024 <= np.median(a.image.array) < 100
    assert set(np.unique(a.labels.array)) == {0, 1, 2, 3}
    liver_hu = np.median(a.image.array[a.labels.array == 1])
    assert 40 < liver_hu < 80
