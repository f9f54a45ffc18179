"""A skeleton from a level-2 graph: the tree whose branch points are the neuron's, not the graph's.

A real level-2 graph (one node per chunk component, edges where components touch, cycles where the
neurite crosses near a chunk corner) has nodes of degree >= 3 wherever a neurite passes a corner, so
its own branch points are not the neuron's. pcg-skel (the ecosystem's tool) runs TEASAR over the same
graph; this is the small equivalent measured against it (benchmarks/bench_l2skeleton.py): the minimum
spanning tree over the nodes' representative points (corner cycles close with their longest edge),
then leaf twigs shorter than `PRUNE_NM` removed (a corner contact leaves a one-node stub; a real side
branch reaches further). Deterministic: ties broken by node order.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import minimum_spanning_tree

PRUNE_NM = 500.0  # a corner contact leaves a stub about one contact distance long; a real side branch is longer


def spanning_tree(points_nm: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Edges (a < b, sorted) of the minimum spanning forest of the graph, weighted by Euclidean length."""
    pts = np.asarray(points_nm, dtype=np.float64).reshape(-1, 3)
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    e = np.unique(np.sort(e[e[:, 0] != e[:, 1]], axis=1), axis=0)
    if len(e) == 0:
        return e
    # ties broken by edge order: a length plus a sub-nm rank term keeps the tree unique
    w = np.linalg.norm(pts[e[:, 0]] - pts[e[:, 1]], axis=1) + 1e-6 * (1 + np.arange(len(e))) / len(e)
    tree = minimum_spanning_tree(coo_matrix((w, (e[:, 0], e[:, 1])), shape=(len(pts), len(pts)))).tocoo()
    out = np.sort(np.stack([tree.row, tree.col], axis=1).astype(np.int64), axis=1)
    return out[np.lexsort((out[:, 1], out[:, 0]))]


def prune_twigs(points_nm: np.ndarray, edges: np.ndarray, min_length_nm: float = PRUNE_NM) -> np.ndarray:
    """The tree without leaf twigs (leaf to the first branch point) shorter than `min_length_nm`. One pass:
    what a pruned twig leaves behind is not pruned again, so a neuron is never eaten from its tips."""
    pts = np.asarray(points_nm, dtype=np.float64).reshape(-1, 3)
    e = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    nbrs: dict[int, list[int]] = {}
    for a, b in e:
        nbrs.setdefault(int(a), []).append(int(b))
        nbrs.setdefault(int(b), []).append(int(a))
    drop: set[tuple[int, int]] = set()
    for leaf in sorted(n for n, ns in nbrs.items() if len(ns) == 1):
        path, length, prev, node = [], 0.0, -1, leaf
        while len(nbrs[node]) <= 2:
            nxt = [n for n in nbrs[node] if n != prev]
            if not nxt:  # a bare path: no branch point to prune towards
                path = []
                break
            length += float(np.linalg.norm(pts[nxt[0]] - pts[node]))
            path.append((min(node, nxt[0]), max(node, nxt[0])))
            prev, node = node, nxt[0]
        if path and len(nbrs[node]) >= 3 and length < min_length_nm:
            drop.update(path)
    keep = [i for i, (a, b) in enumerate(e) if (min(a, b), max(a, b)) not in drop]
    return e[keep]


def skeleton_edges(points_nm: np.ndarray, edges: np.ndarray, min_length_nm: float = PRUNE_NM) -> np.ndarray:
    """The skeleton of a level-2 graph as index pairs over its nodes (nodes a pruned twig left alone keep
    their index and simply have no edge)."""
    return prune_twigs(points_nm, spanning_tree(points_nm, edges), min_length_nm)
