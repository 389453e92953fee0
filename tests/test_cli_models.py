from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_unet.cli import main
from napari_unet.models import load_model


def _image(path: Path, shape=(20, 18, 6)) -> Path:
    rng = np.random.default_rng(0)
    affine = np.array([[-0.8, 0, 0, 10], [0, 0.8, 0, -5], [0, 0, 3.0, 2], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(rng.normal(0, 300, shape).astype(np.float32), affine), path)
    return path


@pytest.fixture
def model2d(tmp_path: Path) -> Path:
    out = tmp_path / "m.safetensors"
    assert (
        main(
            [
                "new-model",
                str(out),
                "--dims",
                "2",
                "--labels",
                "liver,tumour",
                "--context-slices",
                "1",
                "--patch",
                "16",
                "16",
            ]
        )
        == 0
    )
    return out


def test_new_model_writes_a_loadable_file(model2d: Path, capsys) -> None:
    loaded = load_model(model2d)
    assert loaded.spec.labels == ["liver", "tumour"] and loaded.spec.in_channels == 3
    assert loaded.lineage["parent"] is None
    args = ["new-model", str(model2d), "--dims", "3", "--labels", "a", "--overwrite"]
    assert main(args) == 0 and "wrote" in capsys.readouterr().out
    assert load_model(model2d).spec.spatial_dims == 3


def test_new_model_refuses_overwrite_and_bad_names(model2d: Path, tmp_path: Path, capsys) -> None:
    assert main(["new-model", str(model2d), "--dims", "2", "--labels", "a"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["new-model", str(tmp_path / "x.pt"), "--dims", "2", "--labels", "a"]) == 2
    assert main(["new-model", str(tmp_path / "y.safetensors"), "--dims", "2", "--labels", ","]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and "labels" in err


def test_predict_writes_labels_in_input_geometry(model2d: Path, tmp_path: Path, capsys) -> None:
    image = _image(tmp_path / "scan.nii.gz")
    out, unc = tmp_path / "seg.nii.gz", tmp_path / "unc.nii.gz"
    code = main(
        [
            "predict",
            str(model2d),
            str(image),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--batch-size",
            "4",
            "--uncertainty",
            str(unc),
        ]
    )
    assert code == 0, capsys.readouterr().err
    src, seg, u = nib.load(image), nib.load(out), nib.load(unc)
    assert seg.shape == src.shape and u.shape == src.shape
    np.testing.assert_allclose(seg.affine, src.affine, atol=1e-6)
    assert seg.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2}


@pytest.mark.parametrize(
    ("which", "text"),
    [
        ("model", "no such model file"),
        ("image", "no such file"),
        ("pickle", "pickle"),
        ("out", "must end in"),
    ],
)
def test_predict_bad_inputs_exit_2(which: str, text: str, model2d: Path, tmp_path: Path, capsys):
    import torch

    image = _image(tmp_path / "scan.nii.gz")
    model, out = str(model2d), str(tmp_path / "seg.nii.gz")
    if which == "model":
        model = str(tmp_path / "missing.safetensors")
    elif which == "image":
        image = tmp_path / "missing.nii.gz"
    elif which == "pickle":
        model = str(tmp_path / "evil.safetensors")
        torch.save({"w": torch.zeros(1)}, model)
    else:
        out = str(tmp_path / "seg.png")
    assert main(["predict", model, str(image), "-o", out, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert text in err and err.count("\n") == 1 and "Traceback" not in err


def test_predict_unavailable_device_exit_2(model2d: Path, tmp_path: Path, capsys) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    image = _image(tmp_path / "scan.nii.gz")
    code = main(
        ["predict", str(model2d), str(image), "-o", str(tmp_path / "s.nii.gz"), "--device", "cuda"]
    )
    assert code == 2 and "cuda" in capsys.readouterr().err


def test_cli_module_imports_no_torch() -> None:
    import subprocess
    import sys

    code = "import sys, napari_unet.cli._model_cmds; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_new_model_defaults_to_the_recommended_full_resolution_unet(tmp_path):
    from napari_unet.models.files import read_model_header

    out = tmp_path / "rec.safetensors"
    assert main(["new-model", str(out), "--dims", "2", "--labels", "wm", "--modality", "MR"]) == 0
    spec = read_model_header(out)["spec"]
    assert spec.arch == "classic_unet"
    assert spec.arch_args["features"][0] == 16  # narrow, full resolution
    assert spec.context_slices == 1 and spec.in_channels == 3
