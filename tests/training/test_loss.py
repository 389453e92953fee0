from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.training.loss import MaskedDiceCELoss, class_weights


@pytest.mark.parametrize("dims", [2, 3])
def test_unlabelled_voxels_contribute_nothing(dims):
    torch.manual_seed(0)
    shape = (2, 3) + (6,) * dims
    logits = torch.randn(shape, requires_grad=True)
    target = torch.randint(0, 3, (2,) + (6,) * dims)
    mask = torch.rand((2,) + (6,) * dims) > 0.6
    loss_fn = MaskedDiceCELoss(3, class_weights=[0.5, 1.0, 2.0])
    loss = loss_fn(logits, target, mask)
    loss.backward()
    # changing the labels where unlabelled changes nothing ...
    other = torch.where(mask, target, (target + 1) % 3)
    assert torch.allclose(loss, loss_fn(logits, other, mask))
    # ... and no gradient reaches the logits of unlabelled voxels
    grad = logits.grad.abs().sum(1)
    assert grad[~mask].max() == 0
    assert grad[mask].max() > 0
    # the mask matters (guards against a loss that ignores it)
    assert not torch.allclose(loss, loss_fn(logits, other, torch.ones_like(mask)))


def test_empty_mask_gives_zero_with_gradient():
    logits = torch.randn(1, 2, 4, 4, requires_grad=True)
    loss = MaskedDiceCELoss(2)(logits, torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 4))
    loss.backward()
    assert float(loss) == 0.0


def test_class_weights_favour_rare_classes():
    w = class_weights([900, 90, 10])
    assert w[0] < w[1] < w[2]
    assert np.isclose(np.dot(w, [900, 90, 10]) / 1000, 1.0)
    assert class_weights([10, 0])[1] == pytest.approx(class_weights([10, 0])[0] * 10)
