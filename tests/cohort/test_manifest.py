"""Cases from files, folders, globs and manifests; cohort.jsonl records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_unet.cohort.manifest import (
    Case,
    append_record,
    case_id,
    clean_id,
    collect_cases,
    is_cohort_input,
    read_manifest,
    read_records,
    write_manifest,
    write_records,
)
from napari_unet.errors import InputError


def test_folder_of_nifti_files_and_a_dicom_series(cohort) -> None:
    cases = collect_cases([cohort["scans"], cohort["dicom"]])
    assert [c.id for c in cases] == ["bad", "case0", "case1", "case2", "case3", "series1"]
    assert all(Path(c.image).is_absolute() for c in cases)
    # a folder holding one series is one case; its parent folder finds it below
    assert [c.id for c in collect_cases([cohort["root"] / "dicom"])] == ["series1"]


def test_what_makes_a_cohort(cohort) -> None:
    one = str(cohort["nifti"][0])
    assert not is_cohort_input([one])
    assert not is_cohort_input([str(cohort["dicom"])])  # one DICOM series: one scan
    assert is_cohort_input([one, str(cohort["nifti"][1])])
    assert is_cohort_input([str(cohort["scans"])])
    assert is_cohort_input([str(cohort["scans"] / "case*.nii.gz")])
    assert is_cohort_input(["cases.csv"])
    assert not is_cohort_input([str(cohort["root"] / "missing.nii.gz")])


def test_glob_and_duplicates(cohort) -> None:
    pattern = str(cohort["scans"] / "case[01].nii.gz")
    cases = collect_cases([pattern, cohort["nifti"][0]])  # case0 named twice: once
    assert [c.id for c in cases] == ["case0", "case1"]
    with pytest.raises(InputError, match="no file or folder matches"):
        collect_cases([str(cohort["scans"] / "nothing*.nii.gz")])
    with pytest.raises(InputError, match="no such file"):
        collect_cases([str(cohort["root"] / "missing.nii.gz")])


def test_same_names_get_suffixes(tmp_path) -> None:
    for site in ("a", "b"):
        (tmp_path / site).mkdir()
        (tmp_path / site / "scan.nii.gz").write_bytes(b"x")
    cases = collect_cases([tmp_path / "a", tmp_path / "b"])
    assert [c.id for c in cases] == ["scan", "scan-2"]


def test_manifest_with_header_relative_paths_and_options(tmp_path) -> None:
    (tmp_path / "m.csv").write_text(
        "# a comment\n"
        "image,labels,id,slices,ignore_label\n"
        'img/a.nii.gz,lab/a.nii.gz,patient 1,"2:3,5",\n'
        "img/b.nii.gz,,,,255\n"
    )
    a, b = read_manifest(tmp_path / "m.csv")
    assert a == Case("patient_1", str(tmp_path / "img/a.nii.gz"), str(tmp_path / "lab/a.nii.gz"),
                     "2:3,5", None)  # fmt: skip
    assert (b.id, b.labels, b.ignore_label) == ("b", None, 255)


def test_manifest_without_header_and_tsv(tmp_path) -> None:
    (tmp_path / "m.tsv").write_text("x.nii.gz\ty.nii.gz\tcase-x\nz.nii\n")
    x, z = read_manifest(tmp_path / "m.tsv")
    assert (x.id, Path(x.labels).name, z.id, z.labels) == ("case-x", "y.nii.gz", "z", None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("image,labels\n", "no case"),
        ("image,weight\na.nii\n", "unknown column 'weight'"),
        ("image,id\na.nii,x\nb.nii,x\n", "used twice"),
        ("image,ignore_label\na.nii,-3\n", "ignore_label"),
        ("image,id\n,x\n", "line 2: no image"),
        ("image,id\na.nii,x,extra\n", "3 cells"),
    ],
)
def test_bad_manifests_name_the_problem(tmp_path, text, message) -> None:
    path = tmp_path / "m.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as info:
        collect_cases([path])
    assert "m.csv" in str(info.value)


def test_binary_manifest_is_refused(tmp_path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"\xff\xfe\x00garbage\x80")
    with pytest.raises(InputError, match="not a text manifest"):
        read_manifest(path)


def test_manifest_round_trip(tmp_path) -> None:
    cases = [Case("a", "/x/a.nii.gz", "/x/la.nii.gz", "2:1;2", 9), Case("b", "/x/b")]
    write_manifest(tmp_path / "m.csv", cases)
    assert read_manifest(tmp_path / "m.csv") == cases


def test_case_ids() -> None:
    assert clean_id("../../etc/passwd") == "etc_passwd"  # an id never leaves OUT_DIR
    assert clean_id("..") == "case"
    assert case_id("/a/b/Patient 7 (T1).nii.gz") == "Patient_7_T1"
    assert case_id("/a/series.1") == "series.1"
    assert case_id("/a/.nii.gz") == "nii.gz"


def test_records_last_wins_and_a_cut_line_is_skipped(tmp_path) -> None:
    append_record(tmp_path, {"id": "a", "status": "failed"})
    append_record(tmp_path, {"id": "b", "status": "done"})
    append_record(tmp_path, {"id": "a", "status": "done"})
    with open(tmp_path / "cohort.jsonl", "a") as f:
        f.write('{"id": "c", "sta')  # killed mid-write
    records = read_records(tmp_path)
    assert {k: v["status"] for k, v in records.items()} == {"a": "done", "b": "done"}
    write_records(tmp_path, records.values())
    lines = (tmp_path / "cohort.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "b"]


def test_the_cohort_core_imports_no_qt_napari_torch_or_dask() -> None:
    import subprocess
    import sys

    code = ("import sys, napari_unet.cohort.manifest, napari_unet.cohort.run, "
            "napari_unet.cohort.review, napari_unet.cohort.train, napari_unet.cohort.case; "
            "print(' '.join(sorted(sys.modules)))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = {m.split(".")[0] for m in out.stdout.split()}
    assert not loaded & {"qtpy", "PyQt5", "PyQt6", "napari", "magicgui", "torch", "distributed"}
