from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from napari_unet.inference.stitch import argmax0
from napari_unet.inference.tiling import (
    axis_positions,
    choose_tile,
    nnunet_importance_map,
    read_tile,
    sliding_steps,
)


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(10, 16, 4), (64, 64, 16), (100, 32, 8), (513, 80, 16)]
)
def test_axis_positions_cover_with_overlap(length: int, tile: int, overlap: int) -> None:
    pos = axis_positions(length, tile, overlap)
    assert pos[0] == 0 and pos[-1] + tile >= length
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(pos))


def test_choose_tile_grows_only_when_allowed() -> None:
    grown = choose_tile(
        (200, 180, 40),
        (64, 64, 64),
        divisor=8,
        max_voxels=2**20,
        min_overlap=(16, 16, 16),
        grow=True,
    )
    assert np.prod(grown) <= 2**20 and all(t % 8 == 0 for t in grown) and grown[2] == 40
    fixed = choose_tile(
        (200, 180, 40),
        (64, 64, 64),
        divisor=8,
        max_voxels=2**20,
        min_overlap=(16, 16, 16),
        grow=False,
    )
    assert fixed == (64, 64, 64)


def test_read_tile_pads_and_crops() -> None:
    src = np.arange(5 * 6, dtype=np.float32).reshape(5, 6)
    view, dst = read_tile(src, (0, 4), (8, 4), (1, 0))
    tile = np.zeros((8, 4), np.float32)
    tile[dst] = view
    np.testing.assert_array_equal(tile[1:6, :2], src[:, 4:6])
    assert tile[0].sum() == 0 and tile[6:].sum() == 0 and tile[:, 2:].sum() == 0


def test_argmax0_matches_torch_with_ties() -> None:
    g = torch.Generator().manual_seed(0)
    acc = torch.randint(0, 3, (4, 7, 5, 3), generator=g).float()  # many ties
    np.testing.assert_array_equal(argmax0(acc).numpy(), acc.argmax(0).numpy())
    assert argmax0(acc).dtype == torch.uint8


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(512, 80, 16), (136, 64, 16), (64, 64, 16)]
)
def test_axis_positions_align_to_the_network_stride(length: int, tile: int, overlap: int) -> None:
    pos = axis_positions(length, tile, overlap, divisor=8)
    assert all(p % 8 == 0 for p in pos), pos
    assert pos[0] == 0 and pos[-1] + tile == max(length, tile)
    assert all(b - a <= tile - overlap for a, b in itertools.pairwise(pos))


def test_layout_pads_the_frame_to_the_stride() -> None:
    from napari_unet.inference.stitch import Layout

    layout = Layout.over((130, 40, 20), (64, 48, 24), (16, 12, 6), divisor=8)
    assert layout.frame == (136, 48, 24)
    assert layout.pad_before == (3, 4, 2)
    assert all(p % 8 == 0 for axis in layout.positions for p in axis)


def test_sliding_steps_are_nnunets():
    """nnU-Net's own example: 110 voxels, patch 64, step 0.5 → starts 0, 23, 46."""
    assert sliding_steps(110, 64) == [0, 23, 46]
    assert sliding_steps(64, 64) == [0] and sliding_steps(40, 64) == [0]
    assert sliding_steps(96, 32) == [0, 16, 32, 48, 64]


def test_nnunet_importance_map_peaks_at_ten_and_has_no_zeros():
    w = nnunet_importance_map((8, 32, 32), torch.device("cpu"))
    assert w.shape == (8, 32, 32) and w.dtype == torch.float32
    assert float(w.max()) == pytest.approx(10, rel=1e-3) and float(w[4, 16, 16]) == float(w.max())
    assert float(w.min()) > 0


def test_the_tile_search_refines_below_its_16_voxel_grid() -> None:
    """512×512×128 with a 64³ patch and 2²⁰ voxels: 88×88×128 (49 tiles) computes fewer
    voxels than the coarse search's 80×80×128 (64 tiles)."""
    from napari_unet.inference.stitch import Layout

    tile = choose_tile((512, 512, 128), (64, 64, 64), divisor=8, max_voxels=2**20,
                       min_overlap=(16, 16, 16), grow=True)  # fmt: skip
    assert tile == (88, 88, 128)

    def computed(t):
        return Layout.over((512, 512, 128), t, [16, 16, 16], 8).n_tiles * np.prod(t)

    assert computed(tile) < computed((80, 80, 128))
