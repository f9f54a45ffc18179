"""Bounded mesh fetches (pipeline/sources/cave/meshes.py): the box in voxels, and a v1 manifest (which ignores
`bounds`) filtered on the client so that only the fragments whose chunks meet the box are downloaded."""

from __future__ import annotations

import numpy as np
from cloudvolume.lib import Bbox

from pipeline.sources.cave.meshes import box_to_voxels, filter_manifest

RES = (4.0, 4.0, 40.0)
CHUNK_VX = np.array([256, 256, 32])


def legacy_name(root: int, chunk: tuple[int, int, int]) -> str:
    """`{id}:0:{x0}-{x1}_{y0}-{y1}_{z0}-{z1}`: a level-2 fragment of the chunk at index `chunk`, in voxels from the
    chunk grid's origin (as pcgv1's legacy manifest names it)."""
    lo = np.asarray(chunk) * CHUNK_VX
    hi = lo + CHUNK_VX
    return f"{root}:0:" + "_".join(f"{a}-{b}" for a, b in zip(lo, hi, strict=True))


def manifest_of(root: int, chunks: list[tuple[int, int, int]]) -> dict:
    names = [legacy_name(root, c) for c in chunks]
    return {"fragments": names, "seg_ids": [root * 100 + i for i in range(len(names))]}


GRID = [(i, j, k) for i in range(4) for j in range(2) for k in range(2)]


def test_the_box_is_padded_floored_and_ceiled_to_voxels_and_clamped_to_the_volume():
    box = box_to_voxels(((1002.0, 2003.0, 400.0), (1998.0, 2997.0, 801.0)), RES, 100.0, (0, 0, 0), (10_000, 10_000, 15))
    assert box.minpt.tolist() == [225, 475, 7] and box.maxpt.tolist() == [525, 775, 15]  # z clamped at the bound
    assert box_to_voxels(((-900.0, 0.0, 0.0), (-500.0, 10.0, 10.0)), RES, 100.0, (0, 0, 0), (100, 100, 100)) is None


def test_only_the_fragments_whose_chunks_meet_the_box_are_kept():
    manifest = manifest_of(7, GRID)
    box = Bbox((300, 10, 5), (500, 200, 30))  # inside chunk x = 1, y = 0, z = 0 only
    got = filter_manifest(manifest, box, np.zeros(3, np.int64))
    assert got["fragments"] == [legacy_name(7, (1, 0, 0))]
    assert got["seg_ids"] == [manifest["seg_ids"][GRID.index((1, 0, 0))]]  # kept aligned with the fragments
    assert len(manifest["fragments"]) == len(GRID)  # the manifest itself is not changed


def test_a_box_across_chunk_faces_keeps_every_chunk_it_enters_and_none_it_only_touches():
    box = Bbox((200, 250, 0), (512, 260, 32))  # x: chunks 0 and 1 (ends on chunk 2's face); y: chunks 0 and 1
    got = filter_manifest(manifest_of(7, GRID), box, np.zeros(3, np.int64))
    assert sorted(got["fragments"]) == sorted(legacy_name(7, c) for c in [(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0)])


def test_fragment_names_are_read_from_the_chunk_grids_origin():
    box = Bbox((300, 10, 5), (500, 200, 30))
    origin = np.array([256, 0, 0])  # the grid starts one chunk further: name (0, 0, 0) is voxels 256..512
    got = filter_manifest(manifest_of(7, GRID), box, origin)
    assert got["fragments"] == [legacy_name(7, (0, 0, 0))]


def test_sharded_and_unnamed_entries_are_the_servers_choice_and_kept():
    manifest = {"fragments": ["~2/123-0.shard:0:4096:512", "plain", legacy_name(7, (3, 1, 1))]}
    got = filter_manifest(manifest, Bbox((0, 0, 0), (10, 10, 10)), np.zeros(3, np.int64))
    assert got["fragments"] == manifest["fragments"][:2]
