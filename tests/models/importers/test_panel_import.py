"""The panel's Import model… button: a bundle picked in a dialog is imported and opened."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


@pytest.fixture
def panel(make_napari_viewer, tmp_path, monkeypatch):
    from napari_unet._widgets.panel import UNetPanel

    monkeypatch.setenv("NAPARI_UNET_RECOVERY_DIR", str(tmp_path / "recovery"))
    viewer = make_napari_viewer()
    widget = UNetPanel(viewer)
    viewer.window.add_dock_widget(widget)
    return widget


def test_import_button_imports_a_bundle_and_opens_it(panel, qtbot, tmp_path, monkeypatch):
    import torch
    from tests.conftest import write_nifti

    from napari_unet._widgets import model_section
    from napari_unet.models import build_model, preset_spec, save_model
    from napari_unet.models.importers import export_bundle

    rng = np.random.default_rng(0)
    scan = write_nifti(tmp_path / "scan.nii.gz", rng.normal(100, 20, (40, 36, 10)).astype(
        np.float32), np.diag([-1.0, -1.0, 3.0, 1.0]))  # fmt: skip
    panel.viewer.open(str(scan), plugin="napari-unet")
    torch.manual_seed(0)
    spec = preset_spec("unet", spatial_dims=3, labels=["ball", "rim"], modality="MR",
                       channels=[4, 8], strides=[2], patch_size=(16, 16, 8))  # fmt: skip
    save_model(tmp_path / "ours.safetensors", build_model(spec), spec, {"parent": None})
    bundle = export_bundle(tmp_path / "ours.safetensors", tmp_path / "bundle")
    out = tmp_path / "imported.safetensors"
    picked = str(bundle / "configs" / "metadata.json")
    monkeypatch.setattr(model_section.QFileDialog, "getOpenFileName", lambda *a, **k: (picked, ""))
    monkeypatch.setattr(model_section.QFileDialog, "getSaveFileName",
                        lambda *a, **k: (str(out), ""))  # fmt: skip
    panel.model_section.import_button.click()
    qtbot.waitUntil(lambda: panel.session.model is not None, timeout=60000)
    assert out.exists()
    assert panel.session.model.spec.labels == ["ball", "rim"]
    assert panel.session.model.lineage["imported"]["format"] == "monai_bundle"
