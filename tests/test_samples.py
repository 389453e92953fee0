"""The shipped samples: real MR from nilearn's files, a seeded CT-like phantom; and the
files of ``sample_data/`` (scripts/make_sample_data.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from napari_unet.io.reader import load_volume
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


# ---- sample_data/: the files a user can open without the plugin --------------------------

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "sample_data"
SERIES = SAMPLE_DATA / "ct_abdomen_dicom"


def _script():
    """scripts/make_sample_data.py as a module."""
    path = REPO / "scripts" / "make_sample_data.py"
    spec = importlib.util.spec_from_file_location("make_sample_data", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sample_data_files_exist_and_stay_small():
    files = [p for p in SAMPLE_DATA.rglob("*") if p.is_file()]
    names = {p.relative_to(SAMPLE_DATA).as_posix() for p in files}
    assert {"README.md", "ct_abdomen.nii.gz", "ct_abdomen_labels.nii.gz"} <= names
    assert sorted(p.name for p in SERIES.iterdir()) == [f"IM{k:04d}.dcm" for k in range(1, 17)]
    assert sum(p.stat().st_size for p in files) < 5 * 2**20


def test_sample_nifti_is_the_package_phantom_with_the_documented_geometry():
    image = load_volume(SAMPLE_DATA / "ct_abdomen.nii.gz")
    labels = load_volume(SAMPLE_DATA / "ct_abdomen_labels.nii.gz")
    phantom = load_sample("ct_abdomen")
    for vol, ref in ((image, phantom.image), (labels, phantom.labels)):
        assert vol.shape == (192, 144, 48) and vol.orientation == "LPS"
        np.testing.assert_allclose(vol.spacing, (1.6, 1.6, 3.0), rtol=1e-6)
        np.testing.assert_allclose(vol.affine, ref.affine, atol=1e-5)
        np.testing.assert_array_equal(vol.array, ref.array)
    assert image.array.dtype == np.int16 and image.modality == "CT"
    assert labels.array.dtype == np.uint8 and set(np.unique(labels.array)) == {0, 1, 2, 3}


def test_sample_dicom_series_agrees_with_the_nifti_where_it_should():
    nifti = load_volume(SAMPLE_DATA / "ct_abdomen.nii.gz")
    dicom = load_volume(SERIES)
    assert dicom.shape == (96, 72, 16) and dicom.modality == "CT"
    assert dicom.orientation == nifti.orientation == "LPS"
    np.testing.assert_allclose(dicom.spacing, (3.2, 3.2, 3.0), rtol=1e-6)
    # voxel (i, j, k) of the series is voxel (2i, 2j, 16 + k) of the NIfTI: same point, same HU
    np.testing.assert_array_equal(dicom.array, nifti.array[::2, ::2, 16:32])
    ijk = np.array([[0, 0, 0, 1], [95, 71, 15, 1], [10, 20, 5, 1]], float).T
    in_nifti = np.diag([2.0, 2.0, 1.0, 1.0]) @ ijk + np.array([[0], [0], [16], [0]])
    np.testing.assert_allclose(dicom.affine @ ijk, nifti.affine @ in_nifti, atol=1e-4)


def test_sample_dicom_series_is_a_proper_ct_series():
    import pydicom

    files = [pydicom.dcmread(p) for p in sorted(SERIES.iterdir())]
    ct_image_storage = "1.2.840.10008.5.1.4.1.1.2"
    assert {ds.SOPClassUID for ds in files} == {ct_image_storage}
    assert {ds.file_meta.MediaStorageSOPClassUID for ds in files} == {ct_image_storage}
    assert len({ds.SOPInstanceUID for ds in files}) == 16
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        assert len({getattr(ds, key) for ds in files}) == 1
    for k, ds in enumerate(files):
        assert ds.Modality == "CT" and ds.InstanceNumber == k + 1
        assert [float(v) for v in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
        assert [float(v) for v in ds.PixelSpacing] == [3.2, 3.2]
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(-22.5 + 3.0 * k)
        assert (float(ds.RescaleIntercept), float(ds.RescaleSlope)) == (-1024.0, 1.0)
        assert ds.PixelRepresentation == 0 and ds.BitsStored == 12


def test_make_sample_data_regenerates_the_committed_files(tmp_path):
    import pydicom

    _script().make_sample_data(tmp_path)
    for name in ("ct_abdomen.nii.gz", "ct_abdomen_labels.nii.gz"):
        new, old = load_volume(tmp_path / name), load_volume(SAMPLE_DATA / name)
        np.testing.assert_array_equal(new.array, old.array)
        np.testing.assert_array_equal(new.affine, old.affine)
    for old in sorted(SERIES.iterdir()):
        new = tmp_path / "ct_abdomen_dicom" / old.name
        assert pydicom.dcmread(new) == pydicom.dcmread(old), old.name


# ---- test-only variants (the learning benchmark's volumes that never chose the recipe) ---


def _world_centroid(labels, value=1):
    idx = np.argwhere(labels.array == value).mean(axis=0)
    return (labels.affine @ np.r_[idx, 1.0])[:3]


def test_variants_are_deterministic():
    from napari_unet.samples.variants import VARIANT_KEYS, load_variant

    for key in VARIANT_KEYS:
        a, b = load_variant(key), load_variant(key)
        assert a.key == key
        np.testing.assert_array_equal(a.image.array, b.image.array)
        np.testing.assert_array_equal(a.labels.array, b.labels.array)
        np.testing.assert_array_equal(a.image.affine, a.labels.affine)
    with pytest.raises(KeyError, match="unknown variant"):
        load_variant("mr_brain")


def test_mr_variant_has_thick_reoriented_slices_bias_and_noise_on_the_same_anatomy():
    from napari_unet.samples.variants import make_mr_thick_noisy

    base, v = load_sample("mr_brain"), make_mr_thick_noisy()
    assert v.image.shape == (58, 197, 189) and v.image.array.dtype == np.float32
    np.testing.assert_allclose(v.image.spacing, (4.0, 1.0, 1.0))
    assert v.image.through_plane_axis == 0 and v.image.orientation not in ("RAS", "LPS")
    # the affine follows the array: white matter sits where it was, in world mm
    shift = _world_centroid(v.labels) - _world_centroid(base.labels)
    assert np.linalg.norm(shift) < 1.0
    assert 0.8 < v.labels.array.mean() / base.labels.array.mean() < 1.2

    # bias field: white matter's median differs between the volume's octants (the
    # clean template: within 5 %)
    def octant_ratio(s, offset=0.0):
        a, wm = s.image.array - offset, s.labels.array == 1
        medians = []
        for corner in np.ndindex(2, 2, 2):
            box = tuple(
                slice(h * n // 2, (h + 1) * n // 2) for h, n in zip(corner, a.shape, strict=True)
            )
            medians.append(np.median(a[box][wm[box]]))
        return max(medians) / min(medians)

    assert octant_ratio(base) < 1.06 and octant_ratio(v, offset=200.0) > 1.12
    # Rician noise: the background is no longer constant (values above the 200 offset)
    corner = v.image.array[:5, :10, :10]
    assert corner.std() > 1.0 and corner.min() >= 200.0


def test_ct_variant_has_a_small_fluid_class_next_to_the_liver():
    from scipy import ndimage

    from napari_unet.samples.variants import make_ct_abdomen_fluid

    v, base = make_ct_abdomen_fluid(), load_sample("ct_abdomen")
    lab, hu = v.labels.array, v.image.array
    assert v.label_names == ["liver", "kidney", "spleen", "gallbladder"]
    assert set(np.unique(lab)) == {0, 1, 2, 3, 4} and hu.dtype == np.int16
    assert not np.array_equal(hu, base.image.array)  # another seed: other shapes
    gallbladder, liver = lab == 4, lab == 1
    assert 300 < gallbladder.sum() < 0.02 * liver.sum()  # small next to a large class
    assert (ndimage.binary_dilation(gallbladder) & liver).sum() > 100  # touching it
    assert -15 < np.median(hu[gallbladder]) < 25 < 45 < np.median(hu[liver]) < 80
    assert gallbladder.any(axis=(0, 1)).sum() >= 5  # seen on several axial slices
