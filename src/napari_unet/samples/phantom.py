"""The CT-like sample: an abdominal phantom in HU, generated from a seed.

The grid mimics a DICOM-derived axial CT: array ``(i, j, k)`` with i → patient Left,
j → Posterior, k → Superior (orientation "LPS"), spacing 1.6 × 1.6 × 3.0 mm. Organs are
ellipsoids deformed by a smooth random field, so their borders are irregular and liver
and spleen (similar HU) are told apart only by shape and position, as in real CT.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from napari_unet.io.volume import Volume
from napari_unet.samples import Sample

SHAPE = (192, 144, 48)
SPACING = (1.6, 1.6, 3.0)
LABELS = ["liver", "kidney", "spleen"]
COLORS = ["#c0504d", "#f2c14e", "#8e6bd1"]


def ct_affine(shape: tuple[int, int, int] = SHAPE, spacing=SPACING) -> np.ndarray:
    """RAS affine of an LPS-ordered grid centred on the world origin."""
    affine = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    centre = (np.asarray(shape) - 1) / 2.0
    affine[:3, 3] = -affine[:3, :3] @ centre
    return affine


def _smooth_field(rng: np.random.Generator, shape, sigma_vox, amplitude: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox)
    return (field * (amplitude / (field.std() + 1e-6))).astype(np.float32)


def _ellipsoid(xyz, centre, radii, field=None) -> np.ndarray:
    """Mask of an ellipsoid (mm), its border pushed in/out by ``field``."""
    x, y, z = xyz
    f = ((x - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
    f = f + ((z - centre[2]) / radii[2]) ** 2
    if field is not None:
        f = f + field
    return f < 1.0


def make_ct_abdomen(seed: int = 7, shape: tuple[int, int, int] = SHAPE) -> Sample:
    """Generate the CT-like phantom.

    Returns:
        A Sample: image int16 in HU, labels uint8 (1 liver, 2 kidney, 3 spleen).
    """
    rng = np.random.default_rng(seed)
    affine = ct_affine(shape)
    ijk = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    xyz = [sum(affine[r, c] * ijk[c] for c in range(3)) + affine[r, 3] for r in range(3)]
    x, y, _ = xyz
    sigma = [12 / s for s in SPACING]
    fields = [_smooth_field(rng, shape, sigma, 0.18) for _ in range(4)]

    hu = np.full(shape, -1000.0, dtype=np.float32)
    body = _ellipsoid(xyz, (0, 0, 0), (150, 105, 1e4), fields[0] * 0.3)
    inner = _ellipsoid(xyz, (0, 0, 0), (135, 92, 1e4), fields[0] * 0.3)
    hu[body] = -100.0  # subcutaneous fat
    hu[inner] = 35.0  # muscle and soft tissue
    lung_field = fields[0] * 0.5
    lungs = _ellipsoid(xyz, (75, -15, 95), (55, 62, 55), lung_field)
    lungs |= _ellipsoid(xyz, (-75, -15, 100), (52, 60, 55), lung_field)
    lungs &= inner
    hu[lungs] = -850.0

    liver = inner & _ellipsoid(xyz, (70, 10, 30), (75, 70, 70), fields[1]) & ~lungs
    spleen = inner & _ellipsoid(xyz, (-85, -35, 25), (30, 40, 45), fields[2]) & ~lungs
    kidney_field = fields[3] * 0.6
    kidneys = _ellipsoid(xyz, (60, -45, -25), (28, 22, 45), kidney_field)
    kidneys |= _ellipsoid(xyz, (-60, -45, -20), (28, 22, 45), kidney_field)
    kidneys &= inner & ~liver & ~spleen
    hu[liver] = 62.0
    hu[spleen] = 50.0
    hu[kidneys] = 150.0  # enhancing cortex (portal-venous phase)
    hu[_ellipsoid(xyz, (60, -45, -25), (12, 9, 25)) & kidneys] = 20.0  # renal sinus fat/pelvis
    hu[_ellipsoid(xyz, (-60, -45, -20), (12, 9, 25)) & kidneys] = 20.0

    aorta = _ellipsoid(xyz, (-12, -25, 0), (11, 11, 1e4))
    hu[aorta & inner] = 170.0
    vertebra = _ellipsoid(xyz, (0, -62, 0), (22, 18, 1e4))
    hu[vertebra] = 750.0
    hu[_ellipsoid(xyz, (0, -62, 0), (18, 14, 1e4))] = 250.0  # cancellous bone
    hu[_ellipsoid(xyz, (0, -88, 0), (8, 7, 1e4))] = 10.0  # spinal canal
    bowel = inner & (y > 30) & (x < 20) & (fields[2] > 0.22) & ~liver & ~spleen
    hu[bowel] = -700.0  # bowel gas

    hu = ndimage.gaussian_filter(hu, 0.6)
    hu += rng.normal(0.0, 12.0, shape).astype(np.float32)
    image = np.clip(np.round(hu), -1024, 3071).astype(np.int16)

    labels = np.zeros(shape, dtype=np.uint8)
    labels[liver] = 1
    labels[kidneys] = 2
    labels[spleen] = 3
    meta = {"description": f"napari-unet CT-like abdominal phantom (seed {seed})"}
    return Sample(
        key="ct_abdomen",
        title="CT-like abdomen phantom (HU)",
        image=Volume(image, affine, "CT", dict(meta), source="sample:ct_abdomen"),
        labels=Volume(labels, affine, "CT", dict(meta), source="sample:ct_abdomen_labels"),
        label_names=list(LABELS),
        label_colors=list(COLORS),
    )
