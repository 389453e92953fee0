"""A model that expects another orientation (e.g. an imported RAS model) runs and trains
in the loop on the scan reoriented by flips and transposes, the output on the scan's grid."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from napari_unet.inference.orientation import predict_oriented_steps
from napari_unet.io.volume import Volume
from napari_unet.jobs import run_job
from napari_unet.loop import Loop
from napari_unet.models import build_model
from napari_unet.models.files import LoadedModel
from tests.training.conftest import blob_pair, tiny_spec


def _lps_scan() -> tuple[Volume, Volume]:
    image, truth = blob_pair(shape=(32, 32, 8))
    affine = np.array([[-1.0, 0, 0, 10], [0, -1.0, 0, 5], [0, 0, 2.0, -3], [0, 0, 0, 1]])
    return image.with_array(image.array, affine=affine), truth.with_array(
        truth.array, affine=affine
    )


def _ras_model() -> LoadedModel:
    torch.manual_seed(0)
    spec = replace(tiny_spec(), orientation="RAS")
    return LoadedModel(build_model(spec).eval(), spec, {}, "0" * 64)


def test_loop_prediction_of_a_ras_model_is_the_oriented_prediction():
    image, _ = _lps_scan()
    model = _ras_model()
    loop = Loop(image, device="cpu")
    loop.set_model(model)
    ours = run_job(loop.predict(only_unreviewed=False, uncertainty=True))
    expected = run_job(predict_oriented_steps(model, None, image, device="cpu", uncertainty=True))
    np.testing.assert_array_equal(ours.uncertainty.array, expected.uncertainty.array)
    np.testing.assert_array_equal(ours.labels.affine, image.affine)
    assert ours.info["orientation"] == {"model": "RAS", "scan": "LPS"}
    # the network saw the scan flipped: running it on the scan as stored differs
    plain = replace(model.spec, orientation=None)
    unflipped = run_job(_plain_prediction(model, plain, image))
    assert not np.allclose(unflipped.uncertainty.array, ours.uncertainty.array)


def _plain_prediction(model, spec, image):
    from napari_unet.inference.predict import predict_steps

    return predict_steps(model.model, spec, image, device="cpu", uncertainty=True)


def test_fine_tuning_a_ras_model_in_the_loop_runs(tmp_path):
    image, truth = _lps_scan()
    loop = Loop(image, models_folder=tmp_path, device="cpu")
    loop.set_model(_ras_model())
    loop.labels[..., 3] = truth.array[..., 3]
    loop.mark_reviewed([3])
    trained = run_job(loop.finetune(steps=2))
    assert trained.model.spec.orientation == "RAS"
    assert trained.metrics.trained_slices == [3]
