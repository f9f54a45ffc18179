"""The one interface every source implements (CAVE + CloudVolume, the demo world, fault injection).

Conventions, the same for every implementation:
- root and supervoxel ids are Python ints (uint64 range);
- timestamps are float epoch seconds (UTC); datetimes are converted at the source's edge;
- points are in nm unless the name ends in `_vx` (voxels at the segmentation's base resolution);
- arrays are indexed (x, y, z), as CloudVolume returns them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import trimesh

# Columns each table method must return; the bank checks them and names the table and column.
CHANGE_LOG_COLUMNS = ("root_id", "operation_id", "timestamp", "is_merge", "before_root_ids", "after_root_ids")
SYNAPSE_COLUMNS = ("id", "pre_pt_root_id", "post_pt_root_id", "ctr_pt_position_nm")
# Score columns a synapse table may have (present only where it does; scalar columns the bank passes on).
SYNAPSE_SCORE_COLUMNS = ("cleft_score", "connection_score")


@dataclass(frozen=True)
class OperationDetails:
    """What `get_operation_details` says of one edit."""

    operation_id: int
    timestamp: float
    is_merge: bool
    before_root_ids: tuple[int, ...]
    after_root_ids: tuple[int, ...]
    source_coords_vx: tuple[tuple[float, float, float], ...] = ()
    sink_coords_vx: tuple[tuple[float, float, float], ...] = ()


@dataclass(frozen=True)
class Cutout:
    """A volume cutout: `data[i, j, k]` is the voxel whose lower corner is origin_nm + (i, j, k) * voxel_nm.

    `missing` marks the voxels that came from chunks absent from the layer (read as 0, not data); None when
    every chunk the cutout needed was there. Voxels outside the volume's bounds are padding, never missing."""

    data: np.ndarray
    voxel_nm: tuple[float, float, float]
    origin_nm: tuple[float, float, float]
    missing: np.ndarray | None = None


@dataclass(frozen=True)
class Skeleton:
    """A neuron's level-2 graph or skeleton: vertices in nm, undirected edges as index pairs."""

    vertices_nm: np.ndarray  # (N, 3) float64
    edges: np.ndarray  # (E, 2) int64
    extra: dict = field(default_factory=dict)


def cutout_box(center_nm, size_nm: float, resolution_nm) -> tuple[np.ndarray, np.ndarray]:
    """Voxel box [start, stop) of the cube `size_nm` wide centred on `center_nm`: rint(size / resolution)
    voxels per axis (at least 1), centred on the nearest voxel. The one rule of every source."""
    res = np.asarray(resolution_nm, dtype=np.float64)
    size_vx = np.maximum(np.rint(float(size_nm) / res).astype(np.int64), 1)
    start = np.floor(np.asarray(center_nm, dtype=np.float64) / res - size_vx / 2.0 + 0.5).astype(np.int64)
    return start, start + size_vx


def read_padded(
    read,
    start: np.ndarray,
    stop: np.ndarray,
    bounds_lo,
    bounds_hi,
    dtype,
    chunk_size,
    chunk_origin,  # noqa: ANN001
) -> tuple[np.ndarray, np.ndarray | None]:
    """The box [start, stop) and its missing-voxel mask: `read(lo, hi)` for the part inside the volume bounds,
    zeros outside (padding, not missing).

    `read` must raise cloud-volume's EmptyVolumeException when a chunk it needs is absent (a CloudVolume opened
    with fill_missing=False does, for unsharded, sharded and graphene layers alike). Then the part is read
    again chunk by chunk on the layer's grid (`chunk_size`, chunks starting at `chunk_origin`, the voxel
    offset): absent chunks stay 0 and are marked in the mask. The mask is None when nothing was missing."""
    from cloudvolume.exceptions import EmptyVolumeException

    data = np.zeros(tuple(int(v) for v in stop - start), dtype=dtype)
    lo = np.maximum(start, np.asarray(bounds_lo, dtype=np.int64))
    hi = np.minimum(stop, np.asarray(bounds_hi, dtype=np.int64))
    if not (hi > lo).all():
        return data, None

    def put(a: np.ndarray, b: np.ndarray, got: np.ndarray) -> None:
        got = np.asarray(got)
        got = got[..., 0] if got.ndim == 4 else got
        a, b = a - start, b - start
        data[a[0] : b[0], a[1] : b[1], a[2] : b[2]] = got

    try:
        put(lo, hi, read(lo, hi))
        return data, None
    except EmptyVolumeException:
        pass
    missing = np.zeros(data.shape, dtype=bool)
    for a, b in chunk_boxes(lo, hi, chunk_size, chunk_origin):
        try:
            put(a, b, read(a, b))
        except EmptyVolumeException:
            a, b = a - start, b - start
            missing[a[0] : b[0], a[1] : b[1], a[2] : b[2]] = True
    return data, missing


def chunk_boxes(lo: np.ndarray, hi: np.ndarray, chunk_size, chunk_origin) -> list[tuple[np.ndarray, np.ndarray]]:
    """The box [lo, hi) cut along the layer's chunk grid: one [a, b) piece per chunk it touches, in x, y, z order."""
    size = np.asarray(chunk_size, dtype=np.int64)
    origin = np.asarray(chunk_origin, dtype=np.int64)
    first = (lo - origin) // size
    last = (hi - 1 - origin) // size
    out = []
    for k in np.ndindex(*(last - first + 1)):
        c0 = origin + (first + np.asarray(k)) * size
        out.append((np.maximum(c0, lo), np.minimum(c0 + size, hi)))
    return out


def window_fraction(mask: np.ndarray | None, voxel_nm, window_nm: float) -> float:
    """Fraction of the EM window's voxels set in `mask` (a cutout-shaped bool mask, None = none set).

    The window is the cube `window_nm` wide at the centre of the cutout (the cutout is 1.5 x the window): the
    voxels whose centre lies within window_nm / 2 of the cutout's centre on every axis. Views are cut from it
    (after recentring on the two segments, by at most 15% of the cutout; render checks each view's own pixels)."""
    if mask is None:
        return 0.0
    mask = np.asarray(mask)
    voxel = np.asarray(voxel_nm, dtype=np.float64)
    box = []
    for n, v in zip(mask.shape, voxel, strict=True):
        centres = (np.arange(n) + 0.5) * v - n * v / 2.0
        inside = np.flatnonzero(np.abs(centres) <= window_nm / 2.0)
        if inside.size == 0:
            return 0.0
        box.append(slice(int(inside[0]), int(inside[-1]) + 1))
    win = mask[tuple(box)]
    return float(np.count_nonzero(win)) / win.size


@runtime_checkable
class Source(Protocol):
    """Everything the stages read from the outside world. Stages never know which one they use."""

    species: str

    def base_resolution_nm(self) -> tuple[float, float, float]:
        """Voxel size of the segmentation at mip 0 (source/sink coords are in these voxels)."""

    def canonical_bbox_nm(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """(min, max) of the segmentation volume in nm, from its CloudVolume info (not from data)."""

    def as_of(self) -> float:
        """The pinned timestamp every query is made at (epoch seconds)."""

    def proofread_roots(self) -> list[int]:
        """Root ids of proofread neurons at `as_of`, sorted."""

    def change_log(self, root_ids: list[int]) -> pa.Table:
        """One row per (root, operation) in each root's history; CHANGE_LOG_COLUMNS at least.

        timestamp is float64 epoch seconds; before/after_root_ids are list<uint64>.
        """

    def operation_details(self, operation_ids: list[int]) -> dict[int, OperationDetails]:
        """Details of each operation; an id the source does not know is absent from the result."""

    def roots_at(self, supervoxel_ids: np.ndarray, timestamp: float) -> np.ndarray:
        """Root id of each supervoxel at `timestamp` (uint64 array, same shape)."""

    def synapses(self, pre_root_ids: list[int], post_root_ids: list[int]) -> pa.Table:
        """Synapses with pre root in `pre_root_ids` AND post root in `post_root_ids`, at `as_of`;
        SYNAPSE_COLUMNS at least (a real source batches by pre roots: ask only for the pairs you need).

        ctr_pt_position_nm is list<float64>[3]; the table's score columns follow where it has them
        (SYNAPSE_SCORE_COLUMNS, neurotransmitter scores).
        """

    def skeleton(self, root_id: int) -> Skeleton:
        """The skeleton built from the neuron's level-2 graph (l2skeleton.py): its branch points are junctions."""

    def mesh(self, root_id: int, box_nm: tuple | None = None) -> trimesh.Trimesh:
        """The root's mesh in nm; with box_nm = (lo_nm, hi_nm) at least every face with a vertex in the box
        (a real source fetches only the chunks the box touches, so faces beyond it may come too; an empty
        mesh if the neuron does not reach the box). Raises SampleError('missing_mesh') when there is none."""

    def em_cutout(self, center_nm: np.ndarray, size_nm: float) -> Cutout:
        """EM (uint8) of a cube `size_nm` wide centred on `center_nm`, zero-padded outside the volume."""

    def segmentation_cutout(self, center_nm: np.ndarray, size_nm: float, timestamp: float) -> Cutout:
        """Root ids (uint64) of the same cube, supervoxels resolved to roots at `timestamp`."""
