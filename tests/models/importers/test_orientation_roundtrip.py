"""Orientation by flips and transposes (exact back), the bundle round trip, the CLI."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from tests.conftest import AFFINES

from napari_unet.cli import main
from napari_unet.inference.orientation import (
    Reorientation,
    predict_oriented_steps,
    to_model_orientation,
)
from napari_unet.inference.predict import predict_volume
from napari_unet.io.volume import Volume
from napari_unet.jobs import run_job
from napari_unet.models import build_model, preset_spec, save_model
from napari_unet.models.files import load_model
from napari_unet.models.importers import export_bundle, import_model
from napari_unet.models.importers.bundle_export import inference_config


@pytest.mark.parametrize("name", sorted(AFFINES))
@pytest.mark.parametrize("codes", ["RAS", "LPS", "SAR", "IPL"])
def test_reorientation_is_exact_and_keeps_world_positions(name, codes):
    affine = AFFINES[name]
    array = np.random.default_rng(0).random((5, 6, 7))
    r = Reorientation.between(affine, array.shape, codes)
    moved = r.apply(array)
    assert "".join(nib.aff2axcodes(r.affine(affine))) == codes
    np.testing.assert_array_equal(r.invert(moved), array)
    new_affine = r.affine(affine)
    for ijk in [(0, 0, 0), (4, 5, 6), (1, 3, 2)]:
        m = [r.shape[r.perm[a]] - 1 - ijk[r.perm[a]] if r.flip[a] else ijk[r.perm[a]]
             for a in range(3)]  # fmt: skip
        assert moved[tuple(m)] == array[ijk]
        np.testing.assert_allclose(new_affine @ [*m, 1], affine @ [*ijk, 1], atol=1e-9)
    axis = r.axis(2)
    assert r.indices(2, [0, 6]) == sorted([0, 6] if not r.flip[axis] else [6, 0])


def _ras_spec(**changes):
    spec = preset_spec("unet", spatial_dims=3, labels=["a", "b"], channels=[4, 8],
                       strides=[2], patch_size=(16, 16, 16))  # fmt: skip
    from dataclasses import replace

    return replace(spec, orientation="RAS", **changes)


def test_a_ras_model_sees_the_scan_in_ras_and_answers_on_its_grid():
    torch.manual_seed(0)
    spec = _ras_spec()
    net = build_model(spec).eval()
    affine = AFFINES["PSR_oblique"]
    scan = Volume(np.random.default_rng(1).normal(0, 300, (20, 24, 12)).astype(np.float32), affine)
    got = run_job(predict_oriented_steps(net, spec, scan, device="cpu", uncertainty=True))
    moved, _, _, _, r = to_model_orientation(scan, spec)
    assert moved.orientation == "RAS" and r is not None
    from dataclasses import replace

    plain = predict_volume(net, replace(spec, orientation=None), moved, device="cpu")
    np.testing.assert_array_equal(got.labels.array, r.invert(plain.labels.array))
    np.testing.assert_array_equal(got.labels.affine, scan.affine)
    assert got.labels.shape == scan.shape and got.uncertainty.shape == scan.shape
    assert got.info["orientation"] == {"model": "RAS", "scan": scan.orientation}


def _ct_model(tmp_path, **spec_changes):
    torch.manual_seed(0)
    spec = preset_spec("resunet", spatial_dims=3, labels=["liver", "kidney", "spleen"],
                       channels=[4, 8, 16], strides=[2, 2], patch_size=(32, 32, 16),
                       target_spacing=(8.0, 8.0, 10.0))  # fmt: skip
    from dataclasses import replace

    spec = replace(spec, orientation="RAS", **spec_changes)
    path = tmp_path / "ours.safetensors"
    save_model(path, build_model(spec), spec, {"parent": None})
    return path


def test_round_trip_export_import_gives_identical_predictions(tmp_path, ct4):
    path = _ct_model(tmp_path)
    bundle = export_bundle(path, tmp_path / "bundle")
    back = import_model(bundle, tmp_path / "back.safetensors")
    a, b = load_model(path), load_model(back)
    assert a.hash == b.hash
    same = {"name": "", "arch": "unet"}  # a resunet is MONAI's UNet with residual units
    assert b.spec.to_dict() | same == a.spec.to_dict() | same
    image = ct4[0]
    pa = run_job(predict_oriented_steps(a, None, image, device="cpu"))
    pb = run_job(predict_oriented_steps(b, None, image, device="cpu"))
    np.testing.assert_array_equal(pa.labels.array, pb.labels.array)
    meta = json.loads((bundle / "configs/metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"]["3"] == "spleen"


@pytest.mark.slow
def test_exported_bundle_runs_in_monai(tmp_path, ct4):
    """The exported config is a working MONAI bundle: its own parser and transforms run it."""
    from monai.bundle import ConfigParser

    from napari_unet.io.nifti import save_nifti

    path = _ct_model(tmp_path)
    bundle = export_bundle(path, tmp_path / "bundle")
    save_nifti(ct4[0], tmp_path / "ct.nii.gz")
    parser = ConfigParser()
    parser.read_config(bundle / "configs/inference.json")
    parser["bundle_root"] = str(bundle)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(bundle / "models/model.pt", weights_only=True))
    net.eval()
    data = parser.get_parsed_content("preprocessing")({"image": str(tmp_path / "ct.nii.gz")})
    with torch.no_grad():
        data["pred"] = parser.get_parsed_content("inferer")(data["image"][None], net)[0]
    parser["postprocessing"]["transforms"] = parser["postprocessing"]["transforms"][:3]
    out = np.asarray(parser.get_parsed_content("postprocessing")(data)["pred"][0])
    assert out.shape == ct4[0].shape and set(np.unique(out)) <= {0, 1, 2, 3}


def test_2d_context_models_are_not_exported(tmp_path):
    spec = preset_spec("unet", spatial_dims=2, labels=["a"], context_slices=1)
    with pytest.raises(ValueError, match="context"):
        inference_config(spec)


def test_cli_import_and_export(tmp_path, capsys):
    path = _ct_model(tmp_path)
    assert main(["export-bundle", str(path), str(tmp_path / "b")]) == 0
    capsys.readouterr()
    out = tmp_path / "m.safetensors"
    assert main(["import", str(tmp_path / "b"), str(out), "--labels", "organ=spleen",
                 "--json"]) == 0  # fmt: skip
    summary = json.loads(capsys.readouterr().out)
    assert summary["labels"] == ["organ"] and summary["format"] == "monai_bundle"
    assert summary["orientation"] == "RAS" and summary["classes"] == {"organ": 3}
    assert main(["import", str(tmp_path / "b"), str(out)]) == 2  # exists: no --overwrite
    assert "already exists" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "b"), str(out), "--overwrite",
                 "--orientation", "LPS"]) == 0  # fmt: skip
    assert load_model(out).spec.orientation == "LPS"
    assert main(["export-bundle", str(path), str(tmp_path / "b")]) == 2  # not empty
