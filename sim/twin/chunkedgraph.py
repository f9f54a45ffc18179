"""The chunkedgraph (PyChunkedGraph) endpoints CaveSource and caveclient's live queries use.

Paths and arguments as caveclient 8.2.1 sends them (endpoints.py, chunkedgraph.py); answers shaped
as PyChunkedGraph builds them (app/segmentation/common.py, v1/routes.py; graph/segmenthistory.py for
the tabular change log; graph/misc.py for delta roots). Where the server would read the clock (a
missing timestamp), the twin uses the world's as_of: it never reads the clock.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

import numpy as np

from sim.twin import ids
from sim.twin.http import Request, Response, Router, error, json_response
from sim.twin.info import TABLE_ID
from sim.twin.model import V1_DETAILS_DELAY_S, to_ms

if TYPE_CHECKING:
    from sim.twin.server import TwinApp

PREFIX = rf"/segmentation/api/v1/table/{TABLE_ID}"


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(float(seconds), tz=dt.timezone.utc)


def _ts_ms(req: Request, name: str, default_s: float | None) -> int | None:
    if name not in req.query:
        return None if default_s is None else to_ms(default_s)
    return to_ms(float(req.query[name]))


def _frame_json(rows: list[dict], columns: tuple[str, ...]) -> str:
    """pandas' DataFrame.to_json() (orient='columns'): {column: {row index: value}}."""
    return json.dumps({c: {str(i): row[c] for i, row in enumerate(rows)} for c in columns}, separators=(",", ":"))


CHANGE_LOG_COLUMNS = (
    "operation_id", "timestamp", "user_id", "before_root_ids", "after_root_ids", "is_merge", "user_name",
    "user_affiliation",
)  # fmt: skip


def operation_details(app: TwinApp, op_id: int) -> dict | None:
    op = app.world.ops.get(int(op_id))
    if op is None:
        return None
    ts = op.timestamp + (V1_DETAILS_DELAY_S if app.flavor == "v1" else 0.0)
    out: dict = {"user": "7", "roots": list(op.after), "timestamp": str(_utc(ts))}
    out["added_edges" if op.is_merge else "removed_edges"] = [list(op.edge)]
    if op.source_vx:
        out["source_coords"] = [list(p) for p in op.source_vx]
    if op.sink_vx:
        out["sink_coords"] = [list(p) for p in op.sink_vx]
    if app.flavor == "v2":
        out["operation_ts"] = str(_utc(op.timestamp))
        out["operation_status"] = 0
    elif not op.is_merge:
        out["bb_offset"] = [240, 240, 24]
    return out


def register(router: Router, app: TwinApp) -> None:
    world = app.world
    as_of = float(world.summary["time"]["as_of"])

    def change_log_many(req: Request) -> Response:
        roots = [int(r) for r in req.json_body().get("root_ids", [])]
        if len(roots) > app.limits.change_log_roots:
            # the real server builds every root's lineage in this one request and runs out of time
            return Response(504, b"<html><body><h1>504 Gateway Time-out</h1></body></html>", "text/html")
        filtered = req.flag("filtered", default=True)  # the server reads it with default True (v1/routes.py)
        out = {str(r): _frame_json(world.change_log(r, filtered), CHANGE_LOG_COLUMNS) for r in sorted(set(roots))}
        return json_response(out)

    def details(req: Request) -> Response:
        try:
            op_ids = json.loads(req.query.get("operation_ids", "[]"))
        except ValueError:
            return error(400, "operation_ids is not a JSON list")
        out = {}
        for op_id in op_ids:
            got = operation_details(app, int(op_id))
            if got is not None:
                out[str(int(op_id))] = got
        return json_response(out)

    def roots_binary(req: Request) -> Response:
        if "stop_layer" in req.query and int(req.query["stop_layer"]) != ids.N_LAYERS:
            return error(400, "the twin answers roots only (stop_layer = n_layers)")
        svs = np.frombuffer(req.body, dtype=np.uint64)
        roots = world.roots_at(svs, _ts_ms(req, "timestamp", as_of))
        return Response(200, roots.astype(np.uint64).tobytes(), "application/octet-stream")

    def delta_roots(req: Request) -> Response:
        old, new = world.delta_roots(_ts_ms(req, "timestamp_past", None), _ts_ms(req, "timestamp_future", as_of))
        return json_response({"old_roots": old, "new_roots": new})

    def oldest(req: Request) -> Response:
        # PyChunkedGraph get_earliest_timestamp: the first edit's log time minus 500 ms
        return json_response({"iso": _utc(world.first_op_s - 0.5).isoformat()})

    def lvl2_graph(req: Request, node: str) -> Response:
        edges = world.l2_edges.get(int(node), [])
        used = "bounds" in req.query
        if used:
            lo, hi = _bounds(req.query["bounds"])
            edges = [e for e in edges if all(_chunk_in(ids.chunk_of(n), lo, hi) for n in e)]
        return json_response({"edge_graph": [[int(a), int(b)] for a, b in edges]}, headers={"Used-Bounds": str(used)})

    def is_latest(req: Request) -> Response:
        nodes = [int(n) for n in req.json_body().get("node_ids", [])]
        return json_response({"is_latest": world.is_latest(nodes, _ts_ms(req, "timestamp", as_of))})

    def root_timestamps(req: Request) -> Response:
        nodes = [int(n) for n in req.json_body().get("node_ids", [])]
        if req.flag("latest"):
            t_ms = _ts_ms(req, "timestamp", as_of)
            latest = world.is_latest(nodes, t_ms)
            expired = world.expired_s(nodes)
            out = [t_ms / 1000.0 if ok or gone is None else gone for ok, gone in zip(latest, expired, strict=True)]
            return json_response({"timestamp": out})
        return json_response({"timestamp": world.created_s(nodes)})

    def past_ids(req: Request) -> Response:
        roots = [int(r) for r in req.json_body().get("root_ids", [])]
        past, future = world.past_ids(roots, _ts_ms(req, "timestamp_past", 0.0), _ts_ms(req, "timestamp_future", as_of))
        return json_response(
            {
                "past_id_map": {str(k): v for k, v in past.items()},
                "future_id_map": {str(k): v for k, v in future.items()},
            }
        )

    router.add("GET", PREFIX + r"/tabular_change_log_many", change_log_many)
    router.add("GET", PREFIX + r"/operation_details", details)
    router.add("POST", PREFIX + r"/roots_binary", roots_binary)
    router.add("GET", PREFIX + r"/delta_roots", delta_roots)
    router.add("GET", PREFIX + r"/oldest_timestamp", oldest)
    router.add("GET", PREFIX + r"/node/(?P<node>\d+)/lvl2_graph", lvl2_graph)
    router.add("POST", PREFIX + r"/is_latest_roots", is_latest)
    router.add("POST", PREFIX + r"/root_timestamps", root_timestamps)
    router.add("GET", PREFIX + r"/past_id_mapping", past_ids)


def _bounds(text: str) -> tuple[np.ndarray, np.ndarray]:
    """`x0-x1_y0-y1_z0-z1` (what cloud-volume's Bbox.to_filename and caveclient's package_bounds send)."""
    pairs = np.array([[int(v) for v in part.split("-")] for part in text.split("_")], dtype=np.int64)
    return pairs[:, 0], pairs[:, 1]


def _chunk_in(chunk: tuple[int, int, int], lo_vx: np.ndarray, hi_vx: np.ndarray) -> bool:
    lo, hi = ids.chunk_box_vx(chunk)
    return bool((lo < hi_vx).all() and (hi > lo_vx).all())
