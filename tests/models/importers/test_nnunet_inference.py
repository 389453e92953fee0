"""nnU-Net style prediction (`inference_style` "nnunet"): its parts against nnunetv2's
functions, the spec field in model files, slices and uncertainty."""

from __future__ import annotations

import json

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

from napari_unet.inference.predict import predict_volume
from napari_unet.inference.resampling import resample_image, resample_logits, separate_axis
from napari_unet.inference.tiling import nnunet_importance_map, sliding_steps
from napari_unet.models.files import load_model, read_model_header, save_model
from napari_unet.models.importers import import_model
from napari_unet.models.spec import ModelSpec, preset_spec

#: (spacing of the grid, spacing resampled to): 3D splines; slice by slice along the
#: coarse axis of the target; along the coarse axis of the source; two coarse axes.
SPACINGS = [
    ([6.0, 3.2, 3.2], [4.8, 4.0, 4.0]),
    ([6.0, 3.2, 3.2], [9.6, 2.4, 2.4]),
    ([2.0, 2.0, 7.0], [2.0, 2.0, 2.0]),
    ([3.0, 3.0, 0.8], [2.0, 2.0, 2.0]),
]


@needs_nnunet
@pytest.mark.parametrize(("current", "new"), SPACINGS)
def test_resampling_is_nnunets(current, new):
    """Data in (order 3, separate z) exactly, logits back (order 1) to float32 rounding."""
    from nnunetv2.preprocessing.resampling.default_resampling import (
        compute_new_shape,
        resample_data_or_seg_to_shape,
    )

    rng = np.random.default_rng(0)
    x = np.cumsum(rng.normal(size=(1, 20, 33, 31)), axis=1).astype(np.float32)
    shape = compute_new_shape(x.shape[1:], current, new)
    expected = resample_data_or_seg_to_shape(x, shape, current, new, False, 3, 0, None)
    ours = resample_image(x[0], shape, separate_axis(current, new))
    np.testing.assert_array_equal(ours, expected[0])
    logits = rng.normal(size=(4, *shape)).astype(np.float32)
    expected = resample_data_or_seg_to_shape(logits, x.shape[1:], new, current, False, 1, 0, None)
    back = resample_logits(torch.from_numpy(logits), x.shape[1:], separate_axis(new, current))
    np.testing.assert_allclose(back.numpy(), expected, atol=2e-6)
    part = resample_logits(torch.from_numpy(logits), x.shape[1:], separate_axis(new, current),
                           rows=(2, [0, 7, 30]))  # fmt: skip
    np.testing.assert_allclose(part.numpy(), back.numpy()[..., [0, 7, 30]], atol=1e-6)


@needs_nnunet
@pytest.mark.parametrize(
    ("shape", "patch"),
    [((24, 72, 96), (16, 40, 48)), ((110, 64, 13), (64, 64, 13)), ((129, 65, 100), (128, 64, 32))],
)
def test_tile_positions_and_gaussian_are_nnunets(shape, patch):
    from nnunetv2.inference.sliding_window_prediction import (
        compute_gaussian,
        compute_steps_for_sliding_window,
    )

    expected = compute_steps_for_sliding_window(shape, patch, 0.5)
    assert [sliding_steps(n, p) for n, p in zip(shape, patch, strict=True)] == expected
    cpu = torch.device("cpu")
    gaussian = compute_gaussian(patch, 1 / 8, 10, device=cpu).float()
    assert torch.equal(nnunet_importance_map(patch, cpu), gaussian)


def test_inference_style_in_model_files(tmp_path):
    """Kept in the file; files of format version 2 (no such field) read as None."""
    from napari_unet.models.build import build_model

    spec = preset_spec("unet", spatial_dims=3, labels=["liver"], patch_size=(16, 16, 16))
    spec.inference_style = "nnunet"
    path = tmp_path / "m.safetensors"
    save_model(path, build_model(spec), spec)
    header = read_model_header(path)
    assert header["spec"].inference_style == "nnunet" and header["format_version"] == 3
    old = header["spec"].to_dict()
    old.pop("inference_style")
    assert ModelSpec.from_dict(old).inference_style is None
    assert ModelSpec.from_json(json.dumps({**old, "inference_style": None})).inference_style is None
    with pytest.raises(ValueError, match="inference_style"):
        ModelSpec.from_dict({**old, "inference_style": "monai"})


def _untrained_import(tmp_path, spacing, *, seed=5):
    torch.manual_seed(seed)
    net = nnunet_network().eval()
    props = {"mean": 40, "std": 30, "percentile_00_5": -100, "percentile_99_5": 200}
    plans = F.nnunet_plans(patch=NN_TILED_PATCH, spacing=spacing, features=[8, 16, 32],
                           kernels=NN_KERNELS, strides=NN_STRIDES, properties=props)  # fmt: skip
    folder = F.write_nnunet(tmp_path, net, plans)
    return load_model(import_model(folder, tmp_path / "m.safetensors"))


@needs_dna
@pytest.mark.parametrize("axis", [0, 2])
def test_slices_and_uncertainty_match_the_whole_prediction(tmp_path, axis):
    """Only the tiles meeting the slices run; on them labels and uncertainty are the whole
    prediction's, zero elsewhere; voxels outside the nonzero box get label 0."""
    model = _untrained_import(tmp_path, NN_TILED_SPACINGS["coarser"])
    image, _ = F.small_ct(step=3)
    array = image.array.copy()
    array[:3] = 0  # outside nnU-Net's crop
    image = image.with_array(array)
    full = predict_volume(model, None, image, device="cpu", uncertainty=True)
    assert full.info["crop"][0] == [3, 64] and not full.labels.array[:3].any()
    unc = full.uncertainty.array
    assert unc.shape == image.shape and unc.min() >= 0 and unc.max() <= 1 and unc.max() > 0
    assert not unc[:3].any()
    plain = predict_volume(model, None, image, device="cpu")
    np.testing.assert_array_equal(plain.labels.array, full.labels.array)
    chosen = [0, 1, 2]
    part = predict_volume(model, None, image, device="cpu", uncertainty=True, slice_axis=axis,
                          slices=chosen)  # fmt: skip
    assert part.info["n_tiles"] < full.info["n_tiles"]
    keep = np.zeros(image.shape[axis], dtype=bool)
    keep[chosen] = True
    take = np.moveaxis(part.labels.array, axis, 0)
    np.testing.assert_array_equal(take[keep], np.moveaxis(full.labels.array, axis, 0)[keep])
    assert not take[~keep].any()
    part_unc = np.moveaxis(part.uncertainty.array, axis, 0)
    np.testing.assert_allclose(part_unc[keep], np.moveaxis(unc, axis, 0)[keep], atol=1e-5)
    assert not part_unc[~keep].any()


@needs_dna
def test_2d_configuration_predicts_slice_by_slice(tmp_path):
    """A 2d nnU-Net model: every k slice with 2D tiles; slices= gives the same slices."""
    _, folder = F.write_nnunet_2d(tmp_path, patch=[32, 32], spacing=[6.0, 6.0])
    model = load_model(import_model(folder, tmp_path / "m.safetensors"))
    image, _ = F.small_ct(step=3)
    full = predict_volume(model, None, image, device="cpu", uncertainty=True)
    assert full.labels.shape == image.shape and full.info["model_grid"] == [51, 38, 16]
    assert full.info["n_tiles"] == 16 * 2 * 3  # every slice, 2 × 3 tiles of 32 × 32
    part = predict_volume(model, None, image, device="cpu", slices=[2, 9])
    np.testing.assert_array_equal(part.labels.array[..., [2, 9]], full.labels.array[..., [2, 9]])
    assert part.info["n_tiles"] == 2 * 2 * 3 and not part.labels.array[..., :2].any()
