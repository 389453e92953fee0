"""Loss on sparse labels (the Dice score itself is `evaluation.metrics.dice_per_class`).

`MaskedDiceCELoss` is soft Dice (MONAI ``MaskedDiceLoss``, softmax, foreground classes,
computed over the whole batch) plus class-weighted cross-entropy, both restricted to the
labelled voxels: unlabelled voxels contribute nothing to either term, whatever label
value they hold (tested). MONAI's masked Dice multiplies prediction and one-hot target by
the mask after the softmax, so masked voxels vanish from numerator and denominator; the
cross-entropy uses PyTorch's ``ignore_index`` on them, so its weighted mean runs over the
labelled voxels only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

_IGNORE = -100


class MaskedDiceCELoss(torch.nn.Module):
    """Dice + cross-entropy over labelled voxels only.

    Args:
        n_classes: output channels (background included).
        class_weights: cross-entropy weight per class (length ``n_classes``), or None.
        dice_weight: factor of the Dice term.
        ce_weight: factor of the cross-entropy term.
        include_background: also score the background channel in Dice.
    """

    def __init__(
        self,
        n_classes: int,
        *,
        class_weights: Sequence[float] | None = None,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        include_background: bool = False,
    ) -> None:
        super().__init__()
        from monai.losses import MaskedDiceLoss

        self.n_classes = int(n_classes)
        self.dice = MaskedDiceLoss(
            include_background=include_background or n_classes == 1,
            softmax=True,
            batch=True,
            smooth_nr=1e-5,
            smooth_dr=1e-5,
        )
        w = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
        if w is not None and w.numel() != n_classes:
            raise ValueError(f"class_weights must have {n_classes} values, got {w.numel()}")
        self.register_buffer("class_weights", w if w is not None else torch.ones(n_classes))
        self.dice_weight = float(dice_weight)
        self.ce_weight = float(ce_weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
        """Loss of a batch.

        Args:
            logits: ``(N, C, *spatial)`` raw network outputs.
            target: ``(N, *spatial)`` integer labels (any value where ``mask`` is False).
            mask: ``(N, *spatial)`` bool, True where the label counts.

        Returns:
            A scalar tensor (0 with a gradient when no voxel is labelled).
        """
        logits = logits.float()
        mask = mask.bool()
        if not bool(mask.any()):
            return logits.sum() * 0.0
        tgt = torch.where(mask, target, torch.zeros_like(target))
        onehot = F.one_hot(tgt.long(), self.n_classes).movedim(-1, 1).to(logits.dtype)
        m = mask[:, None].to(logits.dtype)
        dice = self.dice(logits, onehot, mask=m)
        ce_target = torch.where(mask, target.long(), torch.full_like(target.long(), _IGNORE))
        ce = F.cross_entropy(
            logits, ce_target, weight=self.class_weights.to(logits.device), ignore_index=_IGNORE
        )
        return self.dice_weight * dice + self.ce_weight * ce


def class_weights(counts: Sequence[int], *, power: float = 0.5, cap: float = 10.0) -> list[float]:
    """Cross-entropy weights from labelled-voxel counts per class.

    ``w_c ∝ (total / count_c) ** power``, normalised so the labelled voxels' mean weight
    is 1, and capped at ``cap`` times the smallest weight (absent classes get the cap).
    ``power=0.5`` (inverse square root) lifts small structures without letting a few
    voxels dominate.

    Args:
        counts: labelled voxels per class (background first).
        power: 0 = uniform, 1 = inverse frequency.
        cap: largest ratio between weights.
    """
    c = np.asarray(counts, dtype=np.float64)
    total = max(c.sum(), 1.0)
    raw = np.where(c > 0, (total / np.maximum(c, 1.0)) ** power, np.inf)
    lo = raw[np.isfinite(raw)].min() if np.isfinite(raw).any() else 1.0
    raw = np.minimum(raw, lo * cap)
    mean = float((raw * c).sum() / total) if c.sum() > 0 else 1.0
    return [float(v / mean) for v in raw]
