"""`napari-unet predict` on a cohort: in-process, on a LocalCluster, through --scheduler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_unet.cli import main
from napari_unet.cohort.manifest import read_records
from napari_unet.io.nifti import load_nifti
from napari_unet.io.reader import load_volume


def _summary(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1])


def _check_outputs(records: dict, inputs: list[Path]) -> None:
    """Every good input's output has its scan's shape and affine."""
    by_input = {Path(r["input"]): r for r in records.values()}
    for path in inputs:
        record = by_input[Path(path).absolute()]
        assert record["status"] in ("done", "skipped"), record
        scan, seg = load_volume(path), load_nifti(record["output"])
        assert seg.shape == scan.shape
        np.testing.assert_allclose(seg.affine, scan.affine, atol=1e-5)
        assert set(np.unique(seg.array)) <= {0, 1}
        assert record["uncertainty"] is None or 0.0 <= record["uncertainty"] <= 1.0


def test_in_process_cohort_with_a_bad_scan(model2d, cohort, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    inputs = [*cohort["nifti"][:2], cohort["bad"]]
    args = ["predict", str(model2d), *map(str, inputs), "-o", str(out), "--workers", "1",
            "--device", "cpu"]  # fmt: skip
    assert main([*args, "--json"]) == 3
    summary = _summary(capsys)
    assert (summary["done"], summary["failed"], summary["skipped"]) == (2, 1, 0)
    assert summary["scheduler"] == "in-process" and list(summary["model_loads"].values()) == [1]
    records = read_records(out)
    bad = records["bad"]
    assert bad["status"] == "failed" and "bad.nii.gz" in bad["error"] and "NIfTI" in bad["error"]
    for record in records.values():
        assert {"id", "input", "output", "status", "seconds", "device", "model", "uncertainty",
                "error"} <= set(record)  # fmt: skip
        assert record["model"] == summary["model"]
    _check_outputs(records, inputs[:2])
    assert not (out / "bad.nii.gz").exists()

    # --resume: nothing done is redone (the bad scan is tried again)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("case*.nii.gz")}
    assert main([*args, "--resume"]) == 3
    err = capsys.readouterr().err
    assert "bad:" in err and "1 of 3 cases failed" in err
    assert {p: p.stat().st_mtime_ns for p in out.glob("case*.nii.gz")} == stamps
    statuses = {k: v["status"] for k, v in read_records(out).items()}
    assert statuses == {"case0": "skipped", "case1": "skipped", "bad": "failed"}
    lines = (out / "cohort.jsonl").read_text().splitlines()
    assert len(lines) == 3  # one line per case once the run ends


def test_outputs_are_checked_before_any_work(model2d, cohort, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["predict", str(model2d), str(cohort["scans"] / "case[01].nii.gz"), "-o", str(out),
            "--workers", "1", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    assert "2 of 2 cases written" in capsys.readouterr().out
    # the same run again: refused unless --resume or --overwrite
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    capsys.readouterr()
    # a folder of outputs is not a NIfTI name; never write beside the inputs over them
    assert main([*args[:4], str(tmp_path / "x.nii.gz"), *args[5:]]) == 2
    assert "names a folder" in capsys.readouterr().err
    assert main([*args[:4], str(cohort["scans"]), *args[5:], "--overwrite"]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert main([*args, "--uncertainty", str(tmp_path / "u.nii.gz")]) == 2
    assert "--uncertainty" in capsys.readouterr().err


def test_one_input_keeps_the_single_scan_behaviour(model2d, cohort, tmp_path, capsys) -> None:
    out = tmp_path / "seg.nii.gz"
    assert main(["predict", str(model2d), str(cohort["dicom"]), "-o", str(out),
                 "--device", "cpu"]) == 0  # fmt: skip
    assert load_nifti(out).shape == load_volume(cohort["dicom"]).shape
    assert not (tmp_path / "cohort.jsonl").exists()


def test_a_damaged_model_stops_the_run_at_once(cohort, tmp_path, capsys) -> None:
    model = tmp_path / "broken.safetensors"
    model.write_bytes(b"\x00" * 64)
    args = ["predict", str(model), str(cohort["scans"]), "-o", str(tmp_path / "out"),
            "--workers", "1"]  # fmt: skip
    assert main(args) == 2
    assert "broken.safetensors" in capsys.readouterr().err


# --- Dask ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_local_cluster_two_workers(model2d, cohort, tmp_path, capsys) -> None:
    pytest.importorskip("distributed")
    out = tmp_path / "out"
    inputs = [cohort["scans"], cohort["dicom"]]  # 4 NIfTI + bad + 1 DICOM series = 6 scans
    args = ["predict", str(model2d), *map(str, inputs), "-o", str(out), "--workers", "2",
            "--device", "cpu", "--json"]  # fmt: skip
    assert main(args) == 3
    summary = _summary(capsys)
    assert (summary["cases"], summary["done"], summary["failed"]) == (6, 5, 1)
    assert summary["scheduler"] == "local"
    loads = summary["model_loads"]
    assert 1 <= len(loads) <= 2 and set(loads.values()) == {1}  # once per worker, not per scan
    records = read_records(out)
    assert records["bad"]["status"] == "failed"
    _check_outputs(records, cohort["good"])
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    assert main([*args, "--resume"]) == 3
    again = _summary(capsys)
    assert (again["skipped"], again["done"], again["failed"]) == (5, 0, 1)
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")} == stamps


@pytest.mark.slow
def test_existing_scheduler_on_loopback(model2d, cohort, tmp_path, capsys) -> None:
    distributed = pytest.importorskip("distributed")
    out = tmp_path / "out"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster:  # fmt: skip
        address = cluster.scheduler_address
        assert address.startswith("tcp://127.0.0.1:")
        args = ["predict", str(model2d), str(cohort["scans"]), str(cohort["dicom"]), "-o",
                str(out), "--scheduler", address, "--workers", "2", "--device", "cpu",
                "--json"]  # fmt: skip
        assert main(args) == 3
        summary = _summary(capsys)
        assert summary["scheduler"] == address
        assert (summary["done"], summary["failed"]) == (5, 1)
        assert set(summary["model_loads"].values()) == {1}
        assert set(summary["model_loads"]) <= set(cluster.scheduler_info["workers"])
        _check_outputs(read_records(out), cohort["good"])


def test_unreachable_scheduler_is_one_line(model2d, cohort, tmp_path, capsys, monkeypatch) -> None:
    pytest.importorskip("distributed")
    from napari_unet.cohort import run

    monkeypatch.setattr(run, "CONNECT_TIMEOUT", 1.0)
    args = ["predict", str(model2d), str(cohort["scans"]), "-o", str(tmp_path / "out"),
            "--scheduler", "tcp://127.0.0.1:9"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--scheduler tcp://127.0.0.1:9: cannot connect" in err and err.count("\n") == 1
