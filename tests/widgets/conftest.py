import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "xcb" if os.environ.get("DISPLAY") else "offscreen")


def pytest_collection_modifyitems(items):
    for item in items:
        if "/widgets/" in str(item.fspath):
            item.add_marker(pytest.mark.gui)


@pytest.fixture(autouse=True)
def _no_idle_collector_left():
    """A panel installs the process's idle garbage collector (`_gc_freeze`); later
    tests start without it."""
    yield
    from napari_unet._widgets import _gc_freeze

    _gc_freeze.uninstall()


@pytest.fixture
def tiny_scan(tmp_path):
    """A 40×36×10 MR-like scan (LPS, 1×1×3 mm) with a bright ball, and its truth mask."""
    from tests.conftest import write_nifti

    shape = (40, 36, 10)
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    ball = ((i - 20) ** 2 + (j - 17) ** 2 + ((k - 5) * 3) ** 2) < 11**2
    rng = np.random.default_rng(0)
    image = (100 + 300 * ball + rng.normal(0, 20, shape)).astype(np.float32)
    affine = np.array([[-1.0, 0, 0, 20], [0, -1.0, 0, 18], [0, 0, 3.0, -15], [0, 0, 0, 1]])
    path = write_nifti(tmp_path / "tiny_mr.nii.gz", image, affine)
    return path, ball.astype(np.uint8)


@pytest.fixture
def panel(make_napari_viewer, tmp_path, monkeypatch):
    """The U-Net panel docked in a viewer, with autosave going to a temporary folder."""
    from napari_unet._widgets.panel import UNetPanel

    monkeypatch.setenv("NAPARI_UNET_RECOVERY_DIR", str(tmp_path / "recovery"))
    viewer = make_napari_viewer()
    widget = UNetPanel(viewer)
    viewer.window.add_dock_widget(widget)
    return widget
