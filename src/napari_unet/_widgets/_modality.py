"""A scan's modality: read, detected or chosen, and the normalisation a new model gets.

DICOM states the modality; NIfTI does not, so the reader detects CT where the values
make it unambiguous (air near −1000 HU) and otherwise leaves it "other" (not stated).
The user can say which it is (CT, MR or other) in the Scan dock or the panel; the
choice is kept in the layer's metadata (``modality``, ``modality_source = "user"``).

A new model always gets a normalisation: CT → the HU window, MR → percentile clip and
z-score; "other", chosen or not stated, gets MR's percentile z-score (it suits any
scan not in HU), and the panel says so (`model_modality`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_unet._layers import MODALITY_SOURCES
from napari_unet.io.display import METADATA_KEY

MODALITIES = ("CT", "MR", "other")


def modality_choice() -> tuple[Any, Any]:
    """The CT/MR/other combo and the note saying where the modality came from, as the
    Scan dock and the panel both show them."""
    from qtpy.QtWidgets import QComboBox, QLabel

    combo = QComboBox()
    combo.addItems(list(MODALITIES))
    combo.setToolTip(
        "What the scan is: new models normalise CT with a HU window, MR (and other) "
        "with a percentile clip and z-score"
    )
    note = QLabel("")
    note.setWordWrap(True)
    return combo, note


def layer_modality(layer) -> tuple[str, str | None]:
    """``(modality, source)`` of a plugin image layer (source: a `MODALITY_SOURCES` key)."""
    meta = (getattr(layer, "metadata", None) or {}).get(METADATA_KEY) or {}
    modality = meta.get("modality", "other")
    source = meta.get("modality_source")
    if modality not in ("CT", "MR") and source != "user":
        source = None
    return modality, source


def set_layer_modality(layer, modality: str) -> None:
    """Record the user's choice in ``layer.metadata`` (replaced, so napari's
    ``metadata`` event tells every widget)."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    metadata = dict(layer.metadata)
    meta = dict(metadata.get(METADATA_KEY) or {})
    meta.update(modality=modality, modality_source="user")
    metadata[METADATA_KEY] = meta
    layer.metadata = metadata


def choose_modality(layer, modality: str, *, missing: str) -> None:
    """Apply the user's choice in a widget's combo to the scan ``layer`` (see
    `set_layer_modality`); without a layer, an error names the ``missing`` one."""
    if layer is None:
        from napari.utils.notifications import show_error

        show_error(f"Open a scan first: no {missing} to set the modality of")
        return
    set_layer_modality(layer, modality)  # its metadata event refreshes every widget


def describe_modality(modality: str, source: str | None) -> str:
    """Where the modality shown beside it came from: ``"detected: air at −1000 HU"``,
    ``"from the DICOM header"``, ``"not stated in the file: choose"`` …"""
    if modality not in ("CT", "MR") and source != "user":
        return "not stated in the file: choose"
    return MODALITY_SOURCES.get(source, MODALITY_SOURCES[None])


def model_modality(modality: str, source: str | None, array: Any) -> tuple[str, str]:
    """The modality a new model's spec follows, and a sentence when it is not the
    user's or the file's own ("" otherwise).

    Args:
        modality: the layer's modality ("CT", "MR", "other").
        source: where it came from (None: not stated).
        array: the scan's voxels (checked for air when the modality is not stated).
    """
    from napari_unet.training.recipe import guess_modality

    if modality in ("CT", "MR"):
        return modality, ""
    mr = "clip to the 0.5–99.5 percentiles, then z-score"
    if source == "user":
        return "MR", f"modality 'other': the new model normalises intensities as for MR ({mr})"
    guessed = guess_modality(np.asarray(array), "other")
    if guessed == "CT":
        return "CT", "modality not stated: air near −1000 HU found, so a CT (HU) window is used"
    return "MR", (
        f"modality not stated in the file: MR normalisation is used ({mr}); "
        "choose CT, MR or other in the panel or the Scan dock if that is wrong"
    )


def describe_normalization(normalization) -> str:
    """A model's intensity normalisation in words."""
    mode = str(getattr(normalization, "mode", "none"))
    if mode == "ct":
        low, high = normalization.window
        return f"HU window {low:g}…{high:g}"
    if mode == "mr":
        low, high = normalization.percentiles
        return f"percentiles {low:g}–{high:g} %, z-score"
    return "none (raw values)"
