"""The MR sample: the MNI152 2009a T1 template with a white-matter mask (from nilearn's wheel)."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np

from napari_unet.errors import InputError
from napari_unet.io.volume import Volume
from napari_unet.samples import Sample

T1_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
WM_FILE = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"


def nilearn_data_dir() -> Path:
    """Folder of data files in the installed nilearn package (without importing it)."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or spec.origin is None:
        raise InputError(
            "the MR sample needs the 'nilearn' package (it ships the MNI152 template): "
            "pip install nilearn"
        )
    return Path(spec.origin).parent / "datasets" / "data"


@lru_cache(maxsize=1)
def _read() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    folder = nilearn_data_dir()
    t1 = nib.load(folder / T1_FILE)
    wm = nib.load(folder / WM_FILE)
    image = np.asanyarray(t1.dataobj).astype(np.float32)
    mask = (np.asanyarray(wm.dataobj) > 0.5 * float(np.max(wm.dataobj))).astype(np.uint8)
    return image, mask, t1.affine


def load_mr_brain() -> Sample:
    """The MNI152 T1 (197×233×189 voxels, 1 mm, RAS) and its white-matter mask (label 1)."""
    image, mask, affine = _read()
    meta = {"description": "MNI ICBM152 2009a T1 (nilearn package data)"}
    image_vol = Volume(image.copy(), affine, "MR", dict(meta), source="sample:mr_brain")
    labels_vol = Volume(mask.copy(), affine, "MR", dict(meta), source="sample:mr_brain_wm")
    return Sample(
        key="mr_brain",
        title="MR brain (MNI152 T1, 1 mm)",
        image=image_vol,
        labels=labels_vol,
        label_names=["white matter"],
        label_colors=["#f5d142"],
    )
