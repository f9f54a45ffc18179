"""Skeletons from level-2 graphs: how many of their branch points are the neuron's, per method.

On the demo world's proofread neurons: the level-2 graph the twin serves (pipeline/sources/demo_level2.py)
is skeletonized and each method's branch points (degree >= 3) are checked against the world's own
skeleton: a branch point is "near" when a true one lies within one level-2 chunk per axis; recall is the
share of true branch points with one near. Methods: the graph itself (what the code did before), the
minimum spanning tree with twigs pruned at several lengths (pipeline/sources/l2skeleton.py), and
pcg-skel's pcg_skeleton_direct (TEASAR via meshparty) when it is importable. pcg-skel is not a
dependency of the project (it brings meshparty and its stack for one function); to compare, install it
beside the project's packages and run this module.

    .venv/bin/python -m benchmarks.bench_l2skeleton
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow.parquet as pq

from benchmarks.common import demo_context
from pipeline.sources.demo_level2 import level2_graph
from pipeline.sources.demo_volume import CHUNK, RES
from pipeline.sources.l2skeleton import PRUNE_NM, prune_twigs, spanning_tree
from pipeline.stages.bank_candidates import junction_points
from sim.demo_world import ensure_world

CHUNK_NM = CHUNK * RES


def _points(vertices: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.asarray([p for p, _ in junction_points(vertices, edges)], dtype=np.float64).reshape(-1, 3)


def _score(found: np.ndarray, truth: np.ndarray) -> tuple[int, int, int]:
    def near(p: np.ndarray, pts: np.ndarray) -> bool:
        return bool(len(pts)) and bool((np.abs(pts - p) <= CHUNK_NM).all(axis=1).any())

    return len(found), sum(near(p, truth) for p in found), sum(near(p, found) for p in truth)


def _methods() -> dict:
    out = {"level-2 graph itself": lambda v, e: e}
    for prune in (0.0, 500.0, PRUNE_NM, 2000.0):
        out[f"MST, twigs < {prune:.0f} nm pruned"] = lambda v, e, p=prune: prune_twigs(v, spanning_tree(v, e), p)
    try:
        import pcg_skel  # noqa: PLC0415 - optional, measured when present
    except ImportError:
        return out
    for inv in (7500, 3000, 1500):

        def teasar(v: np.ndarray, e: np.ndarray, inv: int = inv) -> tuple:
            sk = pcg_skel.pcg_skeleton_direct(v, e, invalidation_d=inv)
            return np.asarray(sk.vertices), np.asarray(sk.edges)

        out[f"pcg-skel, invalidation_d {inv}"] = teasar
    return out


def run() -> dict:
    ctx = demo_context("pipeline")
    ensure_world(ctx)
    rows = pq.read_table(ctx.world_dir / "tables" / "skeletons.parquet").to_pylist()
    graphs = []
    for row in rows:
        v = np.asarray(row["vertices_nm"], dtype=np.float64).reshape(-1, 3)
        e = np.asarray(row["edges"], dtype=np.int64).reshape(-1, 2)
        graphs.append((_points(v, e), level2_graph(v, e)))
    n_nodes = sum(len(g.rep_coord_nm) for _, g in graphs)
    cycles = sum(len(g.edges) - len(g.rep_coord_nm) + 1 for _, g in graphs)
    n_true = sum(len(t) for t, _ in graphs)
    print(f"  {len(rows)} neurons, {n_true} true branch points; level-2 graphs: {n_nodes} nodes, {cycles} cycles")
    print(f"  {'method':<34} {'branch pts':>10} {'near':>6} {'recall':>7} {'ms/neuron':>9}")
    results = {}
    for name, method in _methods().items():
        found = near = hit = 0
        start = time.perf_counter()
        for truth, g in graphs:
            got = method(g.rep_coord_nm, g.edges)
            v, e = got if isinstance(got, tuple) else (g.rep_coord_nm, got)
            f, n, h = _score(_points(v, np.asarray(e, dtype=np.int64).reshape(-1, 2)), truth)
            found, near, hit = found + f, near + n, hit + h
        ms = (time.perf_counter() - start) * 1000 / max(1, len(graphs))
        print(f"  {name:<34} {found:>10} {near:>6} {hit / max(1, n_true):>7.2f} {ms:>9.2f}")
        results[name] = {"found": found, "near": near, "recall": hit / max(1, n_true)}
    return results


if __name__ == "__main__":
    run()
