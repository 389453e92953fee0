"""The main job: napari with the plugin's docks on a sample volume.

Interactive: opens the viewer and returns when it is closed. Headless (under Xvfb):
does the same offscreen, takes screenshots of each step, exports the segmentation
through the plugin's writer and writes ``summary.json`` into ``out``.
"""

from __future__ import annotations

import json
from pathlib import Path

import napari
import nibabel as nib
import numpy as np

from napari_unet.io.display import METADATA_KEY


def run_demo(*, sample: str = "mr_brain", headless: bool = False, out: str = "demo_out") -> dict:
    viewer = napari.Viewer(title="napari-unet demo")
    image, reference = viewer.open_sample("napari-unet", sample)
    reference.visible = False
    viewer.window.add_plugin_dock_widget("napari-unet", "Scan")
    viewer.layers.selection.active = image
    middle = image.data.shape[0] // 2
    viewer.dims.current_step = (middle, *viewer.dims.current_step[1:])
    if not headless:
        napari.run()
        return {}

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    shots = [_shot(viewer, folder / "01_scan.png")]
    reference.visible = True
    shots.append(_shot(viewer, folder / "02_segmentation.png"))
    export = folder / "segmentation.nii.gz"
    reference.save(str(export), plugin="napari-unet")
    saved = nib.load(export)
    meta = image.metadata[METADATA_KEY]
    summary = {
        "sample": sample,
        "screenshots": [str(p) for p in shots],
        "export": str(export),
        "export_shape": list(saved.shape),
        "export_affine_matches_scan": bool(np.allclose(saved.affine, meta["affine"], atol=0)),
        "labels_voxels": int(np.count_nonzero(np.asanyarray(saved.dataobj))),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    viewer.close()
    return summary


def _shot(viewer: napari.Viewer, path: Path) -> Path:
    viewer.window._qt_window.resize(1400, 900)
    napari.qt.get_qapp().processEvents()
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    return path
