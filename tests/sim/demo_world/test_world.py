"""The demo world: deterministic bytes, CloudVolume-readable layers, a consistent edit history, defects."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from cloudvolume import CloudVolume

import sim.demo_world.world as world_mod
from sim.demo_world import generate_world, world_is_complete
from sim.demo_world.history import AS_OF, OPS_START

pytestmark = pytest.mark.slow  # every test here generates a world or reads one generated for the module
TINY = {"n_sites": 3, "neurons_per_site": 4}


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "world"
    generate_world(path, seed=11, **TINY)
    return path


@pytest.fixture(scope="module")
def summary(world) -> dict:
    return json.loads((world / "world.json").read_text())


def _table(world: Path, name: str):
    return pq.read_table(world / "tables" / f"{name}.parquet")


def test_same_seed_is_byte_identical_and_worker_independent(world, tmp_path):
    again = tmp_path / "again"
    generate_world(again, seed=11, workers=2, **TINY)
    assert _hashes(again) == _hashes(world)


def test_different_seed_differs(world, tmp_path):
    other = tmp_path / "other"
    generate_world(other, seed=12, **TINY)
    a, b = _hashes(world), _hashes(other)
    assert a != b
    assert a["tables/roots.parquet"] != b["tables/roots.parquet"]


def test_completion_marker(world, summary, tmp_path):
    assert world_is_complete(world)
    assert not world_is_complete(tmp_path / "nothing")
    assert summary["parameters"] == {"n_sites": 3, "neurons_per_site": 4, "seed": 11}
    files = [p for p in world.rglob("*") if p.is_file() and p.name != "world.json"]
    assert summary["counts"]["bytes_on_disk"] == sum(p.stat().st_size for p in files)
    assert not list(world.parent.glob(".world.partial-*"))


def test_interrupted_generation_is_never_complete(tmp_path, monkeypatch):
    def boom(job):
        raise RuntimeError("killed")

    monkeypatch.setattr(world_mod, "run_site", boom)
    target = tmp_path / "w"
    with pytest.raises(RuntimeError):
        generate_world(target, seed=1, **TINY)
    assert not target.exists() and not world_is_complete(target)
    assert not list(tmp_path.glob(".w.partial-*"))


def test_cloudvolume_reads_layers_and_meshes(world, summary):
    em = CloudVolume(f"file://{world}/em", fill_missing=True, progress=False)
    seg = CloudVolume(f"file://{world}/segmentation", fill_missing=True, progress=False)
    assert tuple(em.resolution) == (32, 32, 45) and tuple(seg.voxel_offset) != (0, 0, 0)
    size_nm = np.array(seg.volume_size) * np.array(seg.resolution)
    assert (size_nm >= [4 * 80_000, 3 * 80_000, 2 * 80_000]).all()
    x, y, z = summary["geometry"]["sites_vx"][0]
    img = np.asarray(em[x : x + 128, y : y + 128, z : z + 80])[..., 0]
    svs = np.asarray(seg[x : x + 128, y : y + 128, z : z + 80])[..., 0]
    assert img.dtype == np.uint8 and img.std() > 10
    assert svs.dtype == np.uint64
    labels = np.unique(svs)
    assert labels[0] == 0 and (labels[1:] > 2**56).all() and len(labels) > 10
    assert img[svs != 0].mean() > img[svs == 0].mean()  # cytoplasm brighter than extracellular space
    # far from every site: missing chunks read as zeros
    sites = np.array(summary["geometry"]["sites_vx"])
    empty = next(c for c in ([640, 512, 120], [11200, 8000, 4000]) if (np.abs(sites - c) >= 128).any(axis=1).all())
    ex, ey, ez = empty
    assert not np.asarray(seg[ex : ex + 64, ey : ey + 64, ez : ez + 40]).any()
    root = int(_table(world, "proofread_neurons")["pt_root_id"][0].as_py())
    mesh = seg.mesh.get(root, fuse=False)[root]
    assert len(mesh.faces) > 100
    skel = _table(world, "skeletons").to_pylist()
    verts = np.array(next(s for s in skel if s["root_id"] == root)["vertices_nm"])
    assert np.abs(mesh.vertices.mean(axis=0) - verts.mean(axis=0)).max() < 1500  # same place, in nm


def test_every_root_has_a_mesh_except_the_injected_ones(world, summary):
    seg = CloudVolume(f"file://{world}/segmentation", progress=False)
    roots = [int(r) for r in _table(world, "roots")["root_id"].to_pylist()]
    exists = seg.mesh.exists(roots)
    missing = sorted(int(k) for k, v in exists.items() if v is None)
    assert missing == sorted(summary["defects"]["roots_without_mesh"])
    assert len(missing) >= 1


def test_history_is_consistent(world):
    roots = {r["root_id"]: r for r in _table(world, "roots").to_pylist()}
    ops = _table(world, "operations").to_pylist()
    assert all(r > 2**59 for r in roots) and all(sv > 2**56 for r in roots.values() for sv in r["supervoxel_ids"])
    times = sorted({op["timestamp"] for op in ops})
    assert times[0] >= OPS_START and times[-1] < AS_OF and min(np.diff(times)) >= 10
    for op in ops:
        for r in op["before_root_ids"]:
            assert roots[r]["expired_ts"] == op["timestamp"]
        for r in op["after_root_ids"]:
            assert roots[r]["created_ts"] == op["timestamp"]
        before = set().union(*(roots[r]["supervoxel_ids"] for r in op["before_root_ids"]))
        after = set().union(*(roots[r]["supervoxel_ids"] for r in op["after_root_ids"]))
        assert before == after
        assert len(op["before_root_ids"]) == (2 if op["is_merge"] else 1)
        assert len(op["after_root_ids"]) == (1 if op["is_merge"] else 2)
    # at as_of every supervoxel has exactly one live root, and each live root is one true neuron
    live = [r for r in roots.values() if r["expired_ts"] is None]
    svs = [sv for r in live for sv in r["supervoxel_ids"]]
    assert len(svs) == len(set(svs))
    assert all(len(r["neuron_ids"]) == 1 for r in live)
    assert any(len(r["neuron_ids"]) == 2 for r in roots.values())  # false merges existed


def test_injected_defects(world, summary):
    d = summary["defects"]
    ops = _table(world, "operations").to_pylist()
    ids = [op["operation_id"] for op in ops]
    for op_id in d["duplicated_operation_rows"]:
        assert ids.count(op_id) == 2
    for op in ops:
        if op["operation_id"] in d["operations_without_points"]:
            assert op["source_coords_vx"] == [] and op["sink_coords_vx"] == []
    syn = {s["id"]: s for s in _table(world, "synapses").to_pylist()}
    assert len(d["synapses_with_null_root"]) == 2
    for sid in d["synapses_with_null_root"]:
        assert syn[sid]["pre_pt_root_id"] is None or syn[sid]["post_pt_root_id"] is None


def test_skeletons_have_branch_points(world):
    for s in _table(world, "skeletons").to_pylist():
        edges = np.array(s["edges"])
        deg = np.bincount(edges.ravel(), minlength=len(s["vertices_nm"]))
        assert len(edges) == len(s["vertices_nm"]) - 1  # a tree
        assert (deg >= 3).any()


def test_counts_match_tables(world, summary):
    c = summary["counts"]
    assert c["roots"] == _table(world, "roots").num_rows
    assert c["operation_rows"] == _table(world, "operations").num_rows
    assert c["operations"] == c["merge_operations"] + c["split_operations"]
    assert c["synapses"] == _table(world, "synapses").num_rows
    assert c["proofread_neurons"] == _table(world, "proofread_neurons").num_rows
    assert c["edit_points_exact_moved_unresolved"][2] == 0


def test_stale_partial_of_a_killed_generator_is_removed(tmp_path):
    stale = tmp_path / ".w.partial-999999999"
    (stale / "em").mkdir(parents=True)
    generate_world(tmp_path / "w", seed=3, n_sites=1, neurons_per_site=2)
    assert world_is_complete(tmp_path / "w") and not stale.exists()


def test_the_capsules_near_a_chunk_are_those_whose_box_meets_it_in_their_order():
    """capsules_near tests every capsule's box at once (capsule_boxes, computed once per world): the same capsules,
    in the same order, as testing them one by one (the world's bytes depend on it)."""
    import numpy as np

    from sim.demo_world.longrange import capsule_boxes, capsules_near

    rng = np.random.default_rng(5)
    res, chunk_vx, offset = np.array([32.0, 32.0, 45.0]), np.array([64, 64, 32]), np.array([0, 0, 0])
    caps = [(rng.uniform(0, 8000, 3), rng.uniform(0, 8000, 3), float(rng.uniform(20, 200)),
             float(rng.uniform(20, 200)), i) for i in range(300)]  # fmt: skip
    boxes = capsule_boxes(caps, res)
    seen = 0
    for chunk in [(0, 0, 0), (1, 2, 3), (3, 3, 5), (9, 9, 9)]:
        lo = (offset + np.asarray(chunk) * chunk_vx) * res
        hi = lo + chunk_vx * res
        one_by_one = [c[4] for c in caps if (np.minimum(c[0], c[1]) - max(c[2], c[3]) - res.max() < hi).all()
                      and (np.maximum(c[0], c[1]) + max(c[2], c[3]) + res.max() > lo).all()]  # fmt: skip
        assert [c[4] for c in capsules_near(caps, chunk, res, chunk_vx, offset, boxes)] == one_by_one
        assert [c[4] for c in capsules_near(caps, chunk, res, chunk_vx, offset)] == one_by_one
        seen += len(one_by_one)
    assert seen > 0 and capsules_near([], (0, 0, 0), res, chunk_vx, offset) == []
