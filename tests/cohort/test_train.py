"""`napari-unet train --cohort`: many labelled volumes, one version; DDP equals one process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_unet.cli import main
from napari_unet.models import load_model
from tests.cohort.conftest import write_scan


@pytest.fixture
def manifest(tmp_path) -> Path:
    """Three labelled cases: full labels, reviewed slices only, an ignore label."""
    rows = ["id,image,labels,slices,ignore_label"]
    for n in range(3):
        image, labels = tmp_path / f"s{n}.nii.gz", tmp_path / f"s{n}_labels.nii.gz"
        write_scan(image, n, labels=labels)
        slices = "2:1;3" if n == 1 else ""
        rows.append(f"c{n},{image.name},{labels.name},{slices},{'' if n != 2 else 7}")
    path = tmp_path / "train.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def _weights(path: Path) -> dict:
    return {k: v.detach().numpy().copy() for k, v in load_model(path).model.state_dict().items()}


def test_cohort_training_in_one_process(model2d, manifest, tmp_path, capsys) -> None:
    out = tmp_path / "v1.safetensors"
    args = ["train", "--cohort", str(manifest), "-o", str(out), "--from", str(model2d),
            "--steps", "3", "--device", "cpu", "--json"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["cases"] == ["c0", "c1", "c2"] and summary["steps"] == 3
    assert summary["world_size"] == 1 and summary["global_batch"] == 8
    lineage = load_model(out).lineage
    assert lineage["parent"] == load_model(model2d).hash
    assert lineage["cohort"]["cases"] == ["c0", "c1", "c2"]
    trained_on = {d["name"]: d for d in lineage["trained_on"]}
    assert set(trained_on) == {"c0", "c1", "c2"}
    assert trained_on["c1"]["slices"] == [1, 3]  # only its reviewed slices
    assert len(trained_on["c0"]["slices"]) == 6  # full labels: every slice


def test_cohort_training_refusals(model2d, manifest, tmp_path, capsys) -> None:
    out = str(tmp_path / "v.safetensors")
    cases = [
        (["train", "--cohort", str(manifest), "-o", out, "--slices", "2:1"], "slices"),
        (["train", "a.nii", "b.nii", "--cohort", str(manifest), "-o", out], "IMAGE LABELS"),
        (["train", "-o", out, "--nproc", "2"], "--cohort"),
        (["train", "-o", out], "IMAGE and LABELS"),
        (["train", "--cohort", str(manifest), "-o", out, "--nproc", "3"], "split evenly"),
        (["train", "--cohort", str(manifest), "-o", out, "--nproc", "2", "--seconds", "5"],
         "--steps"),
        (["train", "--cohort", str(manifest), "-o", str(manifest.parent / "s0.nii.gz")],
         ".safetensors"),
    ]  # fmt: skip
    for args, word in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert word in err and err.count("\n") == 1, (args, err)
    no_labels = tmp_path / "nolabels.csv"
    no_labels.write_text("image\ns0.nii.gz\n")
    assert main(["train", "--cohort", str(no_labels), "-o", out]) == 2
    assert "no labels" in capsys.readouterr().err


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process(model2d, manifest, tmp_path, capfd) -> None:
    """DDP over 2 CPU processes (gloo, torchrun) gives the single-process weights."""
    common = ["train", "--cohort", str(manifest), "--from", str(model2d), "--steps", "4",
              "--device", "cpu", "--json"]  # fmt: skip
    one, two = tmp_path / "one.safetensors", tmp_path / "two.safetensors"
    assert main([*common, "-o", str(one)]) == 0
    assert main([*common, "-o", str(two), "--nproc", "2"]) == 0, capfd.readouterr().err
    lines = [json.loads(x) for x in capfd.readouterr().out.splitlines() if x.startswith("{")]
    assert len(lines) == 2  # rank 0 reports, rank 1 is quiet
    assert lines[-1]["world_size"] == 2 and lines[-1]["global_batch"] == 8
    a, b, parent = _weights(one), _weights(two), _weights(model2d)
    change = np.sqrt(sum(((a[k] - parent[k]) ** 2).sum() for k in a))
    diff = np.sqrt(sum(((a[k] - b[k]) ** 2).sum() for k in a))
    assert change > 1e-4  # the runs did train
    assert diff < 1e-4 * change, (diff, change)  # float rounding only
    assert load_model(two).lineage["cohort"]["world_size"] == 2
