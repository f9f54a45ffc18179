"""Drift: the twin's switches for a server whose state is not what the config assumes (`twin --drift NAME`).

Each switch is one way a real deployment drifts away from a species config between its writing and a build
(or during one), answered as the real services answer it:

- `renamed_column`: the synapse table's `pre_pt_root_id` is called `pre_root_id` (a table re-created with
  another schema's names: every query naming the old column is a 400, the table's columns show the new one).
- `missing_table`: the synapse table is not in the pinned version (listings omit it, its metadata and
  queries answer 404, as MaterializationEngine does for a table it does not have).
- `no_l2cache`: the datastack has no level-2 cache (the l2cache's table mapping lists nothing; a public
  note reports that `flywire_public` has none).
- `expired_version`: the config's pinned version (the twin's latest) has expired: the version listings drop
  it (MaterializationEngine api2.py lists expired versions only when asked) and a query of it anyway answers
  500: the engine checks only that the datastack exists (validate_datastack) and fails opening the expired
  version's database (blueprints/client/datastack.py validate_datastack; most likely a 500, not a 404).
- `terms_not_accepted`: the token's user has not accepted the datastack's terms of service: every CAVE API
  but the info service answers 403 with middle_auth's JSON `{"error": "missing_tos", "data":
  {"tos_form_url": ...}}` (the shape caveclient base.py `_raise_for_status` reads; it then opens a browser).
- `missing_mip`: the EM layer's info lists no scale at all, so the configured `em_mip` is not one of its
  mips (a volume re-published at other resolutions).
- `virtual_table_401`: the segmentation is a public virtual table whose timestamps are capped at its release
  (PyChunkedGraph app_utils.remap_public): a chunkedgraph request with a timestamp after the cap (the twin's
  version 2) answers 401 "root_id not valid at timestamp".

`Drift.apply(app)` sets the state a switch changes (the l2cache, the versions, the tables); `before(req)`
answers what a switch refuses; `after(req, resp)` edits what a switch changes in an answer.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pyarrow as pa

from pipeline.sim.twin.http import Request, Response, error, json_response

if TYPE_CHECKING:
    from pipeline.sim.twin.server import TwinApp

DRIFTS = {
    "renamed_column": "the synapse table's pre_pt_root_id is named pre_root_id",
    "missing_table": "the synapse table is not in the pinned version",
    "no_l2cache": "the datastack has no level-2 cache",
    "expired_version": "the pinned (latest) materialization version has expired: unlisted, queries answer 500",
    "terms_not_accepted": "the token's user has not accepted the terms of service (403 missing_tos)",
    "missing_mip": "the EM layer's info lists no scale at the configured mip",
    "virtual_table_401": "a public virtual table: chunkedgraph timestamps after its release answer 401",
}
DRIFTED_TABLE = "synapses"
RENAMED = ("pre_pt_root_id", "pre_root_id")
TOS_PATH = "/sticky_auth/api/v1/tos/1/accept"
_MAT_VERSION = re.compile(r"/materialize/api/v[23]/datastack/[^/]+/version/(\d+)/(.+)")
_TABLE_IN_PATH = re.compile(r"/table/([^/]+)/")
_FREE = ("/em/", "/ws/", "/info/", "/auth/", "/sticky_auth/")


def parse_drifts(names: Iterable[str]) -> frozenset[str]:
    """The switches named, refusing unknown names (ValueError naming the known ones)."""
    chosen = frozenset(names)
    unknown = sorted(chosen - set(DRIFTS))
    if unknown:
        raise ValueError(f"unknown drift {', '.join(unknown)}; known: {', '.join(DRIFTS)}")
    return chosen


class Drift:
    """The switches of one server (`apply` binds it to that server's app)."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        self.names = parse_drifts(names)
        self._app: TwinApp | None = None
        self.cap_s = float("inf")

    @classmethod
    def of(cls, names: Drift | Iterable[str] | None) -> Drift:
        return cls(names.names if isinstance(names, Drift) else (names or ()))

    def __contains__(self, name: str) -> bool:
        return name in self.names

    def describe(self) -> str:
        return "; ".join(f"{n}: {DRIFTS[n]}" for n in sorted(self.names)) or "none"

    # ------------------------------------------------------------------ state
    def apply(self, app: TwinApp) -> None:
        """Change the served state once, before the first request."""
        self._app = app
        if not self.names:
            return
        world = app.world
        if "no_l2cache" in self:
            app.l2cache = False
        if "expired_version" in self:
            latest = max(v.version for v in world.versions)
            world.versions = tuple(dataclasses.replace(v, expired=v.expired or v.version == latest)
                                   for v in world.versions)  # fmt: skip
        if "missing_table" in self or "renamed_column" in self:
            original = world.table

            def table(name: str, version: int) -> pa.Table | None:
                if name == DRIFTED_TABLE and "missing_table" in self:
                    return None
                got = original(name, version)
                if got is not None and name == DRIFTED_TABLE and "renamed_column" in self:
                    got = got.rename_columns([RENAMED[1] if c == RENAMED[0] else c for c in got.column_names])
                return got

            world.table = table  # this server's world only (each TwinServer opens its own)
        if "virtual_table_401" in self:
            self.cap_s = sorted(v.timestamp for v in world.versions)[-2]
        self._app = app

    # ------------------------------------------------------------------ answers
    def before(self, req: Request) -> Response | None:
        """The answer of a switch that refuses this request, else None."""
        if not self.names:
            return None
        app = self._app
        free = req.path.startswith(_FREE) or req.path.endswith("/info")
        if "terms_not_accepted" in self and not free:
            url = f"{app.url}{TOS_PATH}"
            body = {
                "error": "missing_tos",
                "message": "you must accept the terms of service of this dataset before using it",
                "data": {"tos_id": 1, "tos_name": "cb2 demo twin terms", "tos_form_url": url},
            }
            return json_response(body, 403)
        m = _MAT_VERSION.match(req.path)
        if "expired_version" in self and m:
            v = app.world.version(int(m.group(1)))
            if v is not None and v.expired:
                return error(500, f"Internal Server Error: database {m.group(1)} of the datastack is not available")
        if "virtual_table_401" in self and req.path.startswith("/segmentation/api/v1/table/"):
            stamp = req.query.get("timestamp") or req.query.get("timestamp_future")
            if stamp is not None and float(stamp) > self.cap_s:
                return error(401, "root_id not valid at timestamp")
        return None

    def after(self, req: Request, resp: Response) -> Response:
        """An answer as a switch changes it (listings without the missing table, the EM info without scales)."""
        if not self.names or resp.status != 200:
            return resp
        if "missing_mip" in self and req.path == "/em/info":
            info = json.loads(resp.body)
            info["scales"] = []
            return json_response(info)
        if "missing_table" in self and _MAT_VERSION.match(req.path):
            tail = _MAT_VERSION.match(req.path).group(2)
            if tail == "tables":
                return json_response([t for t in json.loads(resp.body) if t != DRIFTED_TABLE])
            if tail == "tables/metadata":
                return json_response([t for t in json.loads(resp.body) if t.get("table_name") != DRIFTED_TABLE])
            found = _TABLE_IN_PATH.search(req.path + "/")
            if found and found.group(1) == DRIFTED_TABLE:
                return error(404, f"table {DRIFTED_TABLE} not found")
        return resp
