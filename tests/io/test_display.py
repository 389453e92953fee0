"""The display grid shows scans as 3D Slicer does and maps back to the scan exactly."""

from __future__ import annotations

import numpy as np
import pytest

from napari_unet.io.display import RAS_TO_DISPLAY, display_geometry

SHAPE = (7, 9, 5)


def _world(affine, idx):
    return (affine @ np.r_[idx, 1.0])[:3]


def test_display_round_trip_is_exact(affine):
    geometry = display_geometry(affine, SHAPE)
    array = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    shown = geometry.to_display(array)
    assert sorted(shown.shape) == sorted(SHAPE)
    assert np.array_equal(geometry.to_native(shown), array)


def test_display_axes_follow_slicer_convention(affine):
    """Axis 0 runs to Inferior, axis 1 to Posterior, axis 2 to patient Left."""
    geometry = display_geometry(affine, SHAPE)
    native_index = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    shown = geometry.to_display(native_index)
    origin = np.argwhere(native_index == shown[0, 0, 0])[0]
    for axis, (ras_axis, sign) in enumerate([(2, -1), (1, -1), (0, -1)]):
        step = [0, 0, 0]
        step[axis] = 1
        moved = np.argwhere(native_index == shown[tuple(step)])[0]
        delta = _world(affine, moved) - _world(affine, origin)
        # the dominant direction of this display axis is the expected one
        assert np.argmax(np.abs(delta)) == ras_axis
        assert np.sign(delta[ras_axis]) == sign


def test_scale_and_translate_give_world_positions_for_axis_aligned_scans():
    affine = np.array([[-0.7, 0, 0, 120.0], [0, -0.7, 0, 90.0], [0, 0, 3.0, -60.0], [0, 0, 0, 1]])
    geometry = display_geometry(affine, SHAPE)
    native = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    shown = geometry.to_display(native)
    for value in (0, 17, 200, np.prod(SHAPE) - 1):
        i_native = np.argwhere(native == value)[0]
        i_shown = np.argwhere(shown == value)[0]
        expected = RAS_TO_DISPLAY @ _world(affine, i_native)
        got = np.asarray(geometry.scale) * i_shown + np.asarray(geometry.translate)
        np.testing.assert_allclose(got, expected, atol=1e-9)
    assert geometry.scale == pytest.approx((3.0, 0.7, 0.7))


def test_extent_in_mm_equals_the_scan(affine):
    geometry = display_geometry(affine, SHAPE)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    native_extent = sorted(np.asarray(SHAPE) * spacing)
    shown_extent = sorted(np.asarray(geometry.display_shape) * np.asarray(geometry.scale))
    np.testing.assert_allclose(shown_extent, native_extent)


def test_to_native_rejects_another_grid():
    geometry = display_geometry(np.eye(4), SHAPE)
    with pytest.raises(ValueError, match="does not match"):
        geometry.to_native(np.zeros((5, 9, 8)))


def test_slice_indices_map_between_display_and_native_axes(affine):
    geometry = display_geometry(affine, SHAPE)
    native = np.arange(np.prod(SHAPE)).reshape(SHAPE)
    shown = geometry.to_display(native)
    for native_axis in range(3):
        axis = geometry.display_axis(native_axis)
        assert geometry.native_axis(axis) == native_axis
        for d in range(shown.shape[axis]):
            n = int(geometry.to_native_index(native_axis, d))
            assert int(geometry.to_display_index(native_axis, n)) == d
            shown_slice = np.take(shown, d, axis=axis)
            assert set(np.take(native, n, axis=native_axis).ravel()) == set(shown_slice.ravel())
