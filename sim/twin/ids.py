"""Graphene node ids of the twin's chunkedgraph: layer | chunk x | chunk y | chunk z | segment id.

The layout is the chunkedgraph's (read by cloud-volume's GrapheneMetadata: decode_layer_id,
decode_chunk_position, decode_chunk_position_number), so the real client decodes the twin's level-2
ids into the chunks their mesh fragments cover. The graph's level-2 chunks are the watershed's
storage chunks (cloud-volume's stitching assumes they are the same size).
"""

from __future__ import annotations

import numpy as np

from pipeline.sources.demo_volume import CHUNK, RES, VOLUME_SIZE, VOXEL_OFFSET

N_LAYERS = 10
LAYER_BITS = 8
# bits per chunk coordinate at each layer (the world's 176 x 127 x 100 level-2 chunks need 8)
SPATIAL_BITS = {1: 10, 2: 10, 3: 9, 4: 8, 5: 7, 6: 6, 7: 5, 8: 4, 9: 3, 10: 2}
GRAPH_CHUNK_VX = CHUNK.astype(np.int64)
FAN_OUT = 2


def segid_bits(layer: int) -> int:
    return 64 - LAYER_BITS - 3 * SPATIAL_BITS[layer]


def encode(layer: int, x: int, y: int, z: int, segid: int) -> int:
    """The node id of segment `segid` in chunk (x, y, z) of `layer`."""
    bits = SPATIAL_BITS[layer]
    if not (0 <= x < 2**bits and 0 <= y < 2**bits and 0 <= z < 2**bits):
        raise ValueError(f"chunk ({x}, {y}, {z}) out of range for layer {layer}")
    if not 0 < segid < 2 ** segid_bits(layer):
        raise ValueError(f"segment id {segid} out of range for layer {layer}")
    sb = segid_bits(layer)
    return (layer << (64 - LAYER_BITS)) | (x << (sb + 2 * bits)) | (y << (sb + bits)) | (z << sb) | segid


def layer_of(node_id: int) -> int:
    return int(node_id) >> (64 - LAYER_BITS)


def chunk_of(node_id: int) -> tuple[int, int, int]:
    layer = layer_of(node_id)
    bits, sb = SPATIAL_BITS[layer], segid_bits(layer)
    mask = (1 << bits) - 1
    n = int(node_id)
    return ((n >> (sb + 2 * bits)) & mask, (n >> (sb + bits)) & mask, (n >> sb) & mask)


def chunk_position_number(node_id: int) -> int:
    """The packed chunk position cloud-volume names graphene shard files by (`{number}-{shard}.shard`)."""
    n = int(node_id) & ((1 << (64 - LAYER_BITS)) - 1)
    return n >> segid_bits(layer_of(node_id))


def chunk_index_of_nm(points_nm: np.ndarray) -> np.ndarray:
    """Level-2 chunk (x, y, z) of points in nm (chunks start at the volume's voxel offset)."""
    vx = np.floor(np.asarray(points_nm, dtype=np.float64) / RES).astype(np.int64)
    return (vx - VOXEL_OFFSET) // GRAPH_CHUNK_VX


def chunk_box_vx(chunk: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """[lo, hi) of a level-2 chunk in mip-0 voxels (absolute: voxel offset included)."""
    lo = VOXEL_OFFSET + np.asarray(chunk, dtype=np.int64) * GRAPH_CHUNK_VX
    return lo, lo + GRAPH_CHUNK_VX


def legacy_fragment_name(node_id: int) -> str:
    """`{id}:0:{bbox}` as the chunkedgraph names an unsharded fragment (pcgv1 meshgen_utils.get_mesh_name):
    the chunk's box in voxels from the chunk grid's origin, WITHOUT the volume's voxel offset."""
    layer = layer_of(node_id)
    block = GRAPH_CHUNK_VX * FAN_OUT ** max(0, layer - 2)
    lo = np.asarray(chunk_of(node_id), dtype=np.int64) * block
    hi = lo + block
    return f"{int(node_id)}:0:" + "_".join(f"{a}-{b}" for a, b in zip(lo.tolist(), hi.tolist(), strict=True))


def graph_bounding_box_vx() -> list[int]:
    return [int(x) for x in VOLUME_SIZE]
