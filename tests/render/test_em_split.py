import numpy as np
import pytest
import trimesh

from core.errors import SampleError
from core.release_schema import SPLIT_MASK_A, SPLIT_MASK_B
from render.em_views import candidate_normals, render_em_views
from render.encode import decode_png, encode_png
from render.geometry import render_geometry
from render.split_masks import render_split_masks

VOXEL = np.array([16.0, 16.0, 40.0])
WINDOW = 960.0


def cutout(seed=0, oblique=True):
    n = np.round(1.5 * WINDOW / VOXEL).astype(int)
    em = np.random.default_rng(seed).integers(40, 220, size=n).astype(np.uint8)
    x, y, z = [(np.arange(k) + 0.5) * v - k * v / 2 for k, v in zip(n, VOXEL, strict=True)]
    X, Y, Z = np.meshgrid(x, y, z, indexing="ij")
    lab = np.full(n, 5, np.uint64)
    if oblique:  # two thin sheets in a tilted plane: no cardinal plane sees much of both
        t = (X + Y) / np.sqrt(2)
        lab[(np.abs(t) < 30) & (Z > 0) & (Z < 300)] = 11
        lab[(np.abs(t) < 30) & (Z <= 0) & (Z > -300)] = 22
    else:
        lab[(X - 100) ** 2 + (Y - 60) ** 2 < 150**2] = 11
        lab[(X + 120) ** 2 + (Z - 40) ** 2 < 120**2] = 22
    return em, lab


def test_candidate_planes():
    n = candidate_normals()
    assert len(n) == 51 and n[:3] == [(0.0, 0.0, 1.0), (0.0, 1.0, 0.0), (1.0, 0.0, 0.0)]


@pytest.mark.parametrize("oblique", [True, False])
def test_em_views_masks_and_best_plane(oblique):
    em, lab = cutout(oblique=oblique)
    views, info = render_em_views(em, lab, VOXEL, {11}, {22}, WINDOW)
    assert set(views) == {"em_xy_before", "em_xz_before", "em_yz_before", "em_best_before"}
    for img in views.values():
        assert img.shape == (224, 224, 3) and img.dtype == np.uint8
        assert set(np.unique(img[..., 1])) <= {0, 255} and set(np.unique(img[..., 2])) <= {0, 255}
        assert img[..., 0].max() > img[..., 0].min()
    assert info["em_best_score"] >= max(info["em_cardinal_scores"].values())
    assert (views["em_best_before"][..., 1] > 0).any() and (views["em_best_before"][..., 2] > 0).any()
    if oblique:
        assert info["em_best_score"] > max(info["em_cardinal_scores"].values())


def test_em_single_segment_row_has_empty_b():
    em, lab = cutout(oblique=False)
    views, info = render_em_views(em, lab, VOXEL, {11}, set(), WINDOW)
    assert info["em_recenter_offset_nm"] == [0.0, 0.0, 0.0]
    assert all(not img[..., 2].any() for img in views.values())


def test_em_errors():
    em, lab = cutout(oblique=False)
    with pytest.raises(SampleError) as e:
        render_em_views(em, lab, VOXEL, {99}, {22}, WINDOW)
    assert e.value.reason == "segment_not_in_cutout"
    with pytest.raises(SampleError) as e:
        render_em_views(em, lab, VOXEL, {11}, {99}, WINDOW)
    assert e.value.reason == "segment_not_in_cutout"
    with pytest.raises(SampleError) as e:
        render_em_views(np.zeros_like(em), lab, VOXEL, {11}, {22}, WINDOW)
    assert e.value.reason == "em_missing"


def test_em_png_deterministic():
    em, lab = cutout()
    v1, _ = render_em_views(em, lab, VOXEL, {11}, {22}, WINDOW)
    v2, _ = render_em_views(em.copy(), lab.copy(), VOXEL, {11}, {22}, WINDOW)
    for k in v1:
        b1, b2 = encode_png(v1[k]), encode_png(v2[k])
        assert b1 == b2 and np.array_equal(decode_png(b1), v1[k])


def test_split_masks_aligned_with_silhouette():
    c = np.array([0.0, 0.0, 0.0])
    # the before root: one long box; after: its two halves with a small gap between them
    before = trimesh.creation.box(extents=[200, 200, 800])
    a = trimesh.creation.box(extents=[200, 200, 380]).apply_translation([0, 0, 210])
    b = trimesh.creation.box(extents=[200, 200, 380]).apply_translation([0, 0, -210])
    single = render_geometry([before], c, 500.0)
    sil = single[:, 0].astype(np.float32)
    masks = render_split_masks(a, b, c, 500.0, sil)
    assert masks.shape == (3, 224, 224) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, SPLIT_MASK_A, SPLIT_MASK_B}
    assert np.array_equal(masks > 0, sil > 0)
    front = masks[0]
    assert front[50, 112] == SPLIT_MASK_A and front[170, 112] == SPLIT_MASK_B  # +z (A) is up
    assert (masks[2][sil[2] > 0] == SPLIT_MASK_A).all()  # top view sees A's top face
    png = [encode_png(m) for m in masks]
    assert png == [encode_png(m) for m in render_split_masks(a, b, c, 500.0, sil)]


def test_contact_sheet():
    from render.contact_sheet import contact_sheet
    from render.encode import encode_geometry

    geom = render_geometry([trimesh.creation.icosphere(radius=200)], np.zeros(3), 500.0)
    em, lab = cutout(oblique=False)
    views, _ = render_em_views(em, lab, VOXEL, {11}, {22}, WINDOW)
    rows = [
        {"sample_type": "junction_control", "geometry": encode_geometry(geom), **views},
        {"sample_type": "split_edit", "geometry": geom, "split_mask_front": np.zeros((224, 224), np.uint8)},
    ]
    img = contact_sheet(rows)
    assert img.size[1] == 2 * 112 and img.mode == "RGB"
