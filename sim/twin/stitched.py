"""Which fragments a v1 (pcgv1) manifest lists for a root: the highest nodes that have a mesh.

pcgv1's manifest (app/meshing/common.py handle_get_manifest -> meshing/meshgen_utils.py
get_highest_child_nodes_with_meshes, with `verify`) starts at the root and descends only where a
node's mesh file is missing, down to layer 2. Initial meshes exist at layer 2; an edit remeshes its
new level-2 nodes and stitches their parents up to `stop_layer = 4` (app/meshing/tasks.py remeshing ->
meshing/meshgen.py remeshing). A root therefore lists, in every layer-4 chunk where an edit of its
lineage happened, one stitched node covering all its level-2 fragments there (8-64x a level-2 chunk),
and elsewhere its level-2 fragments. Where the root's part of that layer-4 chunk lies in one layer-3
chunk, the chunkedgraph's skip connection leaves it without a layer-4 parent: the stitched node is
that layer-3 node.

The twin keeps one node per (root, chunk) at every layer (as it does at layer 2), and meshes are not
simplified (the real stitched meshes are made at mip 1 with max_err 320 nm): a stitched fragment has
exactly its level-2 fragments' faces.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from sim.twin.ids import FAN_OUT

STOP_LAYER = 4  # pcgv1 app/meshing/tasks.py: meshgen.remeshing(..., stop_layer=4, ...)


@dataclass(frozen=True)
class Stitched:
    layer: int
    chunk: tuple[int, int, int]  # at `layer`
    members: tuple[int, ...]  # indices of the root's level-2 fragments it covers


def parent_chunk(l2_chunk: Iterable[int], layer: int) -> tuple[int, int, int]:
    """The chunk at `layer` holding a level-2 chunk (each layer halves the grid: FAN_OUT 2 per axis)."""
    scale = FAN_OUT ** (layer - 2)
    x, y, z = (int(c) // scale for c in l2_chunk)
    return (x, y, z)


def highest_meshed(
    fragment_chunks: list[tuple[int, int, int]], edited_l2_chunks: Iterable[tuple[int, int, int]]
) -> tuple[list[Stitched], list[int]]:
    """(stitched nodes, indices of level-2 fragments listed as themselves) for one root, given the level-2
    chunks its lineage's edits touched."""
    edited = {parent_chunk(c, STOP_LAYER) for c in edited_l2_chunks}
    groups: dict[tuple[int, int, int], list[int]] = defaultdict(list)
    plain = []
    for i, chunk in enumerate(fragment_chunks):
        top = parent_chunk(chunk, STOP_LAYER)
        if top in edited:
            groups[top].append(i)
        else:
            plain.append(i)
    stitched = []
    for top in sorted(groups):
        members = tuple(groups[top])
        below = {parent_chunk(fragment_chunks[i], STOP_LAYER - 1) for i in members}
        if len(below) == 1:  # one layer-3 node: no layer-4 parent (skip connection)
            stitched.append(Stitched(STOP_LAYER - 1, next(iter(below)), members))
        else:
            stitched.append(Stitched(STOP_LAYER, top, members))
    return stitched, plain


def edit_chunks(points_vx: Iterable[np.ndarray], voxel_offset: np.ndarray, chunk_vx: np.ndarray) -> set:
    """Level-2 chunks of edit points given in absolute mip-0 voxels."""
    out = set()
    for p in points_vx:
        c = (np.asarray(p, dtype=np.int64) - voxel_offset) // chunk_vx
        out.add(tuple(int(v) for v in c))
    return out
