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

- `flywire_public`: the datastack is set up as FlyWire's public one: its segmentation is a virtual table whose
  times are capped at its release, the pinned version's time (PyChunkedGraph pcgv1 app_utils.remap_public:
  later `timestamp` / `timestamp_future` arguments, and missing ones, are clamped to the cap without an error; a
  node id in the URL path created after the cap answers 401), and the l2cache's table mapping is keyed on the
  real graph's id, not the virtual table's (PCGL2Cache's `read_l2cache_config`), so caveclient's `has_cache()`
  says False while the attributes route, which remaps a virtual table (PCGL2Cache app/v1/routes.py
  remap_public), answers. Its synapses are read from a view (`VIEW`, of the synapse table) and the datastack
  names no synapse table, as FlyWire's public one points users to the deduplicated view valid_synapses_nt_np_v6
  (fafbseg-py flywire/utils.py, synapses.py). A config pinned at the release meets none of it: preflight reports
  no FAIL.
- `public_release_cap`: the same virtual table, capped at an earlier release (the twin's version 2) than the
  config pins: every root comes back as of that release, silently; a root made after it, named in a URL path,
  answers 401 "root_id not valid at timestamp".
- `flat_segmentation`: the datastack's segmentation source is a flat precomputed layer (the twin's watershed),
  not a graphene one: it has no chunkedgraph.

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

from sim.twin.http import Request, Response, error, json_response

if TYPE_CHECKING:
    from sim.twin.server import TwinApp

DRIFTS = {
    "renamed_column": "the synapse table's pre_pt_root_id is named pre_root_id",
    "missing_table": "the synapse table is not in the pinned version",
    "no_l2cache": "the datastack has no level-2 cache",
    "expired_version": "the pinned (latest) materialization version has expired: unlisted, queries answer 500",
    "terms_not_accepted": "the token's user has not accepted the terms of service (403 missing_tos)",
    "missing_mip": "the EM layer's info lists no scale at the configured mip",
    "virtual_table_401": "a public virtual table: chunkedgraph timestamps after its release answer 401",
    "flywire_public": "set up as FlyWire's public datastack: a virtual table capped at the pinned release, "
    "level-2 data by the attributes route only (has_cache() is False)",
    "public_release_cap": "a virtual table capped at an earlier release than the config pins: times clamped silently",
    "flat_segmentation": "the datastack's segmentation source is a flat precomputed layer, not graphene",
}
VIEW = "synapses_valid"  # flywire_public's view of the synapse table (MaterializationEngine views route)
_VIEWS = re.compile(r"(/materialize/api/v3/datastack/[^/]+/version/\d+)/views(?:/([^/]+)/(query|metadata))?$")
REAL_GRAPH_ID = "cb2_demo_pcg_v31"  # the graph a virtual table remaps to (FlyWire's public table -> fly_v31)
_CG_TABLE = "/segmentation/api/v1/table/"
_NODE_IN_PATH = re.compile(r"/(?:node|root)/(\d+)(?:/|$)")
_CLAMPED = ("timestamp", "timestamp_future")
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
        if "virtual_table_401" in self or "public_release_cap" in self:
            self.cap_s = sorted(v.timestamp for v in world.versions)[-2]
        elif "flywire_public" in self:
            self.cap_s = max(v.timestamp for v in world.versions)
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
        if "virtual_table_401" in self and req.path.startswith(_CG_TABLE):
            stamp = req.query.get("timestamp") or req.query.get("timestamp_future")
            if stamp is not None and float(stamp) > self.cap_s:
                return error(401, "root_id not valid at timestamp")
        if ("flywire_public" in self or "public_release_cap" in self) and req.path.startswith(_CG_TABLE):
            return self._remap_public(req)
        views = _VIEWS.match(req.path) if "flywire_public" in self else None
        if views is not None:
            if views.group(2) is None:
                return json_response([VIEW])
            if views.group(2) != VIEW:
                return error(404, f"view {views.group(2)} not found")
            req.path = f"{views.group(1)}/table/{DRIFTED_TABLE}/{views.group(3)}"  # the view's rows: its table's
            if req.body:  # filters keyed on the view's name (caveclient query_view), read as its table's
                body = json.loads(req.body)
                for key, value in body.items():
                    if isinstance(value, dict) and VIEW in value:
                        body[key] = {DRIFTED_TABLE if k == VIEW else k: v for k, v in value.items()}
                req.body = json.dumps(body).encode()
        return None

    def _remap_public(self, req: Request) -> Response | None:
        """A virtual table's request as pcgv1 remap_public serves it: times past the cap (or none) clamped to the
        cap in place, a node id in the path that the cap does not know refused."""
        for name in _CLAMPED:
            stamp = req.query.get(name)
            if stamp is None or float(stamp) > self.cap_s:
                req.query[name] = repr(self.cap_s)
        node = _NODE_IN_PATH.search(req.path)
        if node is not None:
            created = self._app.world.created_s([int(node.group(1))])[0]
            if not created < self.cap_s:
                return error(401, "root_id not valid at timestamp")
        return None

    def after(self, req: Request, resp: Response) -> Response:
        """An answer as a switch changes it (listings without the missing table, the EM info without scales)."""
        if not self.names or resp.status != 200:
            return resp
        if "flywire_public" in self and req.path == "/l2cache/api/v1/table_mapping":
            entries = list(json.loads(resp.body).values())
            return json_response({REAL_GRAPH_ID: entries[0]} if entries else {})
        if req.path.startswith("/info/api/v2/datastack/full/") and ("flat_segmentation" in self
                                                                     or "flywire_public" in self):  # fmt: skip
            info = json.loads(resp.body)
            if "flat_segmentation" in self:
                info["segmentation_source"] = f"precomputed://{self._app.url}/ws"
            if "flywire_public" in self:
                info["synapse_table"] = None
            return json_response(info)
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
