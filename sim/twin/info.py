"""CAVE's info service and the graphene layer's info: what clients read first.

Shapes from caveclient's infoservice / chunkedgraph clients (endpoints.py) and cloud-volume's
GrapheneMetadata (datasource/graphene/metadata.py), which reads `graph`, `data_dir`, `mesh`,
`mesh_metadata`, `chunks_start_at_voxel_offset` and `app.supported_api_versions`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sim.twin import ids
from sim.twin.cache import SHARD_SPEC
from sim.twin.http import Request, Response, Router, error, json_response

if TYPE_CHECKING:
    from sim.twin.server import TwinApp

DATASTACK = "cb2_demo_twin"
TABLE_ID = "cb2_demo_pcg"
MESH_DIRS = {"v1": "pcg_v1_meshes", "v2": "graphene_meshes"}
PCG_VERSIONS = {"v1": "1.24.2", "v2": "2.21.1"}  # pcgv1 branch / CAVEconnectome main (__init__.py)


def datastack_info(app: TwinApp) -> dict:
    res = app.resolution
    return {
        "aligned_volume": {
            "id": 1,
            "name": "cb2_demo_av",
            "display_name": "cb2 demo world",
            "description": "the cb2-build demo world served by the twin",
            "image_source": f"precomputed://{app.url}/em",
        },
        "segmentation_source": f"graphene://{app.url}/segmentation/table/{TABLE_ID}",
        "local_server": app.url,
        "synapse_table": "synapses",
        "soma_table": None,
        "analysis_database": None,
        "viewer_site": None,
        "viewer_resolution_x": float(res[0]),
        "viewer_resolution_y": float(res[1]),
        "viewer_resolution_z": float(res[2]),
        "skeleton_source": None,
    }


def graphene_info(app: TwinApp) -> dict:
    info = json.loads(json.dumps(app.ws_info))  # a copy of the watershed layer's own info
    info.update(
        {
            "data_dir": f"{app.url}/ws",
            "mesh": MESH_DIRS[app.flavor],
            "app": {"supported_api_versions": [0, 1]},
            "chunks_start_at_voxel_offset": True,
            "graph": {
                "bounding_box": ids.graph_bounding_box_vx(),
                "chunk_size": [int(x) for x in ids.GRAPH_CHUNK_VX],
                "cv_mip": 0,
                "n_bits_for_layer_id": ids.LAYER_BITS,
                "n_layers": ids.N_LAYERS,
                "fan_out": ids.FAN_OUT,
                "spatial_bit_masks": {str(k): v for k, v in ids.SPATIAL_BITS.items()},
            },
            "mesh_metadata": {
                "uniform_draco_grid_size": app.draco_bin_nm,
                "unsharded_mesh_dir": "dynamic",
                "max_meshed_layer": 2,
            },
            "verify_mesh": False,
        }
    )
    return info


def mesh_info(app: TwinApp) -> dict:
    info = {"@type": "neuroglancer_legacy_mesh", "mip": 0}
    if app.flavor == "v2":
        info["sharding"] = {"2": SHARD_SPEC}
    return info


def register(router: Router, app: TwinApp) -> None:
    def versions(req: Request) -> Response:
        return json_response([1, 2])

    def info_version(req: Request) -> Response:
        return json_response("4.6.0")

    def full(req: Request, datastack: str) -> Response:
        if datastack != DATASTACK:
            return error(404, f"datastack {datastack} not found")
        return json_response(datastack_info(app))

    def pcg_versions(req: Request) -> Response:
        return json_response([0, 1])

    def pcg_version(req: Request) -> Response:
        return json_response(PCG_VERSIONS[app.flavor])

    def table_info(req: Request, table: str) -> Response:
        if table != TABLE_ID:
            return error(404, f"table {table} not found")
        return json_response(graphene_info(app))

    router.add("GET", r"/info/api/versions", versions)
    router.add("GET", r"/info/version", info_version)
    router.add("GET", r"/info/api/v2/datastack/full/(?P<datastack>[^/]+)", full)
    router.add("GET", r"/segmentation/api/versions", pcg_versions)
    router.add("GET", r"/segmentation/api/version", pcg_version)
    router.add("GET", r"/segmentation/table/(?P<table>[^/]+)/info", table_info)
