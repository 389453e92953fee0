"""napari_unet: U-Net segmentation of MRI and CT in napari.

This module stays light: it imports no torch, Qt or napari, so that File > Open and
the CLI start fast. Heavy modules load only where they are used.
"""

from __future__ import annotations

from napari_unet.errors import InputError, NapariUnetError

__version__ = "0.1.0"

__all__ = ["InputError", "NapariUnetError", "__version__"]
