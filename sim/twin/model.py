"""The world the twin serves: the demo world's tables and the twin's cache, as the servers' data model.

Everything here is read-only after loading and safe to share between request threads (the small
caches are guarded by a lock). Times are handled as the chunkedgraph does: float seconds from the
client, converted to a datetime (microseconds) and rounded DOWN to whole milliseconds (PyChunkedGraph
get_google_compatible_time_stamp); a read at T includes what was written at T (end inclusive), so a
read at an edit's own timestamp sees its after state. Roots in time, the tables' roots at a version and the
versions themselves follow the rules the demo source reads the same world by (pipeline/sources/demo_tables.py), so
that the demo source and the twin answer alike at any time.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.sources.demo_tables import (
    NEVER_S,
    RootStates,
    Version,
    roots_keep_null,
    to_ms,
    world_versions,
)
from pipeline.sources.demo_volume import RES
from sim.demo_world.history import AS_OF, OPS_START, WORLD_START

__all__ = ["NEVER_S", "V1_DETAILS_DELAY_S", "Operation", "TwinWorld", "Version", "default_versions", "to_ms"]

# How much later than the edit the v1 server's operation-details timestamp is (the row's cell time,
# written after the edit; pcgv1 read_log_rows). A magnitude the twin chooses: nothing here measured it.
V1_DETAILS_DELAY_S = 2.5


def default_versions() -> tuple[Version, ...]:
    """An expired version before the edits, one halfway through them, one at the world's as_of (the rule the demo
    source reads too: pipeline/sources/demo_tables.py)."""
    return world_versions(OPS_START, AS_OF)


@dataclass(frozen=True)
class Operation:
    operation_id: int
    timestamp: float
    is_merge: bool
    before: tuple[int, ...]
    after: tuple[int, ...]
    source_vx: tuple[tuple[int, int, int], ...]
    sink_vx: tuple[tuple[int, int, int], ...]
    edge: tuple[int, int]  # the supervoxels the edit joined (merge) or cut (split)


class TwinWorld:
    """The demo world at `world_dir` with its twin cache at `cache_dir` (sim.twin.cache)."""

    is_generated = False  # its files are the world (sim/twin/scale.py generates its answers instead)

    def __init__(self, world_dir: str | Path, cache_dir: str | Path, versions: tuple[Version, ...] | None = None):
        self.world_dir = Path(world_dir)
        self.cache_dir = Path(cache_dir)
        self.summary = json.loads((self.world_dir / "world.json").read_text())
        self.versions = versions or default_versions()
        self._lock = threading.Lock()
        self._tables: dict[tuple[str, int], pa.Table] = {}
        self._load_roots()
        self._load_operations()
        self._load_meshes()
        self._load_l2()

    # ------------------------------------------------------------------ loading
    def _table(self, name: str) -> pa.Table:
        return pq.read_table(self.world_dir / "tables" / f"{name}.parquet")

    def _load_roots(self) -> None:
        """The roots in time (pipeline/sources/demo_tables.py RootStates, shared with the demo source)."""
        self.states = RootStates(self._table("roots"))
        self.root_ids = self.states.root_ids
        self.created_ms = self.states.created_ms
        self.expired_ms = self.states.expired_ms
        self.root_row = self.states.row

    def supervoxels(self, root_id: int) -> np.ndarray:
        return self.states.supervoxels(root_id)

    def _load_operations(self) -> None:
        rows = self._table("operations").to_pylist()
        points = pq.read_table(self.cache_dir / "points.parquet").to_pylist()
        sv_at = {(p["kind"], p["key"], p["index"]): int(p["supervoxel_id"]) for p in points}
        self.anchor_sv = {p["key"]: int(p["supervoxel_id"]) for p in points if p["kind"] == "anchor"}
        self.op_rows = rows  # in the world's order, duplicated rows kept (a world defect the bank must see)
        self.ops: dict[int, Operation] = {}
        self.creators: dict[int, list[int]] = defaultdict(list)  # root -> row indices that created it
        for i, row in enumerate(rows):
            for r in row["after_root_ids"]:
                self.creators[int(r)].append(i)
            op_id = int(row["operation_id"])
            if op_id in self.ops:
                continue
            before, after = tuple(int(r) for r in row["before_root_ids"]), tuple(int(r) for r in row["after_root_ids"])
            src = tuple(tuple(int(c) for c in p) for p in row["source_coords_vx"] or ())
            snk = tuple(tuple(int(c) for c in p) for p in row["sink_coords_vx"] or ())
            if src and snk:
                edge = (sv_at[("source", op_id, 0)], sv_at[("sink", op_id, 0)])
            else:  # no points: an edge between the two sides, from their supervoxels
                sides = before if row["is_merge"] else after
                edge = (int(self.supervoxels(sides[0]).min()), int(self.supervoxels(sides[1]).min()))
            ts = float(row["timestamp"])
            self.ops[op_id] = Operation(op_id, ts, bool(row["is_merge"]), before, after, src, snk, edge)
        self._expired_by: dict[int, list[Operation]] = defaultdict(list)
        for op in self.ops.values():
            for r in op.before:
                self._expired_by[int(r)].append(op)
        self.first_op_s = min((op.timestamp for op in self.ops.values()), default=float(WORLD_START))

    def _load_meshes(self) -> None:
        frags = pq.read_table(self.cache_dir / "fragments.parquet")
        self.fragments = frags
        by_root: dict[int, list[int]] = defaultdict(list)
        for i, r in enumerate(frags["root_id"].to_pylist()):
            by_root[int(r)].append(i)
        self._frag_rows = dict(by_root)
        self.frag_l2 = frags["l2_id"].to_pylist()
        self.frag_chunk = [tuple(c) for c in frags["chunk"].to_pylist()]
        self.frag_v1 = frags["v1_name"].to_pylist()
        self.frag_v2 = frags["v2_fragment"].to_pylist()
        self.frag_bytes = frags["nbytes"].to_pylist()
        self.l2_fragment = {int(l2): i for i, l2 in enumerate(self.frag_l2)}
        # v1: roots whose lineage was edited list stitched layer 3-4 fragments (cache.py, stitched.py)
        stitched = pq.read_table(self.cache_dir / "v1_manifest.parquet").to_pylist()
        self.v1_manifests = {int(r["root_id"]): r for r in stitched}

    def _load_l2(self) -> None:
        graphs = pq.read_table(self.cache_dir / "l2graph.parquet").to_pylist()
        self.l2_edges = {int(g["root_id"]): g["edges"] for g in graphs}
        self.rep_coord = {}
        for g in graphs:
            for l2, p in zip(g["l2_ids"], g["rep_coord_nm"], strict=True):
                self.rep_coord[int(l2)] = p

    # ------------------------------------------------------------------ roots in time
    def roots_at(self, svs: np.ndarray, t_ms: int) -> np.ndarray:
        """Root of each supervoxel at t_ms; 0 for 0, unknown ids and times before the supervoxel had a root."""
        return self.states.roots_at(svs, t_ms)

    def is_latest(self, roots: list[int], t_ms: int) -> list[bool]:
        """A root is latest at t if no edit replaced it at or before t (unknown ids: False)."""
        return [bool(int(r) in self.root_row and self.expired_ms[self.root_row[int(r)]] > t_ms) for r in roots]

    def created_s(self, roots: list[int]) -> list[float]:
        rows = [self.root_row.get(int(r)) for r in roots]
        return [0.0 if i is None else float(self.created_ms[i]) / 1000.0 for i in rows]

    def expired_s(self, roots: list[int]) -> list[float | None]:
        """When each root was replaced (None: an id this world never made); NEVER_S for alive roots."""
        rows = [self.root_row.get(int(r)) for r in roots]
        return [None if i is None else float(self.expired_ms[i]) / 1000.0 for i in rows]

    def ws_info(self) -> dict:
        return json.loads((self.world_dir / "segmentation" / "info").read_text())

    def ws_chunk(self, rel: str) -> bytes | None:
        """None: the watershed's chunks are the world's files (sim.twin.layers serves them)."""
        return None

    def _creator(self, root: int) -> Operation | None:
        rows = self.creators.get(int(root))
        return self.ops[int(self.op_rows[rows[0]]["operation_id"])] if rows else None

    def past_ids(self, roots: list[int], past_ms: int, future_ms: int) -> tuple[dict[int, list[int]], dict[int, int]]:
        """PyChunkedGraph's past/future id mapping (graph/segmenthistory.py past_future_id_mapping).

        past: each root's ancestors live at past_ms (itself if it was). future: a past id maps to the
        one root its lineage ends in by future_ms, only when that lineage never splits (merges only);
        an ambiguous past id is left out, so the client resolves its supervoxels instead.
        """
        past, future = {}, {}
        for root in (int(r) for r in roots):
            found, stack, seen = [], [root], set()
            while stack:
                r = stack.pop()
                if r in seen or r not in self.root_row:
                    continue
                seen.add(r)
                i = self.root_row[r]
                if self.created_ms[i] <= past_ms:
                    found.append(r)
                    continue
                op = self._creator(r)
                if op is not None:
                    stack.extend(op.before)
            past[root] = sorted(found)
        for p in sorted({r for ids_ in past.values() for r in ids_}):
            leaf = self._merge_only_descendant(p, future_ms)
            if leaf is not None:
                future[p] = leaf
        return past, future

    def _merge_only_descendant(self, root: int, future_ms: int) -> int | None:
        node = root
        while True:
            i = self.root_row[node]
            if self.expired_ms[i] > future_ms:
                return node
            op = self._expirer(node)
            if op is None or not op.is_merge:
                return None
            node = op.after[0]

    def _expirer(self, root: int) -> Operation | None:
        for op in self._expired_by.get(int(root), []):
            return op
        return None

    def delta_roots(self, past_ms: int | None, future_ms: int) -> tuple[list[int], list[int]]:
        """Roots an edit in (past, future] created (new) and the roots those edits replaced (old)."""
        old, new = [], []
        for op in self.ops.values():
            t = to_ms(op.timestamp)
            if (past_ms is None or t >= past_ms) and t <= future_ms:
                new.extend(op.after)
                old.extend(op.before)
        return sorted(old), sorted(new)

    # ------------------------------------------------------------------ history
    def lineage_rows(self, root: int) -> list[int]:
        """Rows of the world's operations table that made this root or one of its ancestors."""
        rows, seen, stack = set(), set(), [int(root)]
        while stack:
            x = stack.pop()
            if x in seen:
                continue
            seen.add(x)
            for i in self.creators.get(x, []):
                rows.add(i)
                stack.extend(int(b) for b in self.op_rows[i]["before_root_ids"])
        return sorted(rows, key=lambda i: (int(self.op_rows[i]["operation_id"]), i))

    def change_log(self, root: int, filtered: bool = True) -> list[dict]:
        """The tabular change log rows of one root (sorted by operation id, as the server does); `filtered`
        drops the edits failing `in_neuron` or `is_relevant` (graph/segmenthistory.py: see _kept)."""
        lineage = self._lineage_roots(int(root))
        out = []
        for i in self.lineage_rows(root):
            row = self.op_rows[i]
            op = self.ops[int(row["operation_id"])]
            if filtered and not self._kept(op, int(root)):
                continue
            kept = [r for r in op.after if r in lineage] or list(op.after[:1])
            out.append(
                {
                    "operation_id": op.operation_id,
                    "timestamp": to_ms(op.timestamp),
                    "user_id": 7,
                    "before_root_ids": [int(r) for r in row["before_root_ids"]],
                    "after_root_ids": kept,
                    "is_merge": op.is_merge,
                    "user_name": "twin",
                    "user_affiliation": "cb2-build twin",
                }
            )
        return out

    def _kept(self, op: Operation, root: int) -> bool:
        """PyChunkedGraph's filter (graph/segmenthistory.py _build_tabular_changelogs, tabular_changelog):
        the edit's supervoxels (its sink and source ids) looked up at the queried root's own timestamp
        ("current") and at the chunkedgraph's earliest timestamp ("original"). A merge is relevant when its
        supervoxels began in different objects and in the neuron when all of them are in the root now; a
        split is relevant when its supervoxels are still apart and in the neuron when any is in the root."""
        svs = np.asarray(op.edge, dtype=np.uint64)
        current = self.roots_at(svs, int(self.created_ms[self.root_row[root]]))
        if op.is_merge:
            original = self.roots_at(svs, to_ms(self.first_op_s - 0.5))
            return len(np.unique(original)) != 1 and bool(np.all(current == root))
        return len(np.unique(current)) != 1 and bool(np.any(current == root))

    def _lineage_roots(self, root: int) -> set[int]:
        out, stack = set(), [root]
        while stack:
            r = stack.pop()
            if r in out:
                continue
            out.add(r)
            op = self._creator(r)
            if op is not None:
                stack.extend(op.before)
        return out

    # ------------------------------------------------------------------ meshes and level-2 graphs
    def fragment_rows(self, node_id: int) -> list[int]:
        """Rows of fragments.parquet for a root (all its level-2 fragments) or for one level-2 id."""
        node_id = int(node_id)
        if node_id in self._frag_rows:
            return self._frag_rows[node_id]
        if node_id in self.l2_fragment:
            return [self.l2_fragment[node_id]]
        return []

    def v1_fragments(self, node_id: int) -> list[str]:
        """The legacy names a pcgv1 manifest lists for a node: the highest fragments with a mesh."""
        got = self.v1_manifests.get(int(node_id))
        if got is not None:
            return list(got["fragments"])
        return [self.frag_v1[i] for i in self.fragment_rows(node_id)]

    # ------------------------------------------------------------------ materialized tables
    def version(self, number: int) -> Version | None:
        return next((v for v in self.versions if v.version == int(number)), None)

    def table(self, name: str, version: int) -> pa.Table | None:
        """A table as materialized at `version`: roots of its supervoxels at the version's time, points in
        voxels at RES (the table's voxel resolution). None for a table the datastack does not have."""
        key = (name, int(version))
        with self._lock:
            if key in self._tables:
                return self._tables[key]
        v = self.version(version)
        if v is None or name not in TABLE_SCHEMAS:
            return None
        t_ms = to_ms(v.timestamp)
        table = _proofread(self, t_ms) if name == "proofread_neurons" else _synapses(self, t_ms)
        with self._lock:
            self._tables[key] = table
        return table


# Ids are int64 as the engine's Postgres bigint columns are (caveclient's live query mixes them with
# int64 arrays: uint64 columns would be promoted to float64 there and lose digits).
POSITION_COLUMNS = ("pt_position", "pre_pt_position", "post_pt_position", "ctr_pt_position")
TABLE_SCHEMAS = {
    "proofread_neurons": "proofreading_boolstatus_user",
    "synapses": "cleft_score_synapse",
}


def _roots_keep_null(world: TwinWorld, svs: list, world_roots: list, t_ms: int) -> pa.Array:
    """Roots at t of each supervoxel; 0 where the world's table has no root (a defect kept). Not null:
    one null turns a pandas uint64 column into float64, and 18-digit ids lose their last digits."""
    return pa.array(roots_keep_null(world.states, svs, world_roots, t_ms).astype(np.int64), pa.int64())


def _vx(points_nm: list) -> pa.Array:
    arr = np.asarray(points_nm, dtype=np.float64).reshape(-1, 3) / RES
    return pa.array(arr.tolist(), pa.list_(pa.float64(), 3))


def _proofread(world: TwinWorld, t_ms: int) -> pa.Table:
    src = world._table("proofread_neurons").to_pylist()
    svs = [world.anchor_sv[int(r["id"])] for r in src]
    return pa.table(
        {
            "id": pa.array([int(r["id"]) for r in src], pa.int64()),
            "valid": pa.array([bool(r["valid"]) for r in src], pa.bool_()),
            "pt_supervoxel_id": pa.array(svs, pa.int64()),
            "pt_root_id": _roots_keep_null(world, svs, [r["pt_root_id"] for r in src], t_ms),
            "pt_position": _vx([r["pt_position_nm"] for r in src]),
        }
    )


def _synapses(world: TwinWorld, t_ms: int) -> pa.Table:
    src = world._table("synapses")
    cols = {
        "id": src["id"],
        "valid": pa.array([True] * src.num_rows, pa.bool_()),
    }
    for side in ("pre", "post"):
        svs = src[f"{side}_pt_supervoxel_id"].to_pylist()
        cols[f"{side}_pt_supervoxel_id"] = pa.array(svs, pa.int64())
        cols[f"{side}_pt_root_id"] = _roots_keep_null(world, svs, src[f"{side}_pt_root_id"].to_pylist(), t_ms)
    for name in ("pre_pt_position", "post_pt_position", "ctr_pt_position"):
        cols[name] = _vx(src[f"{name}_nm"].to_pylist())
    for name in src.column_names:
        if name not in ("id",) and not name.endswith(("_root_id", "_supervoxel_id", "_position_nm")):
            cols[name] = src[name]
    return pa.table(cols)
