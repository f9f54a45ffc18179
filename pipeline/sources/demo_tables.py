"""The demo world's roots and tables at a time, as a CAVE deployment answers them: one rule for the demo source
(demo.py) and the twin (sim/twin/model.py), so that both give the same roots, proofread neurons and synapse roots at
any as_of or materialization version.

The world on disk holds every root that ever existed with its supervoxels and lifetime (`tables/roots.parquet`), and
its proofread neurons and synapses with their roots at the world's as_of. The servers answer at a time:
- Times as the chunkedgraph reads them: float seconds from the client as microseconds, rounded down to whole
  milliseconds (PyChunkedGraph get_google_compatible_time_stamp); a read at T includes what was written at T (end
  inclusive), so a read at an edit's own time sees its after state.
- A supervoxel's root at T is the root created at or before T and not yet expired (an edit expires its before roots
  and creates its after roots at its time).
- A materialized table at T gives each row the root its supervoxel has at T (the materialization engine's root
  update): a proofread neuron's supervoxel is the one under its point (the table's `pt_supervoxel_id`), a synapse's
  sides carry theirs. A root the world's table leaves null stays null (a planted defect, kept at every time).
- The materialization versions: an expired one before the edits, one halfway through them, one at the world's as_of.
- A root's level-2 graph (its skeleton) is in the world for the final proofread roots only (`tables/skeletons`):
  any other root, an earlier root of a neuron edited since, has none here, so it gives no junctions.

These are facts of the data the sources read, so they are defined here, with the source (as demo_volume.py and
demo_level2.py are); the simulator that serves the world imports them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.sources.demo_volume import RES

NEVER_S = 2**40  # "not expired" (year ~36,800)
_STATES = 64  # roots-at-a-time states kept (a build asks at as_of and at each edit's T - 1 and T)


def to_ms(seconds: float) -> int:
    """A client's float timestamp as the server sees it: microseconds, then rounded down to ms."""
    micros = int(round(float(seconds) * 1e6))
    return micros // 1000


@dataclass(frozen=True)
class Version:
    """A materialization version: its number, its time (epoch seconds) and whether it has expired."""

    version: int
    timestamp: float
    expired: bool


def world_versions(ops_start: float, as_of: float) -> tuple[Version, ...]:
    """The world's materialization versions: an expired one 30 days before the edits, one at the midnight halfway
    through them, one at the world's as_of (`world.json` `time`: `ops_start`, `as_of`)."""
    half = ops_start + ((as_of - ops_start) // 2 // 86400) * 86400
    return (
        Version(1, float(ops_start - 30 * 86400), True),
        Version(2, float(half), False),
        Version(3, float(as_of), False),
    )


class RootStates:
    """The roots of every supervoxel at any time, from the world's roots table (root_id, supervoxel_ids, created_ts,
    expired_ts). Read-only after construction and safe to share between threads (the cache of states is locked)."""

    def __init__(self, roots: pa.Table) -> None:
        self.root_ids = roots["root_id"].to_numpy().astype(np.uint64)
        self.created_ms = roots["created_ts"].to_numpy().astype(np.int64) * 1000
        self.expired_ms = roots["expired_ts"].fill_null(NEVER_S).to_numpy().astype(np.int64) * 1000
        self.row = {int(r): i for i, r in enumerate(self.root_ids)}
        self.members = roots["supervoxel_ids"]
        self._sv_flat = pc.list_flatten(roots["supervoxel_ids"]).to_numpy().astype(np.uint64)
        self._sv_owner = pc.list_parent_indices(roots["supervoxel_ids"]).to_numpy()
        self._lock = threading.Lock()
        self._states: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def state(self, t_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """(sorted supervoxels, their roots) at t_ms: roots created at or before it and not yet expired."""
        with self._lock:
            if t_ms in self._states:
                self._states.move_to_end(t_ms)
                return self._states[t_ms]
        alive = (self.created_ms <= t_ms) & (self.expired_ms > t_ms)
        keep = alive[self._sv_owner]
        svs, owner = self._sv_flat[keep], self.root_ids[self._sv_owner[keep]]
        order = np.argsort(svs, kind="stable")
        state = (svs[order], owner[order])
        with self._lock:
            self._states[t_ms] = state
            if len(self._states) > _STATES:
                self._states.popitem(last=False)
        return state

    def roots_at(self, svs: np.ndarray, t_ms: int) -> np.ndarray:
        """Root of each supervoxel at t_ms (flat); 0 for 0, unknown ids and times before the supervoxel had a root."""
        arr = np.asarray(svs, dtype=np.uint64).ravel()
        keys, values = self.state(t_ms)
        if len(keys) == 0 or arr.size == 0:
            return np.zeros(arr.shape, dtype=np.uint64)
        idx = np.clip(np.searchsorted(keys, arr), 0, len(keys) - 1)
        return np.where(keys[idx] == arr, values[idx], np.uint64(0)).astype(np.uint64)

    def supervoxels(self, root_id: int) -> np.ndarray:
        """Every supervoxel a root holds (its lifetime's, whatever the time)."""
        return np.asarray(self.members[self.row[int(root_id)]].as_py(), dtype=np.uint64)

    def first_ms(self) -> int:
        """When the first roots were made (the world's start)."""
        return int(self.created_ms.min()) if len(self.created_ms) else 0


def roots_keep_null(states: RootStates, svs: list, world_roots: list, t_ms: int) -> np.ndarray:
    """Roots at t of each row's supervoxel, 0 where the world's table has no root (a planted defect, kept at every
    time) or the supervoxel is unknown: the materialization engine's root update of a table's rows."""
    got = states.roots_at(np.asarray([s or 0 for s in svs], dtype=np.uint64), t_ms)
    keep = np.asarray([w is not None for w in world_roots], dtype=bool)
    return np.where(keep, got, np.uint64(0)).astype(np.uint64)


def anchor_voxel(position_nm: list | np.ndarray) -> tuple[int, int, int]:
    """The voxel (at RES) under a table's point in nm: where its supervoxel is read (`pt_supervoxel_id`)."""
    vx = np.floor(np.asarray(position_nm, dtype=np.float64) / RES).astype(np.int64)
    return (int(vx[0]), int(vx[1]), int(vx[2]))
