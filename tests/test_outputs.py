"""Output safety: checks before a job, atomic writes, stale temporary files removed."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap

import pytest

from napari_unet.errors import InputError
from napari_unet.outputs import (
    atomic_output,
    check_distinct,
    check_output,
    remove_stale_temps,
)

pytestmark = pytest.mark.timeout(120)


def test_check_output_refuses_an_existing_file_unless_overwrite(tmp_path):
    out = tmp_path / "labels.nii.gz"
    out.write_bytes(b"mine")
    with pytest.raises(InputError, match=r"labels\.nii\.gz: already exists"):
        check_output(out)
    assert check_output(out, overwrite=True) == out
    assert out.read_bytes() == b"mine"


def test_check_output_never_allows_an_input_even_with_overwrite(tmp_path):
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"scan")
    for name in ("scan.nii.gz", "./scan.nii.gz"):
        with pytest.raises(InputError, match="is also an input"):
            check_output(tmp_path / name, overwrite=True, inputs=[scan])
    link = tmp_path / "alias.nii.gz"
    link.symlink_to(scan)
    with pytest.raises(InputError, match="is also an input"):
        check_output(link, overwrite=True, inputs=[scan])


def test_check_output_refuses_a_file_inside_an_input_folder(tmp_path):
    series = tmp_path / "dicom"
    series.mkdir()
    with pytest.raises(InputError, match="is also an input"):
        check_output(series / "seg.nii.gz", inputs=[series])


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("missing/out.nii.gz", "does not exist"),
        ("afile/out.nii.gz", "does not exist"),
        ("out.txt", "must end in .nii or .nii.gz"),
        ("adir", "is a folder"),
    ],
)
def test_check_output_bad_names(tmp_path, name, message):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    suffixes = (".nii", ".nii.gz") if name.endswith("txt") else ()
    with pytest.raises(InputError, match=message):
        check_output(tmp_path / name, suffixes=suffixes)


def test_check_output_probes_a_read_only_folder():
    with pytest.raises(InputError, match="cannot write in /proc"):
        check_output("/proc/labels.nii.gz")


def test_check_distinct_outputs(tmp_path):
    with pytest.raises(InputError, match="-o and --uncertainty name the same file"):
        check_distinct(("-o", tmp_path / "a.nii"), ("--uncertainty", tmp_path / "./a.nii"))
    check_distinct(("-o", tmp_path / "a.nii"), ("--uncertainty", None))


def test_atomic_output_replaces_whole_or_not_at_all(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    with pytest.raises(RuntimeError), atomic_output(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer crashed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    with atomic_output(target) as tmp:
        assert tmp.name.endswith(".safetensors") and tmp.name.startswith(".")
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o640


def test_atomic_output_disk_full_is_one_clean_error(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with (
        pytest.raises(InputError, match=r"out\.nii\.gz: could not be written \(No space left"),
        atomic_output(tmp_path / "out.nii.gz") as tmp,
    ):
        tmp.write_bytes(b"x")
    assert list(tmp_path.iterdir()) == []


def test_a_temp_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        from napari_unet.outputs import atomic_output
        with atomic_output({str(tmp_path / "big.nii.gz")!r}) as tmp:
            tmp.write_bytes(b"x" * 5_000_000)
            print("READY", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "READY"
        proc.kill()  # SIGKILL: no cleanup runs
        proc.wait(timeout=30)
    finally:
        proc.kill()
    left = [p for p in tmp_path.iterdir() if "~napari-unet-" in p.name]
    assert len(left) == 1 and left[0].stat().st_size == 5_000_000
    with atomic_output(tmp_path / "other.nii.gz") as tmp:
        tmp.write_bytes(b"y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.nii.gz"]


def test_live_writers_temp_files_are_kept(tmp_path):
    mine = tmp_path / f".a.nii~napari-unet-{os.getpid()}-abc.nii"
    dead = tmp_path / ".a.nii~napari-unet-999999999-abc.nii"
    theirs = tmp_path / ".a.nii.tmp"  # not ours: never touched
    for p in (mine, dead, theirs):
        p.write_bytes(b"x")
    assert remove_stale_temps(tmp_path) == [dead]
    assert mine.exists() and theirs.exists()
