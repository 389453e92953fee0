"""Hostile cases for workspaces: a save never overwrites what is not ours; damaged
workspace files are refused with one line."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.errors import InputError
from napari_unet.io.volume import Volume
from napari_unet.workspace import Workspace

pytestmark = pytest.mark.timeout(120)


def _scan(source: str, value: float = 0.0) -> Volume:
    return Volume(np.full((4, 5, 6), value, np.float32), np.eye(4), "MR", source=source)


def test_save_refuses_a_non_empty_folder_that_is_not_a_workspace(tmp_path):
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "image.nii.gz").write_bytes(b"someone else's scan")
    with pytest.raises(InputError, match="not empty and is not a napari-unet workspace"):
        Workspace(_scan("a.nii.gz")).save(folder)
    assert (folder / "image.nii.gz").read_bytes() == b"someone else's scan"
    assert sorted(p.name for p in folder.iterdir()) == ["image.nii.gz"]


def test_save_refuses_the_workspace_of_another_scan(tmp_path):
    Workspace(_scan("a.nii.gz")).save(tmp_path / "ws")
    before = {p.name: p.read_bytes() for p in (tmp_path / "ws").iterdir() if p.is_file()}
    with pytest.raises(InputError, match="workspace of another scan"):
        Workspace(_scan("b.nii.gz", 1.0)).save(tmp_path / "ws")
    after = {p.name: p.read_bytes() for p in (tmp_path / "ws").iterdir() if p.is_file()}
    assert before == after


def test_save_again_into_its_own_folder_and_reopen(tmp_path):
    ws = Workspace(_scan("a.nii.gz"))
    ws.save(tmp_path / "ws")
    ws.labels[1, 1, 1] = 1
    ws.save()
    Workspace(_scan("a.nii.gz")).save(tmp_path / "ws")  # same scan, new session: allowed
    assert not [p for p in (tmp_path / "ws").iterdir() if "~napari-unet-" in p.name]


@pytest.mark.parametrize(
    "state",
    [
        "[1, 2]",
        '{"format": "abc"}',
        '{"format": 99}',
        '{"format": 1, "reviewed": ["x"]}',
        '{"format": 1, "models": [{"bogus": 1}]}',
        "\xff\xfe",
        "{",
        '{"format": 1, "slice_axis": 7}',
    ],
)
def test_damaged_workspace_files_are_refused_in_one_line(tmp_path, state):
    Workspace(_scan("a.nii.gz")).save(tmp_path / "ws")
    (tmp_path / "ws" / "workspace.json").write_text(state, encoding="latin-1")
    with pytest.raises(InputError) as info:
        Workspace.open(tmp_path / "ws")
    assert "\n" not in str(info.value) and "ws" in str(info.value)
