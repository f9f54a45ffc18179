"""The materialization engine: versions, table metadata, queries answered as Arrow IPC streams.

From CAVEconnectome/MaterializationEngine: blueprints/client/common.py (a query's limit is the
smaller of the request's and QUERY_LIMIT_SIZE; when the result has exactly `limit` rows the only sign
is a `Warning: 201 - "Limited query to N rows` header), blueprints/client/utils.py
(create_query_response: Arrow IPC stream, ZSTD-compressed when the client accepts it, content type
`data.arrow`, `dataframe_resolution` header; positions split into _x/_y/_z), api2.py (versions
listing drops expired ones unless asked). Only `valid` rows are returned, as the engine filters them.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.sources.demo_volume import RES
from sim.twin.errors import engine_500
from sim.twin.http import Request, Response, Router, error, json_response
from sim.twin.info import DATASTACK
from sim.twin.model import POSITION_COLUMNS, TABLE_SCHEMAS, Version

if TYPE_CHECKING:
    from sim.twin.server import TwinApp

ENGINE_VERSION = "5.26.4"
V3 = rf"/materialize/api/v3/datastack/{DATASTACK}"
V2 = rf"/materialize/api/v2/datastack/{DATASTACK}"
_FILTERS = {
    "filter_in_dict": lambda col, v: pc.is_in(col, value_set=pa.array(v, col.type)),
    "filter_notin_dict": lambda col, v: pc.invert(pc.is_in(col, value_set=pa.array(v, col.type))),
    "filter_equal_dict": lambda col, v: pc.equal(col, pa.scalar(v, col.type)),
    "filter_greater_dict": lambda col, v: pc.greater(col, pa.scalar(v, col.type)),
    "filter_less_dict": lambda col, v: pc.less(col, pa.scalar(v, col.type)),
    "filter_greater_equal_dict": lambda col, v: pc.greater_equal(col, pa.scalar(v, col.type)),
    "filter_less_equal_dict": lambda col, v: pc.less_equal(col, pa.scalar(v, col.type)),
}


def _iso(seconds: float) -> str:
    utc = dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds")


def version_metadata(v: Version) -> dict:
    return {
        "id": v.version,
        "version": v.version,
        "datastack": DATASTACK,
        "time_stamp": _iso(v.timestamp),
        "expires_on": _iso(v.timestamp + (30 if v.expired else 3650) * 86400.0),
        "valid": not v.expired,
        "status": "EXPIRED" if v.expired else "AVAILABLE",
        "is_merged": True,
    }


def table_metadata(name: str) -> dict:
    return {
        "table_name": name,
        "schema_type": TABLE_SCHEMAS[name],
        "schema": TABLE_SCHEMAS[name],
        "reference_table": None,
        "voxel_resolution_x": float(RES[0]),
        "voxel_resolution_y": float(RES[1]),
        "voxel_resolution_z": float(RES[2]),
        "valid": True,
        "aligned_volume": "cb2_demo_av",
        "description": "the demo world's table, as the twin materializes it",
        "notice_text": None,
    }


def _arrow(table: pa.Table, zstd: bool) -> bytes:
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression="zstd" if zstd else None)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def run_query(app: TwinApp, table: pa.Table, name: str, data: dict, split: bool) -> tuple[pa.Table, list[str], str]:
    """Filter, select, page, cap and scale a table as the engine does; returns (rows, warnings, resolution)."""
    keep = pc.equal(table["valid"], True)
    for key, make in _FILTERS.items():
        for col, value in ((data.get(key) or {}).get(name) or {}).items():
            if col not in table.column_names:
                raise KeyError(col)
            keep = pc.and_(keep, pc.fill_null(make(table[col], value), False))
    rows = table.filter(keep)
    select = data.get("select_columns") or (data.get("select_column_map") or {}).get(name)
    columns = list(select) if select else [c for c in table.column_names if c != "valid"]
    for col in columns:
        if col not in table.column_names:
            raise KeyError(col)
    cap = app.limits.row_cap
    limit = min(int(data.get("limit", cap)), cap)
    offset = int(data.get("offset", 0))
    rows = rows.slice(offset, limit)
    warnings = [f'201 - "Limited query to {limit} rows'] if rows.num_rows == limit else []
    desired = data.get("desired_resolution")
    scale = RES / np.asarray(desired, dtype=np.float64) if desired else np.ones(3)
    out: dict[str, pa.Array] = {}
    for col in columns:
        if col in POSITION_COLUMNS:
            xyz = np.asarray(rows[col].to_pylist(), dtype=np.float64).reshape(-1, 3) * scale
            if split:
                for i, axis in enumerate("xyz"):
                    out[f"{col}_{axis}"] = pa.array(xyz[:, i], pa.float64())
            else:
                out[col] = pa.array(xyz.tolist(), pa.list_(pa.float64()))
        else:
            out[col] = rows[col].combine_chunks() if isinstance(rows[col], pa.ChunkedArray) else rows[col]
    resolution = ", ".join(str(float(x)) for x in (desired if desired else RES))
    return pa.table(out), warnings, resolution


def answer_query(app: TwinApp, got: pa.Table, table: str, req: Request) -> Response:
    """A query of one table's version as the engine answers it: an Arrow IPC stream (zstd when accepted), the
    resolution and column names in headers, and the row cap's Warning when it cut the result."""
    try:
        data = json.loads(req.body or b"{}")
    except ValueError:
        return app.engine_abort(400, "The browser (or proxy) sent a request that this server could not understand.")
    if req.query.get("random_sample"):
        return app.engine_abort(400, "the twin does not sample tables")
    try:
        rows, warnings, resolution = run_query(app, got, table, data, req.flag("split_positions"))
    except KeyError as exc:
        return app.engine_abort(400, f"column {exc.args[0]} not found in {table}")
    headers = {"dataframe_resolution": resolution, "column_names": json.dumps({table: rows.column_names})}
    if warnings:
        headers["Warning"] = ", ".join(warnings)
    zstd = "zstd" in req.header("Accept-Encoding").lower()
    return Response(200, _arrow(rows, zstd), "data.arrow", headers)


def _no_table(table: str, version: str) -> str:
    """common.py validate_table_args's text for a table the version does not have."""
    return f"Analysis table '{table}' not found for version {version} in datastack {DATASTACK}"


def register(router: Router, app: TwinApp) -> None:
    """The engine's routes: version and table listings and metadata, counts and queries (answer_query)."""
    world = app.world

    def api_versions(req: Request) -> Response:
        return json_response([2, 3])

    def engine_version(req: Request) -> Response:
        return json_response(ENGINE_VERSION)

    def listed(req: Request) -> list[Version]:
        return [v for v in world.versions if req.flag("expired") or not v.expired]

    def versions(req: Request) -> Response:
        return json_response(sorted(v.version for v in listed(req)))

    def versions_metadata(req: Request) -> Response:
        return json_response([version_metadata(v) for v in listed(req)])

    def one_version(req: Request, version: str) -> Response:
        v = world.version(int(version))
        if v is not None:
            return json_response(version_metadata(v))
        if app.wraps_errors:  # api2.py DatastackVersion returns (not raises) this
            return json_response("No version found", 404)
        return error(404, f"version {version} not found")

    def _live(version: str, query: bool = False) -> Version | Response:
        v = world.version(int(version))
        if v is None:  # blueprints/client/datastack.py validate_datastack
            return app.engine_abort(404, f"version {version} not found in {DATASTACK}")
        if v.expired and not app.wraps_errors:
            return error(404, f"version {version} of {DATASTACK} has expired")
        if v.expired and query:  # validate_datastack and validate_table_args pass; the version's database is gone
            db = f"{DATASTACK}__mat{version}"
            return engine_500(f'(psycopg2.OperationalError) FATAL:  database "{db}" does not exist',
                              "sqlalchemy.exc.OperationalError")  # fmt: skip
        if v.expired:  # common.py get_flat_model
            return app.engine_abort(410, "This materialization version is not available")
        return v

    def tables(req: Request, version: str) -> Response:
        v = _live(version)
        return v if isinstance(v, Response) else json_response(sorted(TABLE_SCHEMAS))

    def tables_metadata(req: Request, version: str) -> Response:
        v = _live(version)
        return v if isinstance(v, Response) else json_response([table_metadata(t) for t in sorted(TABLE_SCHEMAS)])

    def one_table(req: Request, version: str, table: str) -> Response:
        v = _live(version)
        if isinstance(v, Response):
            return v
        if table not in TABLE_SCHEMAS:
            if app.wraps_errors:  # api2.py FrozenTableMetadata returns (not raises) this
                text = f"No table named '{table}' found for version '{version}' in datastack '{DATASTACK}'"
                return json_response(text, 404)
            return error(404, f"table {table} not found in version {version}")
        return json_response(table_metadata(table))

    def count(req: Request, version: str, table: str) -> Response:
        v = _live(version)
        if isinstance(v, Response):
            return v
        got = world.table(table, v.version)
        if got is None:
            return app.engine_abort(404, _no_table(table, version))
        return json_response(int(pc.sum(got["valid"]).as_py()))

    def query(req: Request, version: str, table: str) -> Response:
        v = _live(version, query=True)
        if isinstance(v, Response):
            return v
        got = world.table(table, v.version)
        if got is None:
            return app.engine_abort(404, _no_table(table, version))
        return answer_query(app, got, table, req)

    router.add("GET", r"/materialize/api/versions", api_versions)
    router.add("GET", r"/materialize/version", engine_version)
    router.add("GET", V3 + r"/versions", versions)
    router.add("GET", V3 + r"/metadata", versions_metadata)
    router.add("GET", V3 + r"/version/(?P<version>\d+)", one_version)
    router.add("GET", V2 + r"/version/(?P<version>\d+)/tables", tables)
    router.add("GET", V3 + r"/version/(?P<version>\d+)/tables/metadata", tables_metadata)
    router.add("GET", V3 + r"/version/(?P<version>\d+)/table/(?P<table>[^/]+)/metadata", one_table)
    router.add("GET", V2 + r"/version/(?P<version>\d+)/table/(?P<table>[^/]+)/count", count)
    router.add("POST", V3 + r"/version/(?P<version>\d+)/table/(?P<table>[^/]+)/query", query)
