"""Packaging contracts: manifest entries import; the core loads no Qt, napari or torch."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import yaml

MANIFEST = Path(__file__).parents[1] / "src" / "napari_unet" / "napari.yaml"


def test_every_python_name_in_the_manifest_imports():
    manifest = yaml.safe_load(MANIFEST.read_text())
    names = [c["python_name"] for c in manifest["contributions"]["commands"]]
    assert names
    for name in names:
        module, attr = name.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), name


def test_manifest_validates_with_npe2():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_file(MANIFEST)
    assert manifest.name == "napari-unet"
    assert {r.command for r in manifest.contributions.readers} == {
        "napari-unet.get_reader",
        "napari-unet.get_labels_reader",  # "Open labels…" (issue 13)
    }


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return {m.split(".")[0] for m in out.stdout.split()}


def test_core_io_and_reader_glue_import_no_qt_napari_or_torch():
    loaded = _loaded_after(
        "import napari_unet, napari_unet.io.nifti, napari_unet.io.reader, "
        "napari_unet.io.display, napari_unet._layers, napari_unet.samples, napari_unet.cli"
    )
    forbidden = {"qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "torch"}
    assert not loaded & forbidden, loaded & forbidden


def test_scan_names_drop_the_file_type():
    from napari_unet._layers import scan_name

    assert scan_name("/data/T1.nii.gz") == "T1"
    assert scan_name("/data/T1.NII") == "T1"
    assert scan_name("/data/ct/IM0001.dcm") == "IM0001"
    assert scan_name("/data/series_3") == "series_3"
