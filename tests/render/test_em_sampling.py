"""The separable slab sampler agrees with plain trilinear / nearest sampling of every slab point."""

import numpy as np
import pytest

from render.em_views import _CANDIDATES, _em_slab_generic, _in_plane_axes, _Plane, _plane_generic


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
        plane = _Plane(voxel, centre, u, v, n, 500.0, 96, voxel.min())
        assert plane.separable
        assert np.array_equal(plane.central(seg), _plane_generic(seg, voxel, centre, u, v, n, 500.0, 96))
        fast = plane.em_slab(em)
        ref = _em_slab_generic(em, voxel, centre, u, v, n, 500.0, 96, voxel.min())
        assert np.allclose(fast, ref, rtol=0, atol=1e-9)  # float summation order only
