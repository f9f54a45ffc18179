"""Mesh fragments as a chunkedgraph stores them: one Draco fragment per level-2 chunk of a root.

Pure functions (arrays in, arrays/bytes out). A root's mesh is split by the level-2 chunk holding each
face's centroid (the real meshing service meshes each chunk on its own; the twin cuts the world's
per-root mesh instead, so a fragment's faces may reach past its chunk by up to one face: see
`overhang_nm`). Each fragment is Draco-encoded on a grid shared by all fragments, so a vertex shared
by two fragments lands on the same quantized point in both (what PyChunkedGraph's
meshgen.get_draco_encoding_settings_for_chunk achieves with chunk-aligned origins and integral bins).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import DracoPy
import numpy as np

from sim.twin.ids import chunk_box_vx, chunk_index_of_nm


def pcg_draco_bin_nm(resolution_nm: np.ndarray, chunk_vx: np.ndarray) -> float:
    """The Draco bin PyChunkedGraph picks for a level-2 chunk (meshgen.get_draco_encoding_settings_for_chunk
    and calculate_quantization_bits_and_range): the chunk plus one voxel of padding, in as few bits as
    keep the bin under floor(min(res) / sqrt(2)), the bin rounded up to whole nm."""
    res = np.asarray(resolution_nm, dtype=np.float64)
    min_range = float(((np.asarray(chunk_vx) + 1) * res).max())
    max_bin = math.floor(float(res.min()) / math.sqrt(2.0))
    bits = int(math.ceil(math.log2(min_range / max_bin + 1)))
    while True:
        n_bins = 2**bits - 1
        bin_nm = math.ceil(min_range / n_bins)
        if bin_nm * n_bins >= min_range + bin_nm:
            return float(bin_nm)
        if bin_nm != max_bin:
            return float(bin_nm + 1)
        bits += 1


@dataclass(frozen=True)
class Quantization:
    """Draco position quantization of one fragment: values land on origin + k * bin_nm."""

    bits: int
    range_nm: float
    origin_nm: tuple[float, float, float]
    bin_nm: float


def quantization_for(vertices: np.ndarray, bin_nm: float) -> Quantization:
    """The smallest quantization on the global `bin_nm` grid that covers the fragment's vertices."""
    vmin = vertices.min(axis=0).astype(np.float64)
    vmax = vertices.max(axis=0).astype(np.float64)
    origin = np.floor(vmin / bin_nm) * bin_nm
    need = float((vmax - origin).max())
    bits = max(1, int(math.ceil(math.log2(need / bin_nm + 2.0))))
    return Quantization(bits, bin_nm * (2**bits - 1), tuple(float(x) for x in origin), bin_nm)


def encode_fragment(vertices: np.ndarray, faces: np.ndarray, q: Quantization) -> bytes:
    return DracoPy.encode(
        np.asarray(vertices, dtype=np.float32),
        np.asarray(faces, dtype=np.uint32),
        quantization_bits=q.bits,
        compression_level=1,
        quantization_range=q.range_nm,
        quantization_origin=np.asarray(q.origin_nm, dtype=np.float64),
    )


@dataclass(frozen=True)
class Fragment:
    chunk: tuple[int, int, int]
    vertices: np.ndarray  # (N, 3) float32 nm
    faces: np.ndarray  # (F, 3) uint32


def split_by_chunk(vertices: np.ndarray, faces: np.ndarray) -> list[Fragment]:
    """The mesh's faces grouped by the level-2 chunk of their centroid, each group re-indexed; sorted by chunk."""
    v = np.asarray(vertices, dtype=np.float32).reshape(-1, 3)
    f = np.asarray(faces, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        return []
    chunks = chunk_index_of_nm(v[f].astype(np.float64).mean(axis=1))
    keys, inverse = np.unique(chunks, axis=0, return_inverse=True)
    out = []
    for i, key in enumerate(keys):
        sub = f[inverse.ravel() == i]
        used, local = np.unique(sub, return_inverse=True)
        out.append(Fragment(tuple(int(c) for c in key), v[used], local.reshape(-1, 3).astype(np.uint32)))
    return out


def overhang_nm(fragment: Fragment, resolution_nm: np.ndarray) -> float:
    """How far the fragment's vertices reach outside its chunk (0 if inside)."""
    lo, hi = chunk_box_vx(fragment.chunk)
    res = np.asarray(resolution_nm, dtype=np.float64)
    v = fragment.vertices.astype(np.float64)
    out = np.maximum(lo * res - v, 0.0) + np.maximum(v - hi * res, 0.0)
    return float(out.max()) if len(v) else 0.0
