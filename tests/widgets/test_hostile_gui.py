"""Hostile inputs in napari: a notification naming the file, never a crash, nothing lost.

A sample of the corpus in tests/hostile, opened the way a user would: File > Open
(the plugin's reader), Open model in the panel, and the Export step's save buttons.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct

import numpy as np
import pytest

import napari_unet._reader as reader
from napari_unet.errors import InputError
from tests.conftest import write_nifti

pytestmark = pytest.mark.timeout(180)


def _huge_declared_nifti(path):
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, 2000, 2000, 2000, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 16, 32)  # float32
    struct.pack_into("<8f", header, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", header, 108, 352.0)
    header[344:348] = b"n+1\0"
    path.write_bytes(gzip.compress(bytes(header) + b"\0" * 4))
    return path


def _truncated_nifti(path, rng):
    full = write_nifti(path.with_name("full.nii.gz"), rng.normal(size=(30, 30, 30)), np.eye(4))
    path.write_bytes(full.read_bytes()[:2000])
    full.unlink()
    return path


def _flipped_byte_nifti(path, rng):
    good = write_nifti(path.with_name("good.nii.gz"), rng.normal(size=(20, 20, 20)), np.eye(4))
    data = bytearray(good.read_bytes())
    good.unlink()
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return path


def _folder_with_fifo(path):
    path.mkdir()
    os.mkfifo(path / "pipe")
    return path


CASES = {
    "huge.nii.gz": lambda p, rng: _huge_declared_nifti(p),
    "truncated.nii.gz": _truncated_nifti,
    "flipped.nii.gz": _flipped_byte_nifti,
    "random.nii": lambda p, rng: p.write_bytes(rng.bytes(700)) and p,
    "fifo_series": lambda p, rng: _folder_with_fifo(p),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_file_opened_in_napari_is_a_notification(
    make_napari_viewer, tmp_path, rng, monkeypatch, name
):
    shown = []
    monkeypatch.setattr(reader, "_notify_error", shown.append)
    viewer = make_napari_viewer()
    path = tmp_path / name
    result = CASES[name](path, rng)
    path = result if result not in (None, True) and not isinstance(result, int) else path
    try:
        layers = viewer.open(str(path), plugin="napari-unet")
    except ValueError as e:  # napari: "no reader" for a folder without any DICOM file
        layers = []
        shown.append(str(e))
    assert layers == [] and len(viewer.layers) == 0
    assert len(shown) == 1 and name in shown[0] and "\n" not in shown[0], shown


def _open(panel, path):
    (layer,) = panel.viewer.open(str(path), plugin="napari-unet")
    return layer


def test_a_pickle_offered_as_a_model_is_refused_without_running_it(panel, tiny_scan, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps(Evil(), protocol=4))
    _open(panel, tiny_scan[0])
    with pytest.raises(InputError, match=r"evil\.safetensors"):
        panel.model_section.open_model(evil)
    assert not marker.exists()
    assert panel.session.model is None


def test_export_never_writes_over_the_scan_or_the_model_itself(panel, tiny_scan, tmp_path):
    scan_path = tiny_scan[0]
    before = scan_path.read_bytes()
    _open(panel, scan_path)
    panel.model_section.new_model(["ball"], spatial_dims=2)
    with pytest.raises(InputError, match="is also an input"):
        panel.export_section.save_labels(scan_path)
    assert scan_path.read_bytes() == before
    model = panel.session.workspace.model_path()
    model_bytes = model.read_bytes()
    with pytest.raises(InputError, match="is also an input"):
        panel.export_section.save_model(model)
    assert model.read_bytes() == model_bytes
    copy = panel.export_section.save_model(tmp_path / "copy.safetensors")
    assert copy.read_bytes() == model_bytes


def test_workspace_is_never_saved_into_a_foreign_folder(panel, tiny_scan, tmp_path):
    _open(panel, tiny_scan[0])
    panel.model_section.new_model(["ball"], spatial_dims=2)
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty and is not a napari-unet workspace"):
        panel.export_section.save_workspace(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
