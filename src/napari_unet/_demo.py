"""The main job: the whole correct-and-fine-tune loop in napari on a sample volume.

Interactive: opens napari with the sample, the Scan dock and the U-Net panel (a new 2D
model is ready) and returns when the window is closed. Headless (under Xvfb): plays the
loop through the panel itself — predict, reveal the reference on a few slices as a
user's corrections, fine-tune, re-predict the other slices, export — and writes a
screenshot of each step, ``segmentation.nii.gz`` and ``summary.json`` into ``out``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import napari
import nibabel as nib
import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QApplication

from napari_unet.io.display import METADATA_KEY


def run_demo(
    *,
    sample: str = "mr_brain",
    headless: bool = False,
    out: str = "demo_out",
    slices: int = 5,
    train_seconds: float = 90.0,
) -> dict:
    from napari_unet._widgets.panel import UNetPanel
    from napari_unet.samples import load_sample

    if headless:
        os.environ.setdefault("NAPARI_UNET_RECOVERY_DIR", tempfile.mkdtemp())
    viewer = napari.Viewer(title="napari-unet demo")
    image, reference = viewer.open_sample("napari-unet", sample)
    reference.visible = False
    scan_dock, _ = viewer.window.add_plugin_dock_widget("napari-unet", "Scan")
    panel = UNetPanel(viewer)
    panel_dock = viewer.window.add_dock_widget(panel, name="U-Net", area="right")
    viewer.window._qt_window.resizeDocks(
        [scan_dock, panel_dock], [190, 760], Qt.Orientation.Vertical
    )
    truth = load_sample(sample)
    panel.model_section.new_model(truth.label_names, spatial_dims=2)
    viewer.layers.selection.active = panel.session.labels_layer
    middle = image.data.shape[0] // 2
    viewer.dims.set_current_step(0, middle)
    if not headless:
        napari.run()
        return {}
    return _play(viewer, panel, truth, Path(out), slices=slices, train_seconds=train_seconds)


def _play(viewer, panel, truth, folder: Path, *, slices: int, train_seconds: float) -> dict:
    from napari_unet._widgets._worker import add_progress_listener

    remove = add_progress_listener(_TerminalProgress())
    try:
        return _play_steps(viewer, panel, truth, folder, slices=slices,
                           train_seconds=train_seconds)  # fmt: skip
    finally:
        remove()


class _TerminalProgress:
    """A tqdm line with ETA on stderr for each job the panel runs (the headless demo)."""

    def __init__(self) -> None:
        self.bar = None
        self.description = None

    def __call__(self, description: str, events) -> None:
        import sys

        from tqdm import tqdm

        event = events[-1]
        if description != self.description or self.bar is None:
            if self.bar is not None:
                self.bar.close()
            self.description = description
            self.bar = tqdm(total=event.total or None, desc=description, file=sys.stderr,
                            mininterval=0.5, dynamic_ncols=True)  # fmt: skip
        if event.total and self.bar.total != event.total:
            self.bar.total = event.total
        loss, dice = event.data.get("loss"), event.data.get("val_dice")
        figures = [f"loss {loss:.3f}" if loss is not None else "",
                   f"val Dice {dice:.3f}" if dice is not None else ""]  # fmt: skip
        self.bar.set_postfix_str(", ".join(f for f in figures if f), refresh=False)
        self.bar.update(max(0, event.done - self.bar.n))
        if event.total and event.done >= event.total:
            self.bar.close()
            self.bar = None


def _play_steps(viewer, panel, truth, folder: Path, *, slices: int, train_seconds: float) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    app = QApplication.instance()
    session = panel.session
    viewer.window._qt_window.resize(1500, 950)
    shots = [_shot(viewer, folder / "01_scan.png")]
    truth_display = session.geometry.to_display(truth.labels.array)

    t0 = time.perf_counter()
    panel.segment_section.run(only_unreviewed=False)
    wait_until_idle(app, lambda: not panel.segment_section.run_button.isEnabled())
    first_seconds = time.perf_counter() - t0
    dice_before = _dice(session.labels_layer.data, truth_display, exclude=())
    shots.append(_shot(viewer, folder / "02_first_prediction.png"))

    n = truth_display.shape[0]
    foreground = np.flatnonzero(truth_display.reshape(n, -1).any(axis=1))
    chosen = np.linspace(foreground.min(), foreground.max(), slices + 2)[1:-1].astype(int)
    for index in chosen:  # the "user" corrects these slices completely
        session.labels_layer.data[index] = truth_display[index]
        session.mark_reviewed_display([int(index)])
    session.labels_layer.refresh()
    viewer.dims.set_current_step(0, int(chosen[len(chosen) // 2]))
    shots.append(_shot(viewer, folder / "03_corrections.png"))

    t0 = time.perf_counter()
    panel.finetune_section.start(seconds=train_seconds, repredict=True)
    wait_until_idle(app, lambda: not panel.finetune_section.start_button.isEnabled(), timeout=3600)
    wait_until_idle(app, lambda: not panel.segment_section.run_button.isEnabled())
    loop_seconds = time.perf_counter() - t0
    viewer.dims.set_current_step(0, int(n // 2))
    shots.append(_shot(viewer, folder / "04_after_finetune.png"))
    dice_after = _dice(session.labels_layer.data, truth_display, exclude=chosen)

    export = folder / "segmentation.nii.gz"
    panel.export_section.save_labels(export)
    saved = nib.load(export)
    summary = {
        "sample": truth.key,
        "shape": list(truth.image.shape),
        "reviewed_slices": [int(i) for i in chosen],
        "first_prediction_seconds": round(first_seconds, 2),
        "dice_untrained": round(dice_before, 4),
        "finetune_and_repredict_seconds": round(loop_seconds, 2),
        "dice_after_finetune_unreviewed": round(dice_after, 4),
        "finetune_status": panel.finetune_section.status.text(),
        "screenshots": [str(p) for p in shots],
        "export": str(export),
        "export_affine_matches_scan": _same_affine(saved.affine, session.image_layer),
        "export_shape": list(saved.shape),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    viewer.close()
    return summary


def _same_affine(affine: np.ndarray, image_layer) -> bool:
    scan = np.asarray(image_layer.metadata[METADATA_KEY]["affine"])
    return bool(np.allclose(affine, scan, rtol=0, atol=1e-6))


def _dice(pred: np.ndarray, truth: np.ndarray, *, exclude) -> float:
    """Mean foreground Dice over slices (display axis 0) not in ``exclude``."""
    from napari_unet.evaluation.metrics import dice_per_class, mean_dice

    keep = np.ones(truth.shape[0], bool)
    keep[list(exclude)] = False
    n_classes = int(max(truth.max(), pred.max())) + 1
    dice = mean_dice(dice_per_class(pred[keep], truth[keep], n_classes))
    return float("nan") if dice is None else float(dice)


def wait_until_idle(app, busy, timeout: float = 900.0) -> float:
    """Run the Qt event loop while ``busy()`` (at most ``timeout`` s); returns seconds."""
    start = time.perf_counter()
    while busy() and time.perf_counter() - start < timeout:
        app.processEvents()
        time.sleep(0.002)
    return time.perf_counter() - start


def _shot(viewer: napari.Viewer, path: Path) -> Path:
    QApplication.instance().processEvents()
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    return path
