"""A neuron's level-2 graph as a chunkedgraph holds it, derived from the world's skeleton (nothing stored).

PyChunkedGraph's level-2 graph (app/segmentation/common.py handle_get_layer2_graph) has one node per
connected component of the neuron within each level-2 chunk, and an edge wherever two components
touch across a chunk face; the neurite's thickness makes components meet across corners too, so the
graph has cycles and is not a skeleton. Here the neuron is its skeleton swept by a tube: the
centreline is sampled every `STEP_NM`, samples of one chunk joined along the centreline form a
component, and two components are joined where the centreline crosses between them or where their
samples come within `CONTACT_NM` of each other in different chunks (the tubes touch). A component's
representative coordinate (the l2cache's `rep_coord_nm`, a voxel inside it, in nm) is the voxel of
its sample nearest the component's centroid.

Pure and deterministic: the twin serves it (sim/twin/cache.py) and the demo source builds the
same skeleton from it (pipeline/sources/l2skeleton.py), so both sources give the same junctions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from pipeline.sources.demo_volume import CHUNK, RES, VOXEL_OFFSET

STEP_NM = 50.0  # centreline sampling: well under a chunk and under the contact distance
CONTACT_NM = 250.0  # two tubes of ~125 nm radius touch (the world's neurites are 100-250 nm thick)


@dataclass(frozen=True)
class Level2Graph:
    """Components of one neuron: their chunk (x, y, z), representative point (nm) and index pairs of edges."""

    chunks: np.ndarray  # (N, 3) int64
    rep_coord_nm: np.ndarray  # (N, 3) float64
    edges: np.ndarray  # (E, 2) int64, a < b, sorted, unique


def chunk_of_nm(points_nm: np.ndarray) -> np.ndarray:
    """Level-2 chunk (x, y, z) of points in nm (chunks start at the volume's voxel offset)."""
    vx = np.floor(np.asarray(points_nm, dtype=np.float64) / RES).astype(np.int64)
    return (vx - VOXEL_OFFSET) // CHUNK.astype(np.int64)


def _samples(vertices: np.ndarray, edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centreline samples (the vertices first, then points along each edge) and their chain edges."""
    points = [vertices]
    links = []
    n = len(vertices)
    for a, b in edges:
        steps = max(1, int(np.ceil(np.linalg.norm(vertices[b] - vertices[a]) / STEP_NM)))
        t = np.arange(1, steps)[:, None] / steps
        inner = vertices[a] + t * (vertices[b] - vertices[a])
        chain = [int(a), *range(n, n + len(inner)), int(b)]
        points.append(inner)
        n += len(inner)
        links.extend(zip(chain[:-1], chain[1:], strict=True))
    return np.concatenate(points).reshape(-1, 3), np.asarray(links, dtype=np.int64).reshape(-1, 2)


def _components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Union-find labels 0..k-1 (numbered by each component's lowest sample)."""
    parent = np.arange(n)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = np.array([find(i) for i in range(n)])
    _, labels = np.unique(roots, return_inverse=True)
    return labels.ravel()


def level2_graph(vertices_nm: np.ndarray, edges: np.ndarray) -> Level2Graph:
    """The level-2 graph of a neuron whose centreline is the skeleton (vertices in nm, index-pair edges)."""
    vertices = np.asarray(vertices_nm, dtype=np.float64).reshape(-1, 3)
    samples, links = _samples(vertices, np.asarray(edges, dtype=np.int64).reshape(-1, 2))
    chunk = chunk_of_nm(samples)
    same = (chunk[links[:, 0]] == chunk[links[:, 1]]).all(axis=1)
    comp = _components(len(samples), links[same])
    n = int(comp.max()) + 1 if len(comp) else 0
    crossing = links[~same]
    contacts = cKDTree(samples).query_pairs(CONTACT_NM, output_type="ndarray")
    contacts = contacts[(chunk[contacts[:, 0]] != chunk[contacts[:, 1]]).any(axis=1)] if len(contacts) else contacts
    pairs = np.concatenate([crossing, contacts.reshape(-1, 2)]) if len(crossing) or len(contacts) else crossing
    ca, cb = comp[pairs[:, 0]], comp[pairs[:, 1]]
    keep = ca != cb
    graph_edges = np.unique(np.sort(np.stack([ca[keep], cb[keep]], axis=1), axis=1), axis=0).reshape(-1, 2)
    reps = np.zeros((n, 3))
    chunks = np.zeros((n, 3), dtype=np.int64)
    for c in range(n):
        members = np.flatnonzero(comp == c)
        pts = samples[members]
        best = pts[int(np.argmin(np.linalg.norm(pts - pts.mean(axis=0), axis=1)))]
        reps[c] = np.floor(best / RES) * RES  # a voxel's corner, as the real cache's points are voxels
        chunks[c] = chunk[members[0]]
    return Level2Graph(chunks=chunks, rep_coord_nm=reps, edges=graph_edges.astype(np.int64))
