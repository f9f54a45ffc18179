"""The skeleton of a level-2 graph (pipeline/sources/l2skeleton.py): its branch points are the neuron's, so a side
twig shorter than PRUNE_NM goes whole (however many nodes it has) and a real side branch stays."""

from __future__ import annotations

import numpy as np

from pipeline.sources.l2skeleton import PRUNE_NM, prune_twigs, skeleton_edges
from pipeline.stages.bank_candidates import junction_points


def _path(start: np.ndarray, step: np.ndarray, n: int) -> np.ndarray:
    return np.array([start + step * (i + 1) for i in range(n)], dtype=np.float64)


def _neuron() -> tuple[np.ndarray, np.ndarray, int, int]:
    """A trunk along x (nodes 0-10, 200 nm apart) with a real side branch at node 3 (8 nodes along +y, 1,600 nm)
    and, at node 7, a short twig of three nodes along -y (3 x 100 nm = 300 nm < PRUNE_NM): a chunk-corner stub
    several level-2 nodes long. Returns (points, edges, the real branch node, the twig's base node)."""
    trunk = _path(np.zeros(3), np.array([200.0, 0, 0]), 11) - np.array([200.0, 0, 0])
    pts = [trunk]
    edges = [(i, i + 1) for i in range(10)]
    branch = _path(trunk[3], np.array([0, 200.0, 0]), 8)
    first = 11
    pts.append(branch)
    edges += [(3, first)] + [(first + i, first + i + 1) for i in range(7)]
    twig = _path(trunk[7], np.array([0, -100.0, 0]), 3)
    first_twig = first + 8
    pts.append(twig)
    edges += [(7, first_twig), (first_twig, first_twig + 1), (first_twig + 1, first_twig + 2)]
    return np.concatenate(pts), np.array(edges, dtype=np.int64), 3, 7


def test_a_short_twig_of_several_nodes_is_pruned_whole_and_leaves_no_junction_at_its_base():
    pts, edges, real, twig_base = _neuron()
    assert 300.0 < PRUNE_NM < 1600.0  # the twig is shorter than the pruning length, the real branch longer
    skel = skeleton_edges(pts, edges)
    junctions = [tuple(p) for p, _ in junction_points(pts, skel)]
    assert junctions == [tuple(pts[real])]  # the real branch point only: not the twig's base
    degree = np.bincount(skel.ravel(), minlength=len(pts))
    assert degree[twig_base] == 2
    assert (degree[-3:] == 0).all()  # every node of the twig lost its edges, not only the leaf's
    assert degree[real] == 3 and degree[18] == 1  # the real branch kept to its tip


def test_pruning_is_one_pass_what_a_pruned_twig_leaves_behind_is_not_pruned_again():
    """Node 1 has two 100 nm twigs (leaves 2, 3) and hangs 150 nm off the branch point 0 of two long arms. The
    twigs go; node 1, now a leaf 150 nm from node 0, is not pruned in a second pass (a neuron is never eaten from
    its tips), so 0 keeps its three edges."""
    pts = np.array([[0, 0, 0], [150, 0, 0], [250, 0, 0], [150, 100, 0], [-5000, 0, 0], [0, 5000, 0]], float)
    edges = np.array([[0, 1], [1, 2], [1, 3], [0, 4], [0, 5]])
    pruned = prune_twigs(pts, edges, 500.0)
    assert sorted(map(tuple, pruned.tolist())) == [(0, 1), (0, 4), (0, 5)]
