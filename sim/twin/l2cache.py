"""The level-2 cache: representative points of level-2 nodes (caveclient l2cache.py's endpoints).

The twin's level-2 nodes with attributes are its level-2 graphs' chunk components (cache.py); any other id answers {}
as the real cache does for an id it has not computed. `has_cache()` reads the table mapping. Without a cache
(`app.l2cache` False: the `no_l2cache` drift) the attributes route answers as PCGL2Cache does for a graph it has no
cache of: its assertion (app/utils.py get_l2cache_client) as a 500 (app/common.py unhandled_exception).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.twin.http import Request, Response, Router, error, json_response
from sim.twin.info import TABLE_ID

if TYPE_CHECKING:
    from sim.twin.server import TwinApp

ATTRIBUTES = ("rep_coord_nm",)


def register(router: Router, app: TwinApp) -> None:
    world = app.world

    def attributes(req: Request, table: str) -> Response:
        if not app.l2cache:
            return error(500, f"Dataset {table} does not have an L2 Cache.")
        names = [a for a in req.query.get("attribute_names", ",".join(ATTRIBUTES)).split(",") if a]
        out = {}
        for l2 in req.json_body().get("l2_ids", []):
            coord = world.rep_coord.get(int(l2)) if table == TABLE_ID else None
            out[str(int(l2))] = {"rep_coord_nm": coord} if coord is not None and "rep_coord_nm" in names else {}
        return json_response(out)

    def table_mapping(req: Request) -> Response:
        if not app.l2cache:
            return json_response({})
        return json_response({TABLE_ID: {"l2cache_id": "cb2_demo_l2cache", "cv_path": f"graphene://{app.url}"}})

    def metadata(req: Request) -> Response:
        return json_response({"rep_coord_nm": "list[float]"})

    router.add("POST", r"/l2cache/api/v1/table/(?P<table>[^/]+)/attributes", attributes)
    router.add("GET", r"/l2cache/api/v1/table_mapping", table_mapping)
    router.add("GET", r"/l2cache/api/v1/attribute_metadata", metadata)
