"""DemoSource over the small world (sim/small_world.py): every Source method, edits seen through the segmentation."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pyarrow as pa
import pytest
import trimesh

from config.schema import load_config
from core.errors import SampleError
from pipeline.sources.base import CHANGE_LOG_COLUMNS, SYNAPSE_COLUMNS, Cutout, OperationDetails, Skeleton, Source
from pipeline.sources.demo import DemoSource


@pytest.fixture(scope="module")
def world(small_world):
    return small_world


@pytest.fixture(scope="module")
def summary(world):
    return json.loads((world / "world.json").read_text())


@pytest.fixture()
def src(world):
    return DemoSource(load_config("demo"), world)


def _ops(src):
    roots = src.proofread_roots()
    log = src.change_log(roots)
    return list(src.operation_details(sorted(set(log["operation_id"].to_pylist()))).values())


def _edit_point(src, op):
    res = np.array(src.base_resolution_nm())
    return (np.mean(op.source_coords_vx, axis=0) + np.mean(op.sink_coords_vx, axis=0)) / 2 * res


def _root_at_vx(src, p_vx, t):
    res = np.array(src.base_resolution_nm())
    cut = src.segmentation_cutout((np.array(p_vx) + 0.5) * res, 1.0, t)
    return int(cut.data.ravel()[0])


def test_is_a_source_and_basic_facts(src, summary):
    assert isinstance(src, Source)
    assert src.species == "demo"
    assert src.base_resolution_nm() == (32.0, 32.0, 45.0)
    lo, hi = src.canonical_bbox_nm()
    assert lo == tuple(summary["geometry"]["bbox_nm"][0]) and hi == tuple(summary["geometry"]["bbox_nm"][1])
    assert src.as_of() == 1780272000.0 == summary["time"]["as_of"]


def test_proofread_roots_and_change_log(src):
    roots = src.proofread_roots()
    assert roots == sorted(roots) and all(isinstance(r, int) and r > 2**59 for r in roots)
    log = src.change_log(roots)
    assert set(CHANGE_LOG_COLUMNS) <= set(log.column_names)
    assert log.schema.field("timestamp").type == pa.float64()
    assert log.schema.field("before_root_ids").type == pa.list_(pa.uint64())
    assert log.schema.field("after_root_ids").type == pa.list_(pa.uint64())
    assert set(log["root_id"].to_pylist()) <= set(roots)
    assert (np.array(log["timestamp"].to_pylist()) <= src.as_of()).all()
    pairs = list(zip(log["root_id"].to_pylist(), log["operation_id"].to_pylist(), strict=True))
    assert len(pairs) > len(set(pairs))  # the injected duplicate change-log row shows up


def test_operation_details(src, summary):
    ops = _ops(src)
    assert ops and all(isinstance(op, OperationDetails) for op in ops)
    assert any(op.is_merge for op in ops) and any(not op.is_merge for op in ops)
    no_points = set(summary["defects"]["operations_without_points"])
    for op in ops:
        assert isinstance(op.timestamp, float)
        assert (op.source_coords_vx == ()) == (op.operation_id in no_points)
    assert src.operation_details([1, 2]) == {}


def test_merge_and_split_seen_at_t_minus_and_plus_one(src):
    seen = {True: 0, False: 0}
    for op in _ops(src):
        if not op.source_coords_vx:
            continue
        c = _edit_point(src, op)
        before = set(np.unique(src.segmentation_cutout(c, 500.0, op.timestamp - 1).data).tolist())
        after = set(np.unique(src.segmentation_cutout(c, 500.0, op.timestamp + 1).data).tolist())
        assert set(op.before_root_ids) <= before and not set(op.after_root_ids) & before
        assert set(op.after_root_ids) <= after and not set(op.before_root_ids) & after
        s_prev = _root_at_vx(src, op.source_coords_vx[0], op.timestamp - 1)
        k_prev = _root_at_vx(src, op.sink_coords_vx[0], op.timestamp - 1)
        s_next = _root_at_vx(src, op.source_coords_vx[0], op.timestamp + 1)
        k_next = _root_at_vx(src, op.sink_coords_vx[0], op.timestamp + 1)
        if op.is_merge:  # source and sink on the two before roots, one merged root after
            assert {s_prev, k_prev} == set(op.before_root_ids) and s_next == k_next == op.after_root_ids[0]
        else:  # one root before, source and sink on the two after roots
            assert s_prev == k_prev == op.before_root_ids[0] and {s_next, k_next} == set(op.after_root_ids)
        seen[op.is_merge] += 1
    assert seen[True] and seen[False]


def test_adjacent_roots_near_merges(src):
    counts = []
    for op in _ops(src):
        if op.is_merge and op.source_coords_vx:
            cut = src.segmentation_cutout(_edit_point(src, op), 500.0, op.timestamp - 1).data
            own = set(op.before_root_ids)
            adj = set()
            for axis in range(3):
                a = np.moveaxis(cut, axis, 0)
                x, y = a[:-1].ravel(), a[1:].ravel()
                adj |= {int(v) for v, w in zip(x, y, strict=True) if w in own and v not in own and v}
                adj |= {int(w) for v, w in zip(x, y, strict=True) if v in own and w not in own and w}
            counts.append(len(adj))
    assert counts and sum(c > 0 for c in counts) >= len(counts) / 2


def test_roots_at(src):
    op = next(op for op in _ops(src) if op.is_merge)
    sv_table = src._table("roots")
    rows = {r["root_id"]: r["supervoxel_ids"] for r in sv_table.to_pylist()}
    svs = np.array(rows[op.before_root_ids[0]][:3] + rows[op.before_root_ids[1]][:2], dtype=np.uint64)
    got = src.roots_at(svs.reshape(5, 1), op.timestamp - 1)
    assert got.dtype == np.uint64 and got.shape == (5, 1)
    assert got.ravel().tolist() == [op.before_root_ids[0]] * 3 + [op.before_root_ids[1]] * 2
    assert (src.roots_at(svs, op.timestamp) == op.after_root_ids[0]).all()
    assert src.roots_at(np.array([0, 12345], dtype=np.uint64), op.timestamp).tolist() == [0, 0]
    assert (src.roots_at(svs, 0.0) != 0).all()  # before the first roots: the first roots


def test_synapses(src, summary):
    roots = src.proofread_roots()
    syn = src.synapses(roots, roots)
    assert set(SYNAPSE_COLUMNS) <= set(syn.column_names)
    assert {"gaba", "ach", "glut", "oct", "ser", "da"} <= set(syn.column_names)
    assert syn.schema.field("ctr_pt_position_nm").type == pa.list_(pa.float64())
    assert syn.num_rows > 0
    rs = set(roots)
    for row in syn.to_pylist():
        assert row["pre_pt_root_id"] in rs and row["post_pt_root_id"] in rs
        assert len(row["ctr_pt_position_nm"]) == 3
    assert src.synapses([], roots).num_rows == 0 and src.synapses(roots, []).num_rows == 0
    one = src.synapses(roots[:1], roots)
    assert set(one["pre_pt_root_id"].to_pylist()) <= {roots[0]}
    all_ids = set(src._table("synapses")["id"].to_pylist())
    assert set(summary["defects"]["synapses_with_null_root"]) <= all_ids


def test_skeleton(src):
    branched = 0
    for root in src.proofread_roots():  # skeletons built from the level-2 graph: forests (pruned twigs)
        sk = src.skeleton(root)
        assert isinstance(sk, Skeleton)
        assert sk.vertices_nm.dtype == np.float64 and sk.vertices_nm.shape[1] == 3
        assert sk.edges.dtype == np.int64 and sk.edges.shape[1] == 2 and len(sk.edges) <= len(sk.vertices_nm) - 1
        branched += bool((np.bincount(sk.edges.ravel()) >= 3).any()) if len(sk.edges) else 0
    assert branched
    with pytest.raises(SampleError) as err:
        src.skeleton(12345)
    assert err.value.reason == "missing_skeleton"


def test_mesh_and_missing_mesh(src, summary):
    missing = set(summary["defects"]["roots_without_mesh"])
    root = next(r for r in src.proofread_roots() if r not in missing)
    m = src.mesh(root)
    assert isinstance(m, trimesh.Trimesh) and len(m.faces) > 100
    lo, hi = src.canonical_bbox_nm()
    assert (m.bounds[0] >= lo).all() and (m.bounds[1] <= hi).all()
    for r in missing:
        with pytest.raises(SampleError) as err:
            src.mesh(r)
        assert err.value.reason == "missing_mesh"


def test_mesh_box_is_a_crop_that_commutes(src, summary):
    """A box gives the faces with a vertex in it; cropping that again equals cropping the whole mesh."""
    from render.geometry import crop_mesh

    long_root = summary["long_neurons"][0]["root_id"]
    whole = src.mesh(long_root)
    center = whole.vertices[len(whole.vertices) // 2]
    box = (center - 3000.0, center + 3000.0)
    part = src.mesh(long_root, box_nm=box)
    assert 0 < len(part.faces) < len(whole.faces) / 4  # a long neuron: the box holds a small part of it
    a, b = crop_mesh(whole, center, 2000.0), crop_mesh(part, center, 2000.0)
    assert np.array_equal(a.vertices, b.vertices) and np.array_equal(a.faces, b.faces)
    far = (np.array(src.canonical_bbox_nm()[0]), np.array(src.canonical_bbox_nm()[0]) + 100.0)
    assert len(src.mesh(long_root, box_nm=far).faces) == 0


def test_cutouts(src):
    op = next(op for op in _ops(src) if op.source_coords_vx)
    c = _edit_point(src, op)
    em = src.em_cutout(c, 1200.0)
    assert isinstance(em, Cutout) and em.data.dtype == np.uint8
    assert em.data.shape == (38, 38, 27) and em.voxel_nm == (32.0, 32.0, 45.0)
    res = np.array(em.voxel_nm)
    assert (np.abs(np.array(em.origin_nm) + np.array(em.data.shape) * res / 2 - c) <= res / 2 + 1e-6).all()
    assert em.data.std() > 5
    seg = src.segmentation_cutout(c, 1200.0, op.timestamp - 1)
    assert seg.data.dtype == np.uint64 and seg.data.shape == em.data.shape and seg.origin_nm == em.origin_nm
    assert set(op.before_root_ids) <= set(np.unique(seg.data).tolist())
    # a cube around the volume's corner: zero-padded outside
    lo, _ = src.canonical_bbox_nm()
    corner = src.em_cutout(np.array(lo), 1000.0)
    assert corner.data.shape == (31, 31, 22) and not corner.data.any()
    assert corner.origin_nm[0] < lo[0]


def test_pickles_before_and_after_use(src):
    clone = pickle.loads(pickle.dumps(src))
    assert clone.proofread_roots() == src.proofread_roots()  # src now has open handles
    again = pickle.loads(pickle.dumps(src))
    assert again.base_resolution_nm() == src.base_resolution_nm()
    assert again.world_dir == src.world_dir
