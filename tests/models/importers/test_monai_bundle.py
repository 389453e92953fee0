"""MONAI bundles in, our model files out: agreement with MONAI, mapping, every network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.models.importers import factory as F

from napari_unet.errors import ModelFileError
from napari_unet.evaluation.metrics import dice_per_class, mean_dice
from napari_unet.inference.orientation import predict_oriented_steps
from napari_unet.io.nifti import load_nifti
from napari_unet.jobs import run_job
from napari_unet.models.files import load_model
from napari_unet.models.importers import import_model, read_foreign


def monai_bundle_inference(config: dict, state_dict: dict, nifti) -> np.ndarray:
    """MONAI's own inference of the test's trusted config: labels on the input grid."""
    from monai.bundle import ConfigParser

    parser = ConfigParser(config)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(state_dict)
    net.eval()
    data = parser.get_parsed_content("preprocessing")({"image": str(nifti)})
    with torch.no_grad():
        data["pred"] = parser.get_parsed_content("inferer")(data["image"][None], net)[0]
    out = parser.get_parsed_content("postprocessing")(data)["pred"]
    return np.asarray(out[0]).astype(np.uint8)


def ours(model_path, nifti) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    volume = load_nifti(nifti)
    pred = run_job(predict_oriented_steps(load_model(model_path), None, volume, device="cpu"))
    return pred.labels.array, pred.labels.affine, volume.affine


@pytest.mark.slow
def test_prediction_agrees_with_monai_bundle_inference(monai_trained, ct4, tmp_path):
    config, sd, nifti = monai_trained
    bundle = F.write_bundle(tmp_path / "bundle", config, sd)
    out = import_model(bundle, tmp_path / "m.safetensors")
    labels, affine, input_affine = ours(out, nifti)
    reference = monai_bundle_inference(config, sd, nifti)
    dice = dice_per_class(labels, reference, 4)
    assert mean_dice(dice) >= 0.99, dice
    np.testing.assert_array_equal(affine, input_affine)
    assert max(dice_per_class(labels, ct4[1].array, 4)) > 0.6  # a model, not noise
    spec = load_model(out).spec
    assert spec.orientation == "RAS" and spec.labels == F.LABELS
    assert spec.normalization.mode == "ct" and spec.normalization.window == (-200.0, 300.0)
    assert spec.target_spacing == pytest.approx(ct4[0].spacing)
    assert spec.patch_size == (48, 36, 12)


@pytest.mark.slow
def test_zip_and_yaml_bundles_give_the_same_model(monai_trained, tmp_path):
    config, sd, _nifti = monai_trained
    folder = F.write_bundle(tmp_path / "b", config, sd)
    archive = F.zip_folder(folder, tmp_path / "b.zip", top="spleen_ct_segmentation")
    yaml_bundle = F.write_bundle(tmp_path / "y", config, sd, config_name="inference.yaml")
    a = import_model(folder, tmp_path / "a.safetensors")
    b = import_model(archive, tmp_path / "b.safetensors")
    c = import_model(yaml_bundle, tmp_path / "c.safetensors")
    hashes = {load_model(p).hash for p in (a, b, c)}
    assert len(hashes) == 1
    lineage = load_model(b).lineage["imported"]
    assert lineage["format"] == "monai_bundle" and "models/model.pt" in lineage["files"]
    assert len(lineage["files"]["models/model.pt"]) == 64


def _unet_bundle(tmp_path, config_changes=None, meta=None, **transforms):
    torch.manual_seed(0)
    from monai.networks.nets import UNet

    net = UNet(3, 1, 3, channels=[4, 8], strides=[2], num_res_units=0)
    config = F.zoo_config(
        {"_target_": "monai.networks.nets.UNet", "spatial_dims": 3, "in_channels": 1,
         "out_channels": 3, "channels": [4, 8], "strides": [2], "num_res_units": 0},
        transforms.get("transforms", F.ct_transforms([1.5, 1.5, 2.0])),
        [32, 32, 16],
    )  # fmt: skip
    config.update(config_changes or {})
    return F.write_bundle(tmp_path / "bundle", config, net.state_dict(),
                          meta=meta or F.metadata(["liver", "spleen"]))  # fmt: skip


def test_references_to_literal_keys_are_followed(tmp_path):
    bundle = _unet_bundle(tmp_path, {"num_classes": 3, "patch": [32, 32, 16],
                                     "sizes": {"levels": [4, 8]}})  # fmt: skip
    config = json.loads((bundle / "configs/inference.json").read_text())
    config["network_def"]["out_channels"] = "@num_classes"
    config["network_def"]["channels"] = "@sizes#levels"
    config["inferer"]["roi_size"] = "@patch"
    (bundle / "configs/inference.json").write_text(json.dumps(config))
    spec, _, _ = read_foreign(bundle)
    assert spec.out_channels == 3 and spec.arch_args["channels"] == [4, 8]
    assert spec.patch_size == (32, 32, 16)


@pytest.mark.parametrize(
    ("transform", "expect"),
    [
        ({"_target_": "ScaleIntensityRanged", "keys": "image", "a_min": -57, "a_max": 164,
          "b_min": 0.0, "b_max": 1.0, "clip": True},
         {"mode": "ct", "window": (-57.0, 164.0), "output_range": (0.0, 1.0)}),
        ({"_target_": "monai.transforms.NormalizeIntensityd", "keys": "image", "nonzero": True},
         {"mode": "mr", "percentiles": (0.0, 100.0), "nonzero": True}),
    ],
)  # fmt: skip
def test_preprocessing_maps_onto_the_spec(tmp_path, transform, expect):
    transforms = [
        {"_target_": "LoadImaged", "keys": ["image"]},
        {"_target_": "EnsureChannelFirstd", "keys": ["image"]},
        {"_target_": "Orientationd", "keys": ["image"], "axcodes": "LPS"},
        {"_target_": "Spacingd", "keys": ["image"], "pixdim": [1.5, 1.5, -1], "mode": "bilinear"},
        transform,
        {"_target_": "CastToTyped", "keys": ["image"], "dtype": "float32"},
        {"_target_": "EnsureTyped", "keys": ["image"]},
    ]
    spec, _, _ = read_foreign(_unet_bundle(tmp_path, transforms=transforms))
    assert spec.orientation == "LPS"
    assert spec.target_spacing == (1.5, 1.5, None)
    assert spec.labels == ["liver", "spleen"] and spec.modality == "CT"
    for key, value in expect.items():
        assert getattr(spec.normalization, key) == value


def test_unsupported_transforms_are_all_listed(tmp_path):
    transforms = [*F.ct_transforms(None), {"_target_": "CropForegroundd", "keys": "image"},
                  {"_target_": "ScaleIntensityd", "keys": "image"}]  # fmt: skip
    with pytest.raises(ModelFileError, match="CropForegroundd, ScaleIntensityd"):
        read_foreign(_unet_bundle(tmp_path, transforms=transforms))


def _tiny(arch: str):
    """A tiny MONAI network of each allowed class, its network_def and an input size."""
    from monai.networks import nets

    args: dict = {
        "UNet": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 2},
        "BasicUNet": {"features": [4, 4, 8, 8, 16, 4]},
        "AttentionUnet": {"channels": [4, 8, 16], "strides": [2, 2]},
        "SegResNet": {"init_filters": 8, "blocks_down": [1, 1, 1], "blocks_up": [1, 1]},
        "DynUNet": {"kernel_size": [3, 3, [3, 3, 1]], "strides": [1, 2, 2],
                    "upsample_kernel_size": [2, 2], "filters": [4, 8, 16],
                    "deep_supervision": True, "deep_supr_num": 1},
        "SwinUNETR": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
        "UNETR": {"img_size": [16, 16, 16], "feature_size": 4, "hidden_size": 24,
                  "mlp_dim": 48, "num_heads": 2},
    }[arch]  # fmt: skip
    net = getattr(nets, arch)(spatial_dims=3, in_channels=1, out_channels=3, **args)
    definition = {"_target_": arch, "spatial_dims": 3, "in_channels": 1, "out_channels": 3, **args}
    size = {"SwinUNETR": 64, "BasicUNet": 32}.get(arch, 16)
    return net, definition, size


@pytest.mark.parametrize(
    "arch", ["UNet", "BasicUNet", "AttentionUnet", "SegResNet", "DynUNet", "SwinUNETR", "UNETR"]
)
def test_every_allowed_network_imports_with_its_weights(tmp_path, arch):
    torch.manual_seed(0)
    net, definition, size = _tiny(arch)
    bundle = F.write_bundle(
        tmp_path / "b", F.zoo_config(definition, F.ct_transforms(None), [size] * 3),
        net.state_dict(), meta=F.metadata(["a", "b"]),
    )  # fmt: skip
    loaded = load_model(import_model(bundle, tmp_path / "m.safetensors"))
    x = torch.randn(1, 1, size, size, size)
    net.eval()
    with torch.no_grad():
        expected = net(x)
        got = loaded.model(x)
    torch.testing.assert_close(got, expected)
    if arch == "DynUNet":
        assert not any(k.startswith("deep_supervision_heads") for k in loaded.model.state_dict())


def test_class_subset_cuts_the_head_exactly(tmp_path):
    torch.manual_seed(0)
    bundle = _unet_bundle(tmp_path)  # UNet without residual units: the head is one conv
    full = load_model(import_model(bundle, tmp_path / "full.safetensors"))
    sub = load_model(import_model(bundle, tmp_path / "sub.safetensors", labels="organ=spleen"))
    assert sub.spec.labels == ["organ"] and sub.spec.colors == [full.spec.colors[1]]
    assert sub.lineage["imported"]["head_cut"] == "exact"
    assert sub.lineage["imported"]["classes"] == {"organ": 2}
    x = torch.randn(1, 1, 32, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(sub.model(x), full.model(x)[:, [0, 2]])
    by_value = load_model(import_model(bundle, tmp_path / "v.safetensors", labels="b=2,a=1"))
    with torch.no_grad():
        torch.testing.assert_close(by_value.model(x), full.model(x)[:, [0, 2, 1]])


def test_class_subset_of_a_residual_unet_is_marked_approximate(tmp_path):
    torch.manual_seed(0)
    net, definition, _size = _tiny("UNet")
    bundle = F.write_bundle(tmp_path / "b", F.zoo_config(definition, [], [16] * 3),
                            net.state_dict(), meta=F.metadata(["a", "b"]))  # fmt: skip
    sub = load_model(import_model(bundle, tmp_path / "s.safetensors", labels="b"))
    assert sub.lineage["imported"]["head_cut"] == "approximate"
    with pytest.raises(Exception, match="not a class of this model"):
        import_model(bundle, tmp_path / "x.safetensors", labels="liver")


def test_torchscript_weights_are_read_as_data(tmp_path):
    """A bundle shipping only models/model.ts: its tensors are read, its code never run."""
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = UNet(3, 1, 3, channels=[4, 8, 16], strides=[2, 2], num_res_units=1, norm="batch")
    net.eval()
    definition = {
        "_target_": "UNet",
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 3,
        "channels": [4, 8, 16],
        "strides": [2, 2],
        "num_res_units": 1,
        "norm": "batch",
    }
    bundle = F.write_bundle(tmp_path / "b", F.zoo_config(definition, [], [16] * 3), None,
                            meta=F.metadata(["a", "b"]))  # fmt: skip
    torch.jit.save(torch.jit.script(net), str(bundle / "models" / "model.ts"))
    loaded = load_model(import_model(bundle, tmp_path / "m.safetensors"))
    assert loaded.lineage["imported"]["files"].keys() >= {"models/model.ts"}
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), net(x))


def test_a_zip_without_metadata_gets_default_class_names(tmp_path):
    bundle = _unet_bundle(tmp_path)
    (bundle / "configs" / "metadata.json").unlink()
    archive = F.zip_folder(bundle, tmp_path / "b.zip", top="some_bundle")
    spec, _, lineage = read_foreign(archive)
    assert spec.labels == ["class_1", "class_2"]
    assert set(lineage["imported"]["files"]) == {"configs/inference.json", "models/model.pt"}
