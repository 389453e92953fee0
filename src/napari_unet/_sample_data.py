"""npe2 sample data: File > Open Sample > napari-unet."""

from __future__ import annotations

from napari_unet._layers import LayerData, image_layer_data, labels_layer_data
from napari_unet.samples import load_sample


def _layers(key: str) -> list[LayerData]:
    sample = load_sample(key)
    return [
        image_layer_data(sample.image, sample.title),
        labels_layer_data(
            sample.labels, f"{sample.title} reference", sample.label_names, sample.label_colors
        ),
    ]


def mr_brain() -> list[LayerData]:
    """MNI152 T1 brain MR (1 mm) with its white-matter reference mask."""
    return _layers("mr_brain")


def ct_abdomen() -> list[LayerData]:
    """CT-like abdominal phantom (HU) with liver, kidney and spleen reference masks."""
    return _layers("ct_abdomen")
