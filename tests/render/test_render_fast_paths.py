"""The fast paths of the render core give exactly what the plain computations give: packet culling in the ray
caster, the sampled percentile of the EM normalisation and the per-axis plane scoring."""

import numpy as np
import pytest
import trimesh

from render import embree_direct, raycast
from render.camera import pixel_rays, view_cameras
from render.em_views import _CANDIDATE_UVN, SCORE_FRACTION, SCORE_GRID, _score_all, percentile_1_99
from render.geometry import render_geometry


def _meshes(center):
    a = trimesh.creation.icosphere(subdivisions=3, radius=300.0).apply_translation(center + [120.0, -40.0, 60.0])
    b = trimesh.creation.box(extents=[300, 200, 500]).apply_translation(center + [250.0, 100.0, 0.0])
    # a long thin box that leaves the field of view on one side
    c = trimesh.creation.box(extents=[2000, 80, 90]).apply_translation(center + [700.0, -300.0, -200.0])
    return [a, trimesh.util.concatenate([b, c])]


@pytest.mark.skipif(not embree_direct.available(), reason="libembree4 not loadable")
@pytest.mark.parametrize("res", [64, 61])  # 61: packets straddle rows and views, the last packet is partial
def test_culled_cast_equals_casting_every_pixel(res):
    center = np.array([300000.0, 200000.0, 100000.0])
    meshes = _meshes(center)
    cams = view_cameras(center, 500.0, res)
    sparse = raycast.cast_sparse(meshes, cams)
    # reference: every pixel of every view, the plain pixel_rays construction, one embree_direct call
    v = np.concatenate([m.vertices for m in meshes])
    f = np.concatenate([meshes[0].faces, meshes[1].faces + len(meshes[0].vertices)])
    local_v = v - center
    back_off = float(np.abs(local_v).max()) * 1.75 + 1.0
    origins, dirs = [], []
    for cam in cams:
        o, d = pixel_rays(cam, back_off)
        origins.append(o - center)
        dirs.append(d)
    prim, tfar = embree_direct.intersect(
        local_v.astype(np.float32),
        f.astype(np.int32),
        np.concatenate(origins).astype(np.float32),
        np.concatenate(dirs).astype(np.float32),
    )
    rr = res * res
    n_hit = 0
    for i, h in enumerate(sparse):
        p = prim[i * rr : (i + 1) * rr]
        assert np.array_equal(h.pixels, np.flatnonzero(p >= 0))
        assert np.array_equal(h.prim, p[h.pixels])
        assert np.array_equal(h.depth, tfar[i * rr : (i + 1) * rr][h.pixels].astype(np.float64) - back_off)
        n_hit += len(h.pixels)
    assert 0 < n_hit < 3 * rr
    # the dense view of the same hits
    dense = raycast.cast_views(meshes, cams)
    for h, d in zip(sparse, dense, strict=True):
        assert np.array_equal(np.flatnonzero(d.mesh.reshape(-1) >= 0), h.pixels)
        assert np.isnan(d.depth.reshape(-1)[np.setdiff1d(np.arange(rr), h.pixels)]).all()


@pytest.mark.skipif(not embree_direct.available(), reason="libembree4 not loadable")
def test_embreex_fallback_renders_the_same(monkeypatch):
    center = np.array([1000.0, 2000.0, 3000.0])
    meshes = _meshes(center)
    fast = render_geometry(meshes, center, 500.0, resolution=64).astype(np.float32)
    monkeypatch.setattr(embree_direct, "available", lambda: False)
    slow = render_geometry(meshes, center, 500.0, resolution=64).astype(np.float32)
    assert np.array_equal(fast[:, 0], slow[:, 0])
    assert np.array_equal(fast[:, 5:], slow[:, 5:])
    assert np.abs(fast[:, 1] - slow[:, 1]).max() < 1e-2
    # rays through a shared edge may report either face: the normals can differ on a few pixels only
    assert (np.abs(fast[:, 2:5] - slow[:, 2:5]).max(axis=1) > 1e-3).mean() < 0.01


def test_percentile_matches_numpy_bit_for_bit():
    rng = np.random.default_rng(0)
    cases = [
        rng.random((224, 224)) * 255,
        rng.integers(0, 256, (224, 224)).astype(np.float64),
        np.full((224, 224), 3.7),
        np.round(rng.normal(100, 30, (224, 224)), 1),
        np.sort(rng.random(224 * 224)).reshape(224, 224),
        np.sort(rng.random(224 * 224))[::-1].reshape(224, 224),
        rng.random((224, 224)).T * 7,
        rng.random((50, 50)),
        np.where(rng.random((224, 224)) < 0.9, 0.0, rng.random((224, 224))),
        np.pad(rng.random((224, 100)), ((0, 0), (62, 62))),
    ]
    for x in cases:
        assert np.percentile(x, [1.0, 99.0]).tobytes() == percentile_1_99(x).tobytes()


def _score_all_reference(seg, voxel, center_nm, half_nm):
    u, v, n = _CANDIDATE_UVN
    s = ((np.arange(SCORE_GRID) + 0.5) / SCORE_GRID * 2.0 - 1.0) * (half_nm * SCORE_FRACTION)
    pts = center_nm + s[None, None, :, None] * u[:, None, None, :] + s[None, :, None, None] * v[:, None, None, :]
    pts = pts + 0.0 * n[:, None, None, :]
    idx = np.floor(pts / voxel).astype(np.int64)
    shape = np.asarray(seg.shape)
    ok = np.all((idx >= 0) & (idx < shape), axis=-1)
    idx = np.where(ok[..., None], idx, 0)
    vals = np.where(ok, seg[idx[..., 0], idx[..., 1], idx[..., 2]], 0)
    area_a = np.count_nonzero(vals & 1, axis=(1, 2)).astype(np.float64)
    area_b = np.count_nonzero(vals & 2, axis=(1, 2)).astype(np.float64)
    return np.log(np.maximum(area_a, 1.0)) + np.log(np.maximum(area_b, 1.0))


@pytest.mark.parametrize("voxel", [(32.0, 32.0, 45.0), (16.0, 16.0, 40.0)])
def test_score_all_matches_reference(voxel):
    voxel = np.asarray(voxel)
    rng = np.random.default_rng(3)
    shape = tuple(np.round(1300.0 / voxel).astype(int))
    seg = rng.integers(0, 4, size=shape).astype(np.uint8)
    for shift in ([0.0, 0.0, 0.0], [310.0, -150.0, 95.0]):  # off-centre: some samples leave the volume
        centre = np.asarray(shape) * voxel / 2.0 + np.asarray(shift)
        assert np.array_equal(_score_all(seg, voxel, centre, 750.0), _score_all_reference(seg, voxel, centre, 750.0))
