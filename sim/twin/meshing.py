"""The meshing service's manifest: which fragment files make up a root's mesh, per server generation.

v2 (CAVEconnectome/PyChunkedGraph app/meshing/common.py handle_get_manifest, meshing/manifest/):
`bounds` (mip-0 voxels, `x0-x1_y0-y1_z0-z1`) keeps the level-2 chunks the box touches
(graph/chunks/utils.py normalize_bounding_box: floor below, ceil above, from the volume's voxel
offset); `start_layer` (query or JSON body) is where the walk down the graph starts; with `verify`
the entries are `~{layer}/{shard file}:{offset}:{size}` (byte ranges the client reads), without it the
speculative `~{id}:{layer}:{chunk id}:{shard file}:{minishard}`; `return_seg_ids` adds the node ids,
`prepend_seg_ids` prefixes `~{id}:`.
v1 (seung-lab/PyChunkedGraph pcgv1, app/meshing/common.py and meshing/meshgen_utils.py): `bounds` is
parsed and IGNORED, `start_layer` and `return_seg_ids` are not read; with `verify` the entries are the
legacy names `{id}:0:{chunk bbox}` of the highest nodes that have a mesh (stitched layer 3-4 fragments
where the root's lineage was edited: stitched.py), without it the node's own name; served on the
`meshing/api/v1/table/...` and the legacy `meshing/1.0/...` routes (app/meshing/legacy/routes.py).
v2 holds level-2 fragments only (its stitched higher-layer initial meshes are not modelled).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
from cloudvolume.datasource.precomputed.sharding import ShardingSpecification

from pipeline.sources.demo_volume import VOXEL_OFFSET
from sim.twin import ids
from sim.twin.cache import SHARD_SPEC
from sim.twin.http import Request, Response, Router, error, json_response
from sim.twin.info import TABLE_ID

if TYPE_CHECKING:
    from sim.twin.server import TwinApp

_SPEC = ShardingSpecification.from_dict(SHARD_SPEC)


def chunk_range(bounds: str) -> tuple[np.ndarray, np.ndarray]:
    """Level-2 chunk range [lo, hi) a `bounds` box touches, as PyChunkedGraph normalizes it."""
    pairs = np.array([b.split("-") for b in bounds.split("_")], dtype=np.int64)
    lo = np.trunc((pairs[:, 0] - VOXEL_OFFSET) / ids.GRAPH_CHUNK_VX).astype(np.int64)
    hi = np.ceil((pairs[:, 1] - VOXEL_OFFSET) / ids.GRAPH_CHUNK_VX).astype(np.int64)
    return lo, hi


def _speculative(l2: int) -> str:
    loc = _SPEC.compute_shard_location(l2)
    chunk_id = l2 & ~((1 << ids.segid_bits(2)) - 1)
    return f"~{l2}:2:{chunk_id}:{ids.chunk_position_number(l2)}-{loc.shard_number}.shard:{int(loc.minishard_number)}"


def register(router: Router, app: TwinApp) -> None:
    world = app.world

    def manifest(req: Request, node: str) -> Response:
        data = {}
        if req.body:
            try:
                data = json.loads(req.body)
            except ValueError:
                return error(400, "the manifest request's body is not JSON")
        rows = world.fragment_rows(int(node))
        if app.flavor == "v1":
            if "bounds" in req.query:
                chunk_range(req.query["bounds"])  # parsed (a malformed box fails) and then not used
            if not req.flag("verify"):  # without verify pcgv1 lists the node itself, mesh or not
                return json_response({"fragments": [ids.legacy_fragment_name(int(node))] if rows else []})
            return json_response({"fragments": world.v1_fragments(int(node))})
        start_layer = int(req.query.get("start_layer", 2))
        if "start_layer" in data:
            start_layer = int(data["start_layer"])
        if start_layer < 2:
            rows = []  # nothing below layer 2 has a mesh
        if "bounds" in req.query:
            lo, hi = chunk_range(req.query["bounds"])
            chunks = np.asarray([world.frag_chunk[i] for i in rows], dtype=np.int64).reshape(-1, 3)
            inside = ((chunks >= lo) & (chunks < hi)).all(axis=1)
            rows = [i for i, ok in zip(rows, inside, strict=True) if ok]
        seg_ids = [int(world.frag_l2[i]) for i in rows]
        verified = req.flag("verify")
        fragments = [world.frag_v2[i] for i in rows] if verified else [_speculative(l2) for l2 in seg_ids]
        if req.flag("prepend_seg_ids"):
            fragments = [f"~{s}:{f}" for s, f in zip(seg_ids, fragments, strict=True)]
        out: dict = {"fragments": fragments}
        if req.flag("return_seg_ids") or str(data.get("return_seg_ids", "false")).lower() in ("true", "1"):
            out["seg_ids"] = seg_ids
        return json_response(out)

    router.add("GET", rf"/meshing/api/v1/table/{TABLE_ID}/manifest/(?P<node>\d+):0", manifest)
    if app.flavor == "v1":  # pcgv1 app/meshing/legacy/routes.py: the `.../1.0/{table}` paths FlyWire's config uses
        router.add("GET", rf"/meshing/1.0/{TABLE_ID}/manifest/(?P<node>\d+):0", manifest)
