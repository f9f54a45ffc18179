"""The chunkedgraph (PyChunkedGraph through caveclient): change logs, operation details, roots at a time, root
timestamps, delta roots, level-2 graphs.

The client is built from `seg_cloudpath` (the segmentation this build reads voxels from) and shared with the CAVE
client, so that caveclient's own users of it (the materialization's live queries) ask through this bounded session.
Every query is pinned: its default time is the materialization's as_of (`pin`), and each call that names a time
names an explicit one. Every call is batched through the adaptive layer (session.batched), starting at its own
`CaveLimits` size; a root or operation the server cannot answer for is named (PartlyUnavailable), not guessed.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from core.errors import PartlyUnavailable, UserError
from pipeline.sources.base import CHANGE_LOG_COLUMNS, OperationDetails
from pipeline.sources.cave.session import Service
from pipeline.sources.cave.tables import need
from pipeline.sources.cave.values import epoch, graphene_identity, uint64_list, utc

DELTA_WINDOWS = 64  # time windows of a delta-roots span: the most a timed-out span is cut into (adaptive.py bisects)
CHANGE_LOG_SCHEMA = pa.schema(
    [
        ("root_id", pa.uint64()),
        ("operation_id", pa.int64()),
        ("timestamp", pa.float64()),
        ("is_merge", pa.bool_()),
        ("before_root_ids", pa.list_(pa.uint64())),
        ("after_root_ids", pa.list_(pa.uint64())),
    ]
)


def delta_windows(t0: float, t1: float, n: int) -> list[tuple[float, float]]:
    """[t0, t1] cut into n consecutive windows of equal length (each sharing its end with the next's start: the
    server's span includes both ends, and a root listed twice is folded the same)."""
    if t1 <= t0:
        return [(t0, t1)]
    edges = np.linspace(t0, t1, n + 1)
    return [(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


class Chunkedgraph(Service):
    """The chunkedgraph's calls. `oplog`: what this process's change logs said of each operation (its before
    roots, time, kind), so that its details need not ask again; not pickled."""

    TRANSIENT: ClassVar[dict[str, Callable[[Any], Any]]] = {"oplog": lambda _: {}}
    pinned_time: Callable[[], float]  # the materialization's as_of (it sets this: Materialization.__init__)

    @property
    def server(self) -> str:
        """The chunkedgraph's server, from seg_cloudpath (the segmentation this build reads voxels from)."""
        path = self.cfg.seg_cloudpath.replace("middleauth+", "").replace("graphene://", "")
        identity = graphene_identity(path)
        if identity is None:
            raise UserError(f"{self.session.config_file}: seg_cloudpath {self.cfg.seg_cloudpath} is not a "
                            "graphene:// segmentation: the chunkedgraph is read from it")  # fmt: skip
        return f"{urllib.parse.urlsplit(path).scheme}://{identity[0]}"

    def client(self):  # noqa: ANN201 - a caveclient ChunkedGraphClient
        """The chunkedgraph client of seg_cloudpath's server and table. caveclient would build it on the datastack's
        local server with the last path element of its segmentation source (frameworkclient.py
        CAVEclientFull.chunkedgraph): the same table (the start-up check), but a deployment whose chunkedgraph has
        a host of its own (fish1's) is not its local server. It is also handed to the CAVE client as its
        chunkedgraph, so that caveclient's own users of it (the materialization client's live queries:
        materializationengine.py cg_client -> fc.chunkedgraph) run on this bounded session, never on one of theirs
        with urllib3's retries and no timeout."""
        s = self.session
        if s.cg_client is None:
            from caveclient.chunkedgraph import ChunkedGraphClient

            client = s.client()
            server = self.server
            identity = graphene_identity(self.cfg.seg_cloudpath)
            table = identity[1] if identity is not None else ""
            if urllib.parse.urlsplit(server).netloc != urllib.parse.urlsplit(s.local).netloc:
                s.probe(server, "seg_cloudpath")
            with s.guard("chunkedgraph", server):
                cg = s.opened(
                    lambda: ChunkedGraphClient(
                        server_address=server, table_name=table, auth_client=client.auth, max_retries=2,
                        over_client=client,
                    ),
                    "chunkedgraph",
                )  # fmt: skip
            s.bound(cg.session)
            client._chunkedgraph = cg
            if s.mat_client is not None:
                s.mat_client._cg_client = cg
            s.cg_client = cg
            self.pin()
        return s.cg_client

    def pin(self) -> None:
        """The chunkedgraph client's default time is as_of: a call that names no time (root timestamps) is asked at
        the pinned time, never at caveclient's "now" (chunkedgraph.py _process_timestamp)."""
        if self.session.cg_client is not None and self.session.as_of is not None:
            self.session.cg_client.timestamp = utc(self.session.as_of)

    def _batched(self, endpoint: str, items: list, send, start: int, what: str,  # noqa: ANN001
                 failed: list | None = None) -> list:  # fmt: skip
        """session.batched on the datastack's local server (where caveclient's URLs name the chunkedgraph)."""
        return self.session.batched(endpoint, items, send, start, what, self.session.local, failed)

    # ------------------------------------------------------------------ proofread roots by their edits
    def delta_roots(self) -> list[int]:
        """The roots edits made between the chunkedgraph's oldest timestamp and as_of that no later edit before
        as_of replaced. The span is cut into DELTA_WINDOWS time windows, sent through the adaptive layer as items:
        its first request asks the whole span (one scan of the operation log, as before), and a request that times
        out or is refused is bisected into shorter spans (PyChunkedGraph get_delta_roots reads every operation in
        its span; over years of FlyWire-sized history that is the slow request the proxy cuts at 600 s). The
        windows' answers are folded in time order: a root new in one window and old in a later one was replaced."""
        cg = self.client()
        as_of = self.pinned_time()
        with self.session.guard("chunkedgraph delta roots", self.session.local):
            t0 = epoch(cg.get_oldest_timestamp())
        windows = delta_windows(t0, as_of, DELTA_WINDOWS)

        def send(batch: list[tuple[float, float]]) -> tuple[list[int], list[int]]:
            old, new = cg.get_delta_roots(utc(batch[0][0]), utc(batch[-1][1]))
            return uint64_list(old), uint64_list(new)

        current: set[int] = set()
        for _, (old, new) in self._batched("delta_roots", windows, send, len(windows), "chunkedgraph delta roots"):
            current |= set(new)  # in time order (the adaptive layer keeps the items' order)
            current -= set(old)
        return sorted(r for r in current if r)

    # ------------------------------------------------------------------ edit history
    def change_log(self, root_ids: list[int]) -> pa.Table:
        """The roots' change logs; a root the server cannot answer for (after bisection and resends) is left out
        and named: PartlyUnavailable(the others' table, {root: Unavailable})."""
        cols: dict[str, list] = {c: [] for c in CHANGE_LOG_COLUMNS}
        roots = sorted({int(r) for r in root_ids})
        failed: list = []
        if roots:
            cg = self.client()
            as_of = self.pinned_time()
            # the whole lineage: filtered=True (the server's default) drops edits that were undone or cut off
            # (graph/segmenthistory.py in_neuron / is_relevant), which are candidates too
            pairs = self._batched(
                "change_log", roots, lambda batch: cg.get_tabular_change_log(batch, filtered=False),
                self.limits.change_log_batch, "chunkedgraph tabular change log", failed,
            )  # fmt: skip
            for root, df in sorted(((r, df) for _, logs in pairs for r, df in logs.items()), key=lambda p: int(p[0])):
                if df is None or len(df) == 0:
                    continue
                for name in ("operation_id", "timestamp", "is_merge", "before_root_ids", "after_root_ids"):
                    need(self.cfg, df, "tabular_change_log", name, "the change log")
                for row in df.itertuples(index=False):
                    ts = epoch(row.timestamp)
                    if ts > as_of:
                        continue
                    op = int(row.operation_id)
                    before = uint64_list(row.before_root_ids)
                    is_merge = bool(row.is_merge)
                    self.oplog[op] = (tuple(before), ts, is_merge)
                    cols["root_id"].append(int(root))
                    cols["operation_id"].append(op)
                    cols["timestamp"].append(ts)
                    cols["is_merge"].append(is_merge)
                    cols["before_root_ids"].append(before)
                    cols["after_root_ids"].append(uint64_list(row.after_root_ids))
        table = pa.Table.from_pydict(cols, schema=CHANGE_LOG_SCHEMA)
        table = table.sort_by([("root_id", "ascending"), ("timestamp", "ascending"), ("operation_id", "ascending")])
        if failed:
            raise PartlyUnavailable(table, {int(root): gone for root, gone in failed})
        return table

    def operation_details(self, operation_ids: list[int]) -> dict[int, OperationDetails]:
        """Each operation's details; ops the server cannot answer for are named: PartlyUnavailable(the others',
        {op: Unavailable})."""
        ids = sorted({int(o) for o in operation_ids})
        if not ids:
            return {}
        cg = self.client()
        raw: dict = {}
        failed: list = []
        for _, got in self._batched(
            "operation_details", ids, cg.get_operation_details, self.limits.operation_details_batch,
            "chunkedgraph operation details", failed,
        ):  # fmt: skip
            raw.update(got)
        created = self._edit_times({int(k): det for k, det in raw.items() if det and int(k) not in self.oplog})
        out: dict[int, OperationDetails] = {}
        for key, det in raw.items():
            if not det:
                continue
            op = int(key)
            known = self.oplog.get(op)
            # the edit's own time: the change log's, else its after roots' creation time; the details'
            # `timestamp` can be the log row's later write time (pcgv1), seconds after the edit
            ts = known[1] if known else created.get(op)
            if ts is None and det.get("timestamp") is not None:
                ts = epoch(det["timestamp"])
            if ts is None:
                continue
            if "added_edges" in det or "removed_edges" in det:
                is_merge = "added_edges" in det
            elif known is not None:
                is_merge = known[2]
            else:
                continue
            after = tuple(uint64_list(det.get("roots", [])))
            before = known[0] if known else self._before_roots(det, ts, is_merge)
            out[op] = OperationDetails(
                operation_id=op,
                timestamp=ts,
                is_merge=is_merge,
                before_root_ids=tuple(before),
                after_root_ids=after,
                source_coords_vx=tuple(tuple(float(c) for c in p) for p in det.get("source_coords") or []),
                sink_coords_vx=tuple(tuple(float(c) for c in p) for p in det.get("sink_coords") or []),
            )
        if failed:
            raise PartlyUnavailable(out, {int(op): gone for op, gone in failed})
        return out

    def _edit_times(self, details: dict[int, dict]) -> dict[int, float]:
        """Each edit's time as its after roots' creation time (one request for all of them)."""
        after = {op: uint64_list(det.get("roots", [])) for op, det in details.items()}
        roots = sorted({r for rs in after.values() for r in rs})
        if not roots:
            return {}
        cg = self.client()
        stamps: dict[int, float] = {}
        for batch, got in self._batched(
            "root_timestamps", roots, cg.get_root_timestamps, self.limits.roots_batch, "chunkedgraph root timestamps"
        ):
            stamps.update({r: epoch(t) for r, t in zip(batch, got, strict=True)})
        return {op: min(stamps[r] for r in rs) for op, rs in after.items() if rs}

    def _before_roots(self, det: dict, ts: float, is_merge: bool) -> tuple[int, ...]:
        """Roots just before the edit: the roots of the edited edge's supervoxels at T - 1 ms."""
        edges = det.get("added_edges" if is_merge else "removed_edges") or []
        svs = np.unique(np.asarray(edges, dtype=np.uint64).ravel())
        if svs.size == 0:
            return ()
        roots = self.roots_at(svs, ts - 0.001)
        return tuple(sorted({int(r) for r in roots if int(r) != 0}))

    # ------------------------------------------------------------------ roots at a time, level-2 graphs
    def roots_at(self, supervoxel_ids: np.ndarray, timestamp: float) -> np.ndarray:
        """The root of each supervoxel at `timestamp` (0 stays 0), same shape."""
        svs = np.asarray(supervoxel_ids, dtype=np.uint64)
        out = np.zeros(svs.shape, dtype=np.uint64)
        uniq = np.unique(svs)
        uniq = uniq[uniq != 0]
        if uniq.size == 0:
            return out
        cg = self.client()
        when = utc(timestamp)

        def ask(batch: list) -> np.ndarray:
            return np.asarray(cg.get_roots(np.asarray(batch, np.uint64), timestamp=when), dtype=np.uint64)

        pairs = self._batched("roots", uniq, ask, self.limits.roots_batch, "chunkedgraph roots")
        mapped = np.concatenate([got for _, got in pairs])
        idx = np.searchsorted(uniq, svs)
        nz = svs != 0
        out[nz] = mapped[idx[nz]]
        return out

    def level2_graph(self, root_id: int) -> np.ndarray:
        """The root's level-2 graph as (E, 2) uint64 id pairs (one request: one graph, nothing to batch)."""
        cg = self.client()
        s = self.session
        ask = lambda: cg.level2_chunk_graph(int(root_id))  # noqa: E731
        edge_list = s.one("level2_graph", "chunkedgraph level-2 graph", s.local, ask)
        return np.asarray(edge_list, dtype=np.uint64).reshape(-1, 2)
