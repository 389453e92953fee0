"""Test-only variants of the samples: volumes that never chose the training recipe.

The training recipe (`training.recipe`, `training.config`) was tuned on ``mr_brain`` and
``ct_abdomen``; a learning figure on those two alone says little about other scans. These
variants are generated deterministically (no download) to test it:

* ``mr_brain_thick_noisy``: the MR sample as a routine clinical scan would give it —
  4 mm thick coronal slices (four 1 mm slices averaged: partial volume; the truth is
  white matter in at least half of the thick voxel), a smooth multiplicative bias field
  (±25 %), Rician noise (σ = 4 % of the bright-tissue intensity), another array
  orientation (slices first, two axes flipped; the affine follows, so the anatomy stays
  where it was in world coordinates) and another scanner's intensity units.
* ``ct_abdomen_fluid``: the CT phantom from another seed (other organ shapes and noise)
  with a gallbladder: a small fluid-filled class (bile, about 5 HU) in the liver's
  fossa, next to the large liver (about 60 HU) — about 1 % of the liver's voxels.

`load_variant` loads one by key; `VARIANT_KEYS` lists them.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from scipy import ndimage

from napari_unet.io.volume import Volume
from napari_unet.samples import Sample

VARIANT_KEYS = ("mr_brain_thick_noisy", "ct_abdomen_fluid")


def load_variant(key: str) -> Sample:
    """A test-only variant by key (see `VARIANT_KEYS`)."""
    if key == "mr_brain_thick_noisy":
        return make_mr_thick_noisy()
    if key == "ct_abdomen_fluid":
        return make_ct_abdomen_fluid()
    raise KeyError(f"unknown variant {key!r}; choose from {VARIANT_KEYS}")


def _thick(array: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Means of ``factor`` consecutive slices along ``axis`` (the rest cropped)."""
    n = array.shape[axis] // factor * factor
    a = np.moveaxis(np.take(array, np.arange(n), axis=axis), axis, 0)
    a = a.reshape(n // factor, factor, *a.shape[1:]).mean(axis=1, dtype=np.float64)
    return np.moveaxis(a, 0, axis)


def _bias_field(rng: np.random.Generator, shape, amplitude: float) -> np.ndarray:
    """A smooth multiplicative field ``exp(b)``, ``|b| ≤ amplitude``: a random 4×4×4
    grid interpolated (cubic) to ``shape``."""
    coarse = rng.standard_normal((4, 4, 4))
    b = ndimage.zoom(coarse, [s / 4 for s in shape], order=3)[tuple(slice(0, s) for s in shape)]
    b = b * (amplitude / np.abs(b).max())
    return np.exp(b).astype(np.float32)


def make_mr_thick_noisy(
    seed: int = 0,
    *,
    thickness: int = 4,
    noise: float = 0.04,
    bias: float = 0.25,
) -> Sample:
    """The MR sample with thick coronal slices, bias field, Rician noise, reoriented.

    Args:
        seed: seeds the bias field and the noise.
        thickness: 1 mm slices averaged into one (along the anterior–posterior axis).
        noise: Rician σ as a share of the 99th percentile of the intensities.
        bias: largest |log| of the multiplicative bias field.

    Returns:
        A Sample ("white matter", label 1); the image float32, the labels uint8, on a
        grid with spacing ``(thickness, 1, 1)`` mm whose first axis is the slice axis.
    """
    from napari_unet.samples.mni import load_mr_brain

    rng = np.random.default_rng(seed)
    base = load_mr_brain()
    axis = 1  # RAS array: j runs posterior → anterior; coronal slices
    image = _thick(base.image.array.astype(np.float32), axis, thickness)
    truth = _thick(base.labels.array.astype(np.float32), axis, thickness) >= 0.5
    # thick voxel j' covers 1 mm voxels thickness*j' … thickness*j' + thickness - 1
    scale = np.eye(4)
    scale[axis, axis] = thickness
    scale[axis, 3] = (thickness - 1) / 2
    affine = base.image.affine @ scale
    image = image * _bias_field(rng, image.shape, bias)
    sigma = noise * float(np.percentile(image, 99))
    n1, n2 = (rng.normal(0.0, sigma, image.shape) for _ in range(2))
    image = np.sqrt((image + n1) ** 2 + n2**2)
    image = image * 3.1 + 200.0  # another scanner's units
    # slices first, the other two axes flipped: input axis a goes to ORNT[a][0]
    ornt = np.array([[1, -1], [0, 1], [2, -1]])
    image = nib.orientations.apply_orientation(image, ornt)
    truth = nib.orientations.apply_orientation(truth, ornt)
    affine = affine @ nib.orientations.inv_ornt_aff(ornt, _thick_shape(base, axis, thickness))
    meta = {
        "description": f"MNI152 T1, {thickness} mm coronal slices, bias ±{bias:.0%}, "
        f"Rician noise {noise:.0%}, reoriented (napari-unet test variant, seed {seed})"
    }
    return Sample(
        key="mr_brain_thick_noisy",
        title="MR brain, thick noisy slices with bias field (test only)",
        image=Volume(np.ascontiguousarray(image, dtype=np.float32), affine, "MR", dict(meta),
                     source="sample:mr_brain_thick_noisy"),
        labels=Volume(np.ascontiguousarray(truth, dtype=np.uint8), affine, "MR", dict(meta),
                      source="sample:mr_brain_thick_noisy_wm"),
        label_names=list(base.label_names),
        label_colors=list(base.label_colors),
    )  # fmt: skip


def _thick_shape(base: Sample, axis: int, thickness: int) -> tuple[int, ...]:
    shape = list(base.image.shape)
    shape[axis] //= thickness
    return tuple(shape)


#: The gallbladder's HU (bile) and its label's name and colour.
BILE_HU = 5.0
GALLBLADDER = ("gallbladder", "#3fa34d")


def make_ct_abdomen_fluid(seed: int = 23, *, radii_mm=(14.0, 11.0, 20.0)) -> Sample:
    """The CT phantom from another seed with a gallbladder in the liver's fossa.

    The gallbladder is an ellipsoid (``radii_mm``) centred on the liver voxel nearest to
    the fossa (30 mm medial, 30 mm anterior and 40 mm inferior of the liver's centre)
    and kept inside the liver's extent; its voxels change from liver (about 62 HU) to
    bile (`BILE_HU`) with the phantom's own blur, the noise is the phantom's.

    Returns:
        A Sample: image int16 in HU, labels uint8 (1 liver, 2 kidney, 3 spleen,
        4 gallbladder).
    """
    from napari_unet.samples.phantom import make_ct_abdomen

    base = make_ct_abdomen(seed=seed)
    labels = base.labels.array.copy()
    affine = base.image.affine
    liver = labels == 1
    ijk = np.indices(labels.shape, dtype=np.float32)
    xyz = np.tensordot(affine[:3, :3], ijk, axes=1) + affine[:3, 3, None, None, None]
    liver_xyz = xyz[:, liver]
    centre = liver_xyz.mean(axis=1)
    # RAS: the fossa lies medial (toward x = 0), anterior (+y) and inferior (-z)
    target = centre + np.array([-30.0 * np.sign(centre[0] or 1.0), 30.0, -40.0])
    nearest = liver_xyz[:, np.argmin(((liver_xyz - target[:, None]) ** 2).sum(axis=0))]
    ell = sum(((xyz[a] - nearest[a]) / radii_mm[a]) ** 2 for a in range(3)) <= 1.0
    gallbladder = ell & liver
    labels[gallbladder] = 4
    delta = ndimage.gaussian_filter(np.where(gallbladder, BILE_HU - 62.0, 0.0), 0.6)
    image = np.clip(np.round(base.image.array + delta), -1024, 3071).astype(np.int16)
    meta = {"description": f"napari-unet CT phantom (seed {seed}) with a gallbladder "
                           "(test variant)"}  # fmt: skip
    return Sample(
        key="ct_abdomen_fluid",
        title="CT phantom with a gallbladder (test only)",
        image=Volume(image, affine, "CT", dict(meta), source="sample:ct_abdomen_fluid"),
        labels=Volume(labels, affine, "CT", dict(meta), source="sample:ct_abdomen_fluid_labels"),
        label_names=[*base.label_names, GALLBLADDER[0]],
        label_colors=[*base.label_colors, GALLBLADDER[1]],
    )
