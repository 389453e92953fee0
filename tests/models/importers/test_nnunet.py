"""nnU-Net v2 results folders in: agreement with nnUNetPredictor, axes, checkpoints."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from tests.models.importers import factory as F
from tests.models.importers.conftest import (
    NN_KERNELS,
    NN_STRIDES,
    NN_TILED_PATCH,
    NN_TILED_SPACINGS,
    needs_dna,
    needs_nnunet,
    nnunet_network,
)

from napari_unet.errors import ModelFileError
from napari_unet.evaluation.metrics import dice_per_class, mean_dice
from napari_unet.inference.orientation import predict_oriented_steps
from napari_unet.inference.preprocess import normalization_params
from napari_unet.inference.tiling import sliding_steps
from napari_unet.io.nifti import load_nifti
from napari_unet.jobs import run_job
from napari_unet.models.files import load_model
from napari_unet.models.importers import import_model, read_foreign


def nnunet_prediction(folder, nifti, out):
    """nnU-Net's own pipeline: SimpleITK reading, its preprocessing and predictor, writing."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)  # fmt: skip
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,))
    image, props = SimpleITKIO().read_images([str(nifti)])
    seg = predictor.predict_single_npy_array(image, props, None, None, False)
    SimpleITKIO().write_seg(seg, str(out), props)
    return load_nifti(out)


@needs_nnunet
@pytest.mark.slow
def test_prediction_agrees_with_nnunet_predictor(nnunet_trained, ct4, tmp_path):
    net, plans, nifti = nnunet_trained
    folder = F.write_nnunet(tmp_path, net, plans)
    reference = nnunet_prediction(folder, nifti, tmp_path / "nnunet.nii.gz")
    model = import_model(folder.parent, tmp_path / "m.safetensors")  # the dataset folder
    volume = load_nifti(nifti)
    pred = run_job(predict_oriented_steps(load_model(model), None, volume, device="cpu"))
    dice = dice_per_class(pred.labels.array, reference.array, 4)
    assert mean_dice(dice) >= 0.99, dice
    np.testing.assert_array_equal(pred.labels.affine, volume.affine)
    np.testing.assert_allclose(reference.affine, volume.affine, atol=1e-5)
    assert max(dice_per_class(pred.labels.array, ct4[1].array, 4)) > 0.6  # a model, not noise


def tiled_agreement(nnunet_tiled, spacing, tmp_path):
    """Ours and nnUNetPredictor on the `nnunet_tiled` scan with plans of ``spacing``
    (nnU-Net's z, y, x): (our Prediction, nnU-Net's labels, Dice between them, the scan)."""
    net, props, image, _labels, nifti = nnunet_tiled
    plans = F.nnunet_plans(patch=NN_TILED_PATCH, spacing=spacing, features=[8, 16, 32],
                           kernels=NN_KERNELS, strides=NN_STRIDES, properties=props)  # fmt: skip
    folder = F.write_nnunet(tmp_path, net, plans)
    reference = nnunet_prediction(folder, nifti, tmp_path / "nnunet.nii.gz")
    np.testing.assert_allclose(reference.affine, image.affine, atol=1e-5)
    model = load_model(import_model(folder, tmp_path / "m.safetensors"))
    assert model.spec.inference_style == "nnunet"
    pred = run_job(predict_oriented_steps(model, None, image, device="cpu"))
    np.testing.assert_array_equal(pred.labels.affine, image.affine)
    assert pred.labels.shape == image.shape
    return pred, reference.array, dice_per_class(pred.labels.array, reference.array, 4), image


@needs_nnunet
@pytest.mark.slow
def test_several_windows_per_axis_agree_with_nnunet_predictor(nnunet_tiled, tmp_path):
    """Tiles at nnU-Net's positions with its gaussian: an instance-normalised network's
    answer depends on where the tiles lie (stride-aligned tiles gave Dice 0.72)."""
    pred, reference, dice, image = tiled_agreement(nnunet_tiled, NN_TILED_SPACINGS["native"],
                                                   tmp_path)  # fmt: skip
    assert pred.info["model_grid"] == list(image.shape)  # no resampling here
    windows = [len(sliding_steps(n, p)) for n, p in zip(image.shape, (32, 32, 8), strict=True)]
    assert min(windows) >= 2 and pred.info["n_tiles"] == np.prod(windows) >= 12, windows
    assert min(dice) >= 0.99, dice
    truth = dice_per_class(reference, nnunet_tiled[3].array, 4)
    assert mean_dice(truth) > 0.8, truth  # a segmenter: agreement is not about near-ties


@needs_nnunet
@pytest.mark.slow
@pytest.mark.parametrize("name", ["coarser", "anisotropic"])
def test_resampled_prediction_agrees_with_nnunet_predictor(nnunet_tiled, tmp_path, name):
    """Plans spacing other than the scan's: order-3 splines in (slice by slice when
    anisotropic), logits back linearly before the argmax, several windows."""
    pred, reference, dice, image = tiled_agreement(nnunet_tiled, NN_TILED_SPACINGS[name],
                                                   tmp_path)  # fmt: skip
    assert pred.info["model_grid"] != list(image.shape) and pred.info["n_tiles"] >= 4
    assert min(dice) >= 0.99, dice
    truth = dice_per_class(reference, nnunet_tiled[3].array, 4)
    assert mean_dice(truth) > 0.8, truth


@needs_dna
def test_axis_convention_matches_nnunet_arrays(tmp_path):
    """Our (i, j, k) array through the import == nnU-Net's net on array.transpose(2, 1, 0)."""
    torch.manual_seed(1)
    net = nnunet_network().eval()
    spacing = [12.0, 6.4, 6.4]  # nnU-Net's (z, y, x)
    plans = F.nnunet_plans(patch=[8, 32, 48], spacing=spacing, features=[8, 16, 32],
                           kernels=NN_KERNELS, strides=NN_STRIDES,
                           properties={"mean": 40, "std": 30, "percentile_00_5": -100,
                                       "percentile_99_5": 200})  # fmt: skip
    spec, _sd, _ = read_foreign(F.write_nnunet(tmp_path, net, plans))
    assert spec.arch_args["axis_order"] == [2, 1, 0]
    assert spec.patch_size == (48, 32, 8) and spec.target_spacing == (6.4, 6.4, 12.0)
    ours = load_model(import_model(tmp_path / "Dataset501_Phantom", tmp_path / "m.safetensors"))
    x = torch.randn(1, 1, 48, 32, 8)  # (i, j, k)
    with torch.no_grad():
        expected = net(x.permute(0, 1, 4, 3, 2)).permute(0, 1, 4, 3, 2)
        torch.testing.assert_close(ours.model(x), expected)


@needs_dna
def test_transpose_forward_and_old_plans_layout(tmp_path):
    """TotalSegmentator-era plans (no 'architecture') and a transpose_forward of nnU-Net."""
    torch.manual_seed(2)
    net = nnunet_network().eval()
    props = {"mean": 40, "std": 30, "percentile_00_5": -100, "percentile_99_5": 200}
    plans = F.nnunet_plans(patch=[8, 32, 48], spacing=[12.0, 6.4, 6.4], features=[8, 16, 32],
                           kernels=NN_KERNELS, strides=NN_STRIDES, properties=props,
                           transpose_forward=[0, 2, 1], old_format=True)  # fmt: skip
    spec, _, _ = read_foreign(F.write_nnunet(tmp_path, net, plans))
    # nnU-Net axis m is our axis 2 - tf[m]: (z, x, y) -> our (k, i, j)
    assert spec.arch_args["axis_order"] == [2, 0, 1]
    assert spec.patch_size == (32, 48, 8) and spec.target_spacing == (6.4, 6.4, 12.0)
    loaded = load_model(import_model(tmp_path / "Dataset501_Phantom", tmp_path / "m.safetensors"))
    x = torch.randn(1, 1, 32, 48, 8)
    with torch.no_grad():
        expected = net(x.permute(0, 1, 4, 2, 3)).permute(0, 1, 3, 4, 2)
        torch.testing.assert_close(loaded.model(x), expected)


def test_ct_normalisation_is_nnunets():
    """CTNormalization (clip to foreground percentiles, z-score) = our "ct" mode exactly."""
    props = {"mean": 48.0, "std": 31.5, "percentile_00_5": -80.0, "percentile_99_5": 210.0}
    plans = {"foreground_intensity_properties_per_channel": {"0": props}}
    from napari_unet.models.importers.nnunet import _normalization

    norm, _ = _normalization({"normalization_schemes": ["CTNormalization"]}, plans, None, "p")
    x = np.random.default_rng(0).normal(30, 200, (20, 20, 5)).astype(np.float32)
    p = normalization_params(x, norm)
    ours = np.clip(x, p.lo, p.hi) * p.scale + p.offset
    expected = (np.clip(x, -80.0, 210.0) - 48.0) / 31.5
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


@needs_dna
def test_checkpoint_needs_only_the_allowed_globals(tmp_path):
    """A checkpoint saved as nnUNetTrainer saves it: plain weights_only refuses it (numpy
    scalars in its log), our scoped allowlist reads it."""
    from napari_unet.models.importers.nnunet import safe_globals

    net = nnunet_network()
    buffer = io.BytesIO()
    torch.save(F.nnunet_checkpoint(net, {}, F.nnunet_dataset()), buffer)
    with pytest.raises(Exception, match="numpy"):
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    with torch.serialization.safe_globals(safe_globals()):
        ck = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    assert set(ck["network_weights"]) == set(net.state_dict())
    left = torch.serialization.get_safe_globals()  # nothing of ours left allowed globally
    assert not any(g in left for g in safe_globals() if not isinstance(g, tuple))


@needs_dna
def test_class_subset_keeps_liver_and_spleen(tmp_path):
    """As with a TotalSegmentator task: keep two classes of several, renamed; exact cut."""
    torch.manual_seed(3)
    net = nnunet_network().eval()
    props = {"mean": 40, "std": 30, "percentile_00_5": -100, "percentile_99_5": 200}
    plans = F.nnunet_plans(patch=[8, 32, 48], spacing=[12.0, 6.4, 6.4], features=[8, 16, 32],
                           kernels=NN_KERNELS, strides=NN_STRIDES, properties=props)  # fmt: skip
    folder = F.write_nnunet(tmp_path, net, plans)
    path = import_model(folder, tmp_path / "m.safetensors", labels="liver,organ=spleen")
    loaded = load_model(path)
    assert loaded.spec.labels == ["liver", "organ"]
    assert loaded.lineage["imported"]["head_cut"] == "exact"
    x = torch.randn(1, 1, 48, 32, 8)
    with torch.no_grad():
        full = net(x.permute(0, 1, 4, 3, 2)).permute(0, 1, 4, 3, 2)
        torch.testing.assert_close(loaded.model(x), full[:, [0, 1, 3]])


@needs_dna
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p, d: d["labels"].update(organs=[1, 2]), "region-based"),
        (lambda p, d: p["configurations"]["3d_fullres"].update(previous_stage="3d_lowres"),
         "cascade"),
        (lambda p, d: p.update(image_reader_writer="Tiff3DIO"), "image reader"),
        (lambda p, d: p["configurations"]["3d_fullres"].update(
            normalization_schemes=["RescaleTo01Normalization"]), "normalization scheme"),
        (lambda p, d: d.update(channel_names={"0": "T1", "1": "T2"}), "2 input channels"),
    ],
)  # fmt: skip
def test_unsupported_folders_are_refused(tmp_path, change, message):
    net = nnunet_network()
    props = {"mean": 40, "std": 30, "percentile_00_5": -100, "percentile_99_5": 200}
    plans = F.nnunet_plans(patch=[8, 32, 48], spacing=[12.0, 6.4, 6.4], features=[8, 16, 32],
                           kernels=NN_KERNELS, strides=NN_STRIDES, properties=props)  # fmt: skip
    dataset = F.nnunet_dataset()
    change(plans, dataset)
    folder = F.write_nnunet(tmp_path, net, plans, dataset)
    with pytest.raises(ModelFileError, match=message):
        read_foreign(folder)


@needs_dna
def test_folds_are_chosen_explicitly(tmp_path):
    net = nnunet_network()
    props = {"mean": 40, "std": 30, "percentile_00_5": -100, "percentile_99_5": 200}
    plans = F.nnunet_plans(patch=[8, 32, 48], spacing=[12.0, 6.4, 6.4], features=[8, 16, 32],
                           kernels=NN_KERNELS, strides=NN_STRIDES, properties=props)  # fmt: skip
    F.write_nnunet(tmp_path, net, plans, fold=0)
    folder = F.write_nnunet(tmp_path, net, plans, fold=3)
    with pytest.raises(ModelFileError, match="choose one with --fold"):
        read_foreign(folder)
    _, _, lineage = read_foreign(folder, fold=3)
    assert lineage["imported"]["fold"] == "3" and lineage["imported"]["format"] == "nnunet_v2"
    with pytest.raises(ModelFileError, match=r"checkpoint_best\.pth: missing"):
        read_foreign(folder, fold=0, checkpoint="best")


@needs_dna
def test_2d_configuration_slices_along_k_with_its_in_plane_order(tmp_path):
    """nnU-Net's 2d model sees slices of its (z, y, x) array: our k, with (j, i) in-plane."""
    net, folder = F.write_nnunet_2d(tmp_path, patch=[32, 48], spacing=[6.4, 3.2])
    loaded = load_model(import_model(folder, tmp_path / "m.safetensors"))
    spec = loaded.spec
    assert (spec.spatial_dims, spec.slice_axis, spec.arch_args["axis_order"]) == (2, 2, [1, 0])
    assert spec.patch_size == (48, 32) and spec.target_spacing == (3.2, 6.4, None)
    x = torch.randn(1, 1, 48, 32)  # (i, j) of one k slice
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), net(x.transpose(2, 3)).transpose(2, 3))
