"""DemoSource: the Source protocol over a generated demo world (sim.demo_world).

Volumes and meshes are read through CloudVolume from the world's `file://` precomputed layers, exactly
as a real layer would be; the CAVE-shaped tables are parquet files read with pyarrow. CloudVolume
objects and tables are opened lazily and dropped when pickled, so the object travels to dask workers.

Everything is answered at the pinned time (`as_of`, else the time of `materialization_version`) as the servers and
the twin answer it, by the rules of demo_tables.py: roots of supervoxels at a time, the proofread neurons' and the
synapses' roots as a table materialized then gives them (the world's tables hold its as_of's), skeletons of the roots
alive then. A build pinned to an earlier time reads the neurons as they were then, never today's roots at an old time.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import fastremap
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import trimesh
from cloudvolume import CloudVolume

from config.schema import SpeciesConfig
from core.errors import SampleError, UserError
from pipeline.sources.base import Cutout, OperationDetails, Skeleton, cutout_box, read_padded
from pipeline.sources.demo_level2 import level2_graph
from pipeline.sources.demo_tables import RootStates, anchor_voxel, roots_keep_null, to_ms, world_versions
from pipeline.sources.l2skeleton import skeleton_edges
from render.geometry import crop_box


class DemoSource:
    """Reads `world_dir` (made by sim.demo_world.generate_world) for the demo species."""

    def __init__(self, cfg: SpeciesConfig, world_dir: str | Path) -> None:
        self.cfg = cfg
        self.species = cfg.species
        self.world_dir = Path(world_dir).resolve()
        self._reset()

    # -- pickling: only the config and the path travel ---------------------------------------
    def _reset(self) -> None:
        self._cvs: dict[str, CloudVolume] = {}
        self._tables: dict[str, pa.Table] = {}
        self._lock = threading.Lock()  # fetch threads share the lazily read roots and tables
        self._roots: RootStates | None = None
        self._at_time: dict[tuple[str, int], pa.Table] = {}  # (table, ms) -> the table materialized then
        self._ops: dict[int, OperationDetails] | None = None
        self._creators: dict[int, list[int]] | None = None
        self._world: dict | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"cfg": self.cfg, "species": self.species, "world_dir": self.world_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    # -- lazy handles ------------------------------------------------------------------------
    def _cloudpath(self, template: str) -> str:
        return template.replace("{world}", str(self.world_dir))

    def _cv(self, which: str) -> CloudVolume:
        if which not in self._cvs:
            template, mip = (
                (self.cfg.em_cloudpath, self.cfg.em_mip)
                if which == "em"
                else (self.cfg.seg_cloudpath, self.cfg.seg_mip)
            )
            try:
                # fill_missing=False: an absent chunk raises, and read_padded marks it missing (never black data)
                self._cvs[which] = CloudVolume(
                    self._cloudpath(template), mip=mip, fill_missing=False, progress=False, parallel=1
                )
            except Exception as exc:  # CloudVolume raises many kinds for a missing layer
                raise UserError(f"cannot open the demo {which} layer {self._cloudpath(template)}: {exc}") from None
        return self._cvs[which]

    def _table(self, name: str) -> pa.Table:
        if name not in self._tables:
            path = self.world_dir / "tables" / f"{name}.parquet"
            if not path.exists():
                raise UserError(f"demo world table missing: {path} (regenerate the demo world)")
            self._tables[name] = pq.read_table(path)
        return self._tables[name]

    def world(self) -> dict:
        """The world's summary (world.json)."""
        if self._world is None:
            self._world = json.loads((self.world_dir / "world.json").read_text())
        return self._world

    # -- Source protocol -----------------------------------------------------------------------
    def base_resolution_nm(self) -> tuple[float, float, float]:
        res = self._cv("seg").meta.resolution(0)
        return (float(res[0]), float(res[1]), float(res[2]))

    def canonical_bbox_nm(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        meta = self._cv("seg").meta
        res = np.asarray(meta.resolution(0), dtype=np.float64)
        bounds = meta.bounds(0)
        lo = np.asarray(bounds.minpt, dtype=np.float64) * res
        hi = np.asarray(bounds.maxpt, dtype=np.float64) * res
        return (tuple(float(x) for x in lo), tuple(float(x) for x in hi))

    def as_of(self) -> float:
        """The pinned time: `as_of`, else the time of `materialization_version` among the world's versions (the
        twin's: demo_tables.world_versions), else the world's as_of."""
        if self.cfg.as_of is not None:
            return float(self.cfg.as_of)
        if self.cfg.materialization_version is not None:
            return self._version_time(self.cfg.materialization_version)
        return float(self.world()["time"]["as_of"])

    def _version_time(self, number: int) -> float:
        times = self.world()["time"]
        versions = world_versions(float(times["ops_start"]), float(times["as_of"]))
        live = [v for v in versions if not v.expired]
        got = next((v for v in live if v.version == int(number)), None)
        if got is None:
            listed = ", ".join(str(v.version) for v in live)
            raise UserError(f"demo config: materialization_version {number} is not a live version of the demo world "
                            f"(live: {listed}); pin one of them or as_of")  # fmt: skip
        return got.timestamp

    def _root_states(self) -> RootStates:
        with self._lock:
            if self._roots is None:
                self._roots = RootStates(self._table("roots"))
            return self._roots

    def _ms(self, timestamp: float) -> int:
        """A time as the chunkedgraph reads it (ms); before the world's first roots were made, the first roots."""
        return max(to_ms(timestamp), self._root_states().first_ms())

    def proofread_roots(self) -> list[int]:
        """The roots of the valid proofread rows at as_of: the root then of the supervoxel under each row's point, as
        the materialized table gives them (the table's own roots are the world's as_of's)."""
        t = self._proofread_at(self._ms(self.as_of()))
        return sorted({int(x) for x in t["pt_root_id"].to_pylist() if x})

    def _proofread_at(self, t_ms: int) -> pa.Table:
        """The valid proofread rows with their roots at t_ms (0 where the world's table has none)."""
        key = ("proofread_neurons", t_ms)
        with self._lock:
            if key in self._at_time:
                return self._at_time[key]
        t = self._table("proofread_neurons")
        t = t.filter(pc.equal(t["valid"], True))
        svs = self._supervoxels_under([anchor_voxel(p) for p in t["pt_position_nm"].to_pylist()])
        roots = roots_keep_null(self._root_states(), svs, t["pt_root_id"].to_pylist(), t_ms)
        t = t.set_column(t.schema.get_field_index("pt_root_id"), "pt_root_id", pa.array(roots, pa.uint64()))
        with self._lock:
            self._at_time[key] = t
        return t

    def _supervoxels_under(self, voxels: list[tuple[int, int, int]]) -> list[int]:
        """The supervoxel of the base-mip segmentation at each voxel (0 where its chunk is absent), each chunk read
        once: what the twin's cache reads for a table's `pt_supervoxel_id` (sim/twin/cache.py)."""
        cv = CloudVolume(self._cloudpath(self.cfg.seg_cloudpath), mip=0, fill_missing=True, progress=False, parallel=1)
        chunk = np.asarray(cv.chunk_size, dtype=np.int64)
        offset = np.asarray(cv.voxel_offset, dtype=np.int64)
        lo_vol, hi_vol = np.asarray(cv.bounds.minpt, dtype=np.int64), np.asarray(cv.bounds.maxpt, dtype=np.int64)
        by_chunk: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, vx in enumerate(voxels):
            by_chunk[tuple(((np.asarray(vx) - offset) // chunk).tolist())].append(i)
        out = [0] * len(voxels)
        for index, members in sorted(by_chunk.items()):
            lo = np.maximum(offset + np.asarray(index) * chunk, lo_vol)
            hi = np.minimum(lo + chunk, hi_vol)
            if (hi <= lo).any():
                continue  # outside the volume: no supervoxel
            block = np.asarray(cv[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])[..., 0]
            for i in members:
                x, y, z = np.asarray(voxels[i]) - lo
                out[i] = int(block[x, y, z])
        return out

    def _operations(self) -> tuple[pa.Table, dict[int, list[int]]]:
        ops = self._table("operations")
        if self._creators is None:
            creators: dict[int, list[int]] = defaultdict(list)
            for row, after in enumerate(ops["after_root_ids"].to_pylist()):
                for root in after:
                    creators[int(root)].append(row)
            self._creators = dict(creators)
        return ops, self._creators

    def change_log(self, root_ids: list[int]) -> pa.Table:
        ops, creators = self._operations()
        before = ops["before_root_ids"].to_pylist()
        as_of = self.as_of()
        times = ops["timestamp"].to_numpy()
        out_roots, out_rows = [], []
        for root in sorted({int(r) for r in root_ids}):
            rows, seen, stack = set(), set(), [root]
            while stack:
                x = stack.pop()
                if x in seen:
                    continue
                seen.add(x)
                for row in creators.get(x, []):
                    if times[row] <= as_of:
                        rows.add(row)
                        stack.extend(int(b) for b in before[row])
            for row in sorted(rows, key=lambda r: (times[r], r)):
                out_roots.append(root)
                out_rows.append(row)
        sub = ops.take(pa.array(out_rows, pa.int64()))
        return pa.table(
            {
                "root_id": pa.array(out_roots, pa.uint64()),
                "operation_id": sub["operation_id"].cast(pa.uint64()),
                "timestamp": sub["timestamp"].cast(pa.float64()),
                "is_merge": sub["is_merge"],
                "before_root_ids": sub["before_root_ids"].cast(pa.list_(pa.uint64())),
                "after_root_ids": sub["after_root_ids"].cast(pa.list_(pa.uint64())),
            }
        )

    def operation_details(self, operation_ids: list[int]) -> dict[int, OperationDetails]:
        if self._ops is None:
            details: dict[int, OperationDetails] = {}
            for row in self._table("operations").to_pylist():
                op_id = int(row["operation_id"])
                if op_id in details:  # a duplicated change-log row: the first one wins
                    continue
                details[op_id] = OperationDetails(
                    operation_id=op_id,
                    timestamp=float(row["timestamp"]),
                    is_merge=bool(row["is_merge"]),
                    before_root_ids=tuple(int(x) for x in row["before_root_ids"]),
                    after_root_ids=tuple(int(x) for x in row["after_root_ids"]),
                    source_coords_vx=tuple(tuple(float(v) for v in p) for p in row["source_coords_vx"] or ()),
                    sink_coords_vx=tuple(tuple(float(v) for v in p) for p in row["sink_coords_vx"] or ()),
                )
            self._ops = details
        return {int(i): self._ops[int(i)] for i in operation_ids if int(i) in self._ops}

    def roots_at(self, supervoxel_ids: np.ndarray, timestamp: float) -> np.ndarray:
        arr = np.asarray(supervoxel_ids, dtype=np.uint64)
        return self._root_states().roots_at(arr, self._ms(timestamp)).reshape(arr.shape)

    def supervoxels_of(self, root_id: int, timestamp: float) -> np.ndarray:
        """Every supervoxel of `root_id` at `timestamp` (the viewer's equivalences), sorted."""
        keys, values = self._root_states().state(self._ms(timestamp))
        return np.sort(keys[values == np.uint64(root_id)])

    def synapses(self, pre_root_ids: list[int], post_root_ids: list[int]) -> pa.Table:
        """Synapses from `pre_root_ids` to `post_root_ids` with their roots at as_of (the synapse table materialized
        then), above the config's scores."""
        t = self._synapses_at(self._ms(self.as_of()))
        pre_set = pa.array(sorted({int(r) for r in pre_root_ids}), pa.uint64())
        post_set = pa.array(sorted({int(r) for r in post_root_ids}), pa.uint64())
        pre = pc.fill_null(pc.is_in(t["pre_pt_root_id"], value_set=pre_set), False)
        post = pc.fill_null(pc.is_in(t["post_pt_root_id"], value_set=post_set), False)
        keep = pc.and_(pre, post)
        for column, above in sorted(self.cfg.synapse_score_above.items()):  # as CaveSource asks the server
            keep = pc.and_(keep, pc.fill_null(pc.greater(t[column], above), False))
        return t.filter(keep)

    def _synapses_at(self, t_ms: int) -> pa.Table:
        """The synapse table with each side's root at t_ms: its supervoxel's root then, null where the world's table
        has none (a planted defect, at every time)."""
        key = ("synapses", t_ms)
        with self._lock:
            if key in self._at_time:
                return self._at_time[key]
        t = self._table("synapses")
        for side in ("pre", "post"):
            world_roots = t[f"{side}_pt_root_id"].to_pylist()
            roots = roots_keep_null(self._root_states(), t[f"{side}_pt_supervoxel_id"].to_pylist(), world_roots, t_ms)
            null = np.asarray([r is None for r in world_roots], dtype=bool)
            column = t.schema.get_field_index(f"{side}_pt_root_id")
            t = t.set_column(column, f"{side}_pt_root_id", pa.array(roots, pa.uint64(), mask=null))
        with self._lock:
            self._at_time[key] = t
        return t

    def skeleton(self, root_id: int) -> Skeleton:
        """The root's level-2 graph, skeletonized. The world holds the graphs of its final proofread roots only: any
        other root it made (a neuron's earlier root, before an edit since) has none, an empty skeleton, as the twin
        answers it (demo_tables.py); an id the world never made is `missing_skeleton`."""
        t = self._table("skeletons")
        hit = t.filter(pc.equal(t["root_id"], pa.scalar(int(root_id), pa.uint64())))
        if hit.num_rows == 0:
            if int(root_id) in self._root_states().row:
                empty = np.zeros((0, 3), dtype=np.float64)
                return Skeleton(
                    vertices_nm=empty, edges=np.zeros((0, 2), dtype=np.int64), extra={"root_id": int(root_id)}
                )
            raise SampleError("missing_skeleton", f"no skeleton for root {int(root_id)}")
        row = hit.slice(0, 1).to_pylist()[0]
        # as a CAVE source sees the neuron: its level-2 graph, skeletonized (the same junctions as the twin's)
        graph = level2_graph(np.asarray(row["vertices_nm"], dtype=np.float64).reshape(-1, 3), row["edges"])
        edges = skeleton_edges(graph.rep_coord_nm, graph.edges)
        return Skeleton(vertices_nm=graph.rep_coord_nm, edges=edges, extra={"root_id": int(root_id)})

    def mesh(self, root_id: int, box_nm: tuple | None = None) -> trimesh.Trimesh:
        """The whole mesh, cropped to box_nm (faces with a vertex in it) when given."""
        whole = self._whole_mesh(root_id)
        return whole if box_nm is None else crop_box(whole, box_nm[0], box_nm[1])

    def _whole_mesh(self, root_id: int) -> trimesh.Trimesh:
        cv = self._cv("seg")
        root_id = int(root_id)
        if cv.mesh.exists([root_id]).get(str(root_id)) is None:
            raise SampleError("missing_mesh", f"no mesh for root {root_id}")
        try:
            got = cv.mesh.get(root_id, fuse=False)
        except ValueError as exc:
            raise SampleError("missing_mesh", f"root {root_id}: {exc}") from None
        m = got.get(root_id) or next(iter(got.values()), None)
        if m is None or len(m.faces) == 0:
            raise SampleError("missing_mesh", f"empty mesh for root {root_id}")
        return trimesh.Trimesh(
            vertices=np.asarray(m.vertices, dtype=np.float64), faces=np.asarray(m.faces, dtype=np.int64), process=False
        )

    def _cutout(self, which: str, center_nm: np.ndarray, size_nm: float) -> Cutout:
        cv = self._cv(which)
        res = np.asarray(cv.resolution, dtype=np.float64)
        start, stop = cutout_box(center_nm, size_nm, res)

        def read(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
            return cv[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]

        data, missing = read_padded(
            read, start, stop, cv.bounds.minpt, cv.bounds.maxpt, cv.dtype, cv.chunk_size, cv.voxel_offset
        )
        return Cutout(
            data=data,
            voxel_nm=tuple(float(x) for x in res),
            origin_nm=tuple(float(x) for x in start * res),
            missing=missing,
        )

    def em_cutout(self, center_nm: np.ndarray, size_nm: float) -> Cutout:
        return self._cutout("em", center_nm, size_nm)

    def segmentation_cutout(self, center_nm: np.ndarray, size_nm: float, timestamp: float) -> Cutout:
        cut = self._cutout("seg", center_nm, size_nm)
        svs = np.ascontiguousarray(cut.data, dtype=np.uint64)
        uniq = fastremap.unique(svs)
        roots = self.roots_at(uniq, timestamp)
        mapping = {int(s): int(r) for s, r in zip(uniq, roots, strict=True)}
        mapping[0] = 0
        data = fastremap.remap(svs, mapping, preserve_missing_labels=True, in_place=False)
        return dataclasses.replace(cut, data=data.astype(np.uint64))
