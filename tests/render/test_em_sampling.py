"""The separable slab sampler agrees with plain trilinear / nearest sampling of every slab point."""

import numpy as np
import pytest
from scipy import ndimage

from render.em_views import _CANDIDATES, _aligned_axis, _in_plane_axes, _Plane


# The plain 3-D sampler (every slab point looked up on its own): the reference the separable one must match.
def _sample(vol: np.ndarray, voxel, points_nm: np.ndarray) -> np.ndarray:
    """Trilinear sample of `vol` at points (nm from the volume origin); voxel i's centre is at (i + 0.5) * voxel."""
    coords = (points_nm / voxel - 0.5).reshape(-1, 3).T
    return ndimage.map_coordinates(vol, coords, order=1, mode="constant", cval=0, prefilter=False).reshape(
        points_nm.shape[:-1]
    )


def _nearest(vol: np.ndarray, voxel, points_nm: np.ndarray) -> np.ndarray:
    """Nearest-voxel lookup (the voxel containing each point), 0 outside the volume."""
    idx = np.floor(points_nm / voxel).astype(np.int64)
    shape = np.asarray(vol.shape)
    ok = np.all((idx >= 0) & (idx < shape), axis=-1)
    idx = np.where(ok[..., None], idx, 0)
    return np.where(ok, vol[idx[..., 0], idx[..., 1], idx[..., 2]], 0)


def _plane_points(center_nm, u, v, n, half_nm, res, offsets_nm) -> np.ndarray:
    s = ((np.arange(res) + 0.5) / res * 2.0 - 1.0) * half_nm
    grid = center_nm + s[None, :, None] * u + s[:, None, None] * v  # (rows, cols, 3)
    return np.stack([grid + o * n for o in offsets_nm])  # (slab, rows, cols, 3)


def _em_slab_generic(em, voxel, center_nm, u, v, n, half_nm, res, slab_nm) -> np.ndarray:
    """Any plane: the mean of trilinear EM samples at the three slab offsets."""
    pts = _plane_points(center_nm, u, v, n, half_nm, res, (-slab_nm, 0.0, slab_nm))
    return _sample(em.astype(np.float64), voxel, pts).mean(axis=0)


def _plane_generic(vol, voxel, center_nm, u, v, n, half_nm, res) -> np.ndarray:
    """Any plane: the voxel of `vol` containing each pixel's point on the central plane, 0 outside."""
    return _nearest(vol, voxel, _plane_points(center_nm, u, v, n, half_nm, res, (0.0,))[0])


@pytest.mark.parametrize("voxel", [(16.0, 16.0, 40.0), (8.0, 8.0, 40.0), (20.0, 20.0, 20.0), (32.0, 32.0, 30.0)])
def test_separable_view_matches_trilinear(voxel):
    voxel = np.asarray(voxel)
    rng = np.random.default_rng(1)
    shape = tuple(np.round(1100.0 / voxel).astype(int))
    em = rng.integers(0, 256, size=shape).astype(np.uint8)
    seg = rng.integers(0, 4, size=shape).astype(np.uint8)
    # off-centre so that some slab points leave the volume (the zero-outside rule is exercised too)
    centre = np.asarray(shape) * voxel / 2.0 + np.array([130.0, -70.0, 45.0])
    for n in _CANDIDATES[::5] + _CANDIDATES[:3]:
        n = np.asarray(n)
        u, v = _in_plane_axes(n)
        assert _aligned_axis(u, v, n) is not None  # separable: no candidate plane needs the plain sampler
        plane = _Plane(voxel, centre, u, v, n, 500.0, 96, voxel.min())
        assert np.array_equal(plane.central(seg), _plane_generic(seg, voxel, centre, u, v, n, 500.0, 96))
        fast = plane.em_slab(em)
        ref = _em_slab_generic(em, voxel, centre, u, v, n, 500.0, 96, voxel.min())
        assert np.allclose(fast, ref, rtol=0, atol=1e-9)  # float summation order only


def test_a_plane_without_an_in_plane_coordinate_axis_is_refused():
    n = np.array([1.0, 1.0, 1.0]) / np.sqrt(3.0)
    u, v = _in_plane_axes(n)
    with pytest.raises(ValueError, match="not separable"):
        _Plane(np.array([16.0, 16.0, 40.0]), np.zeros(3), u, v, n, 500.0, 96, 16.0)
