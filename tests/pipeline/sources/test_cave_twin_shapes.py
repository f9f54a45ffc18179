"""Real data shapes served by the twin (both flavours), met through the real caveclient and cloud-volume.

Level-2 graphs with one node per chunk component (cycles included), from which the source builds the
skeleton whose branch points are the junction controls.
"""

from __future__ import annotations

from urllib.parse import unquote

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests

from config.schema import load_config
from pipeline.sources.cave import CaveSource
from pipeline.sources.demo import DemoSource
from pipeline.sources.l2skeleton import prune_twigs, spanning_tree
from pipeline.sources.retrying import RetryingSource
from pipeline.stages.bank_candidates import junction_points
from sim.twin import TOKEN, ids
from sim.twin.info import TABLE_ID
from sim.twin.species import twin_config
from tests.pipeline.fakes import build_bank

CHUNK_NM = ids.GRAPH_CHUNK_VX * np.array([32.0, 32.0, 45.0])


@pytest.fixture(scope="module")
def demo_cfg(tiny_configs):
    return load_config("demo", tiny_configs)


@pytest.fixture()
def cave(twin, demo_cfg):
    return CaveSource(twin_config(demo_cfg, twin.url), token=TOKEN)


def _true_branch_points(world) -> dict[int, np.ndarray]:  # noqa: ANN001
    out = {}
    for row in pq.read_table(world / "tables" / "skeletons.parquet").to_pylist():
        v = np.asarray(row["vertices_nm"], dtype=np.float64).reshape(-1, 3)
        pts = [p for p, _ in junction_points(v, np.asarray(row["edges"], dtype=np.int64).reshape(-1, 2))]
        out[int(row["root_id"])] = np.asarray(pts, dtype=np.float64).reshape(-1, 3)
    return out


def test_level2_graph_has_one_node_per_chunk_component_and_cycles(cave, twin):
    """Served through caveclient: several nodes share a chunk only as separate components, nodes sit in
    their chunk, and the graphs are not trees (corner contacts close cycles)."""
    cycles = shared_chunk = 0
    for root in cave.proofread_roots():
        edges = np.asarray(cave._cg().level2_chunk_graph(root), dtype=np.uint64).reshape(-1, 2)
        nodes = np.unique(edges)
        skel = cave.skeleton(root)
        assert set(skel.extra["l2_ids"].tolist()) == set(nodes.tolist())
        assert skel.extra["l2_edges"] == len({tuple(sorted(map(int, e))) for e in edges})
        for l2, p in zip(skel.extra["l2_ids"], skel.vertices_nm, strict=True):  # rep_coord_nm inside its chunk
            assert tuple(ids.chunk_index_of_nm(p[None])[0]) == ids.chunk_of(int(l2))
        cycles += skel.extra["l2_edges"] - (len(nodes) - 1)
        chunks = [ids.chunk_of(int(n)) for n in nodes]
        shared_chunk += len(chunks) - len(set(chunks))
        assert len(skel.edges) <= len(nodes) - 1  # the skeleton is a forest
    assert cycles > 0 and shared_chunk > 0


def test_junction_controls_sit_at_true_branch_points(cave, demo_cfg, twin, twin_world):
    """Every junction control the bank makes through the twin is within one level-2 chunk of one of the
    neuron's true branch points (the world's skeleton), and the level-2 graph's own degree >= 3 nodes
    would not all be."""
    truth = _true_branch_points(twin_world)
    bank = build_bank(RetryingSource(cave), twin_config(demo_cfg, twin.url))
    junctions = [r for r in bank.rows if r["sample_type"] == "junction_control"]
    assert junctions
    for row in junctions:
        root = int(row["geometry_roots"][0])
        near = (np.abs(truth[root] - np.asarray(row["coord_nm"])) <= CHUNK_NM).all(axis=1)
        assert near.any(), (root, row["coord_nm"])
    raw_far = 0
    for root in truth:
        skel = cave.skeleton(root)
        edges = np.asarray(cave._cg().level2_chunk_graph(root), dtype=np.uint64).reshape(-1, 2)
        index = {int(v): i for i, v in enumerate(skel.extra["l2_ids"])}
        graph = np.array([[index[int(a)], index[int(b)]] for a, b in edges], dtype=np.int64).reshape(-1, 2)
        for p, _ in junction_points(skel.vertices_nm, graph):
            raw_far += not (np.abs(truth[root] - p) <= CHUNK_NM / 2).all(axis=1).any()
    assert raw_far > 0  # the graph's own branch points include corner contacts far from any branch


def test_both_sources_give_the_same_junctions(cave, demo_cfg, twin_world):
    demo = DemoSource(demo_cfg, twin_world)
    found = 0
    for root in demo.proofread_roots():
        a, b = cave.skeleton(root), demo.skeleton(root)
        ja = sorted(tuple(p) + (d,) for p, d in junction_points(a.vertices_nm, a.edges))
        jb = sorted(tuple(p) + (d,) for p, d in junction_points(b.vertices_nm, b.edges))
        assert ja == jb
        found += len(ja)
    assert found > 0


def test_spanning_tree_closes_cycles_and_pruning_drops_short_stubs():
    # a square (a cycle) with a long arm and a short stub off one corner
    pts = np.array([[0, 0, 0], [1000, 0, 0], [1000, 1000, 0], [0, 1000, 0], [5000, 0, 0], [1000, -300, 0]], float)
    edges = np.array([[0, 1], [1, 2], [2, 3], [3, 0], [1, 4], [1, 5]])
    tree = spanning_tree(pts, edges)
    assert len(tree) == len(pts) - 1
    pruned = prune_twigs(pts, tree, 1000.0)
    assert [1, 5] not in pruned.tolist() and [1, 4] in pruned.tolist()
    deg = np.bincount(pruned.ravel(), minlength=len(pts))
    assert deg[5] == 0 and deg[4] == 1


# ---------------------------------------------------------------- v1 manifests: the highest meshed fragments
def _fetched_fragments(records: list) -> set[str]:
    """Names of the mesh fragment files the requests downloaded."""
    names = {unquote(r.path).rsplit("/", 1)[-1] for r in records if "_meshes/" in r.path and r.status == 200}
    return {n for n in names if n.count(":") == 2}


def _v1_source(twins, demo_cfg) -> CaveSource:
    return CaveSource(twin_config(demo_cfg, twins["v1"].url, "v1"), token=TOKEN)


def test_v1_lists_stitched_layer_3_4_fragments_on_the_legacy_route(twins, demo_cfg, twin_world):
    """An edited neuron's v1 manifest (asked by cloud-volume on FlyWire's `segmentation/1.0/...` path, so on
    the legacy `meshing/1.0/...` route) lists layer 3-4 fragments whose boxes are 8-64x a level-2 chunk, and
    the mesh cloud-volume stitches from them has every face of the root's level-2 fragments."""
    twin = twins["v1"]
    cave = _v1_source(twins, demo_cfg)
    demo = DemoSource(demo_cfg, twin_world)
    edited = [r for r in demo.proofread_roots() if r in twin.world.v1_manifests]
    assert edited
    layers_seen = set()
    for root in edited[:4]:
        n = len(twin.requests)
        mesh = cave.mesh(root)
        paths = [r.path for r in twin.requests[n:]]
        assert any(p.startswith("/meshing/1.0/") and p.endswith(f"/manifest/{root}:0") for p in paths)
        listed = twin.world.v1_manifests[root]
        layers_seen |= set(listed["layers"])
        for name, layer in zip(listed["fragments"], listed["layers"], strict=True):
            assert ids.layer_of(int(name.split(":")[0])) == layer
            box = np.array([[int(v) for v in part.split("-")] for part in name.split(":")[2].split("_")])
            assert ((box[:, 1] - box[:, 0]) == ids.GRAPH_CHUNK_VX * 2 ** (layer - 2)).all()
        assert _fetched_fragments(twin.requests[n:]) == set(listed["fragments"])
        assert len(mesh.faces) == len(demo.mesh(root).faces)
    assert {3, 4} & layers_seen and 2 in layers_seen


def test_v1_bounded_fetch_keeps_only_stitched_fragments_meeting_the_box(twins, demo_cfg, twin_world):
    """The server ignores `bounds`; the source keeps the fragments whose (larger) boxes meet the box."""
    twin = twins["v1"]
    cave = _v1_source(twins, demo_cfg)
    root = next(r for r in DemoSource(demo_cfg, twin_world).proofread_roots() if r in twin.world.v1_manifests)
    listed = twin.world.v1_manifests[root]
    whole = cave.mesh(root)
    lo, hi = whole.vertices.min(axis=0), whole.vertices.max(axis=0)
    box = (lo, lo + (hi - lo) / 4)
    n = len(twin.requests)
    part = cave.mesh(root, box_nm=box)
    fetched = {
        r.path.rsplit("/", 1)[-1] for r in twin.requests[n:] if r.path.count(":") == 2 and "manifest" not in r.path
    }
    assert fetched and fetched < set(listed["fragments"])
    assert 0 < len(part.faces) < len(whole.faces)


def test_v1_manifest_without_verify_lists_the_node_itself(twins):
    """pcgv1 get_highest_child_nodes_with_meshes without verify_existence returns the queried node."""
    twin = twins["v1"]
    root = next(iter(twin.world.v1_manifests))
    url = f"{twin.url}/meshing/1.0/{TABLE_ID}/manifest/{root}:0"
    got = requests.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
    assert got == {"fragments": [ids.legacy_fragment_name(root)]}
    verified = requests.get(url, params={"verify": "True"}, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert verified.json()["fragments"] == twin.world.v1_manifests[root]["fragments"]


# ---------------------------------------------------------------- change logs filtered as the server filters them
def test_change_logs_are_filtered_as_the_server_filters_them(cave, twin):
    """caveclient's default (filtered=True) drops the edits failing in_neuron / is_relevant; each dropped
    edit is one the rules name (a merge whose supervoxels are no longer all in the root or began in one
    object, a split whose supervoxels are together again or none in the root); CaveSource asks for the
    whole lineage, so the bank still sees every edit."""
    world = twin.world
    roots = cave.proofread_roots()
    cg = cave._cg()
    full = cg.get_tabular_change_log(roots, filtered=False)
    kept = cg.get_tabular_change_log(roots, filtered=True)
    dropped = 0
    for root in roots:
        whole, some = set(full[root]["operation_id"]), set(kept[root]["operation_id"])
        assert some <= whole
        for op_id in whole - some:
            op = world.ops[int(op_id)]
            now = world.roots_at(np.asarray(op.edge, dtype=np.uint64), int(world.created_ms[world.root_row[root]]))
            if op.is_merge:
                first = world.roots_at(np.asarray(op.edge, dtype=np.uint64), int((world.first_op_s - 0.5) * 1000))
                assert not (now == root).all() or len(set(first.tolist())) == 1
            else:
                assert not (now == root).any() or len(set(now.tolist())) == 1
            dropped += 1
    assert dropped > 0
    log = cave.change_log(roots)
    assert sum(len(full[r]) for r in roots) == log.num_rows
