"""`napari-unet train` / `simulate`, in-process: exit codes, outputs, bad inputs."""

from __future__ import annotations

import json

import pytest

from napari_unet.cli import main
from tests.conftest import write_nifti
from tests.training.conftest import blob_pair


@pytest.fixture
def files(tmp_path):
    image, labels = blob_pair(shape=(32, 32, 6))
    img = write_nifti(tmp_path / "img.nii.gz", image.array, image.affine)
    lab = write_nifti(tmp_path / "lab.nii.gz", labels.array, image.affine)
    other = write_nifti(tmp_path / "other.nii.gz", labels.array[:, :16], image.affine)
    return tmp_path, str(img), str(lab), str(other)


@pytest.mark.slow
def test_train_then_finetune_writes_lineage(files, capsys):
    from napari_unet.models import read_model_header

    d, img, lab, _ = files
    v1, v2 = str(d / "v1.safetensors"), str(d / "v2.safetensors")
    assert (
        main(
            [
                "train",
                img,
                lab,
                "-o",
                v1,
                "--slices",
                "2:1,4",
                "--steps",
                "3",
                "--device",
                "cpu",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["steps"] == 3 and out["parent"] is None
    assert (
        main(
            [
                "train",
                img,
                lab,
                "-o",
                v2,
                "--from",
                v1,
                "--slices",
                "2:2",
                "--replay-slices",
                "2:1,4",
                "--steps",
                "2",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    lin = read_model_header(v2)["lineage"]
    assert lin["parent"] == out["hash"] and lin["reviewed_slices"][0]["slices"] == [2]
    assert lin["drift"] is not None


@pytest.mark.parametrize(
    "args, message",
    [
        (["{other}"], "differs from"),
        (["{lab}", "--slices", "2:1,99"], "outside 0..5"),
        (["{lab}", "--slices", "x"], "AXIS:I,J"),
        (["{lab}", "--steps", "0"], "--steps"),
        (["{d}/missing.nii.gz"], "no such file"),
        (["{lab}", "-o", "{d}/model.pt"], ".safetensors"),
        (["{lab}", "--steps", "2", "--seconds", "3"], "not allowed with"),
    ],
)
def test_train_bad_inputs_exit_2_with_one_line(files, capsys, args, message):
    d, img, lab, other = files
    args = [a.format(d=d, lab=lab, other=other) for a in args]
    if "-o" not in args:
        args += ["-o", str(d / "m.safetensors")]
    assert main(["train", img, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (d / "m.safetensors").exists()


@pytest.mark.slow
def test_simulate_json(files, capsys):
    _, img, lab, other = files
    args = [
        "simulate",
        img,
        lab,
        "--rounds",
        "2",
        "--slices-per-round",
        "1",
        "--steps",
        "2",
        "--device",
        "cpu",
        "--json",
    ]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["strategy"] == "worst" and [r["revealed_slices"] for r in out["rounds"]] == [1, 2]
    keys = {"round", "revealed_slices", "dice", "dice_per_class", "dice_revealed", "seconds"}
    assert keys <= set(out["rounds"][0])
    assert main(["simulate", img, other]) == 2
    assert "differs from" in capsys.readouterr().err
