"""The storage buckets behind the datastack: EM and watershed chunks, mesh fragments and shards.

Public (no token), as the real buckets are. Files are the world's own (gzip chunks are sent with
`Content-Encoding: gzip`, as GCS serves them, and cloud-files decodes them) and the twin cache's mesh
files. `Range: bytes=a-b` is honoured with 206 (sharded meshes are read by byte range).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from sim.twin.http import Request, Response, Router, error, json_response
from sim.twin.info import MESH_DIRS, mesh_info

if TYPE_CHECKING:
    from sim.twin.server import TwinApp

_RANGE = re.compile(r"bytes=(\d+)-(\d*)\Z")


def _safe(rel: str) -> bool:
    return bool(rel) and not any(part in ("", ".", "..") for part in rel.split("/"))


def file_response(req: Request, path: Path, content_type: str = "application/octet-stream") -> Response:
    """The file (or its `.gz` twin with Content-Encoding: gzip), a byte range of it when asked; else 404."""
    encoding = None
    if not path.is_file():
        gz = path.with_name(path.name + ".gz")
        if not gz.is_file():
            return error(404, "no such object")
        path, encoding = gz, "gzip"
    data = path.read_bytes()
    headers = {"Content-Encoding": encoding} if encoding else {}
    wanted = req.header("Range")
    if wanted:
        m = _RANGE.match(wanted.strip())
        if m is None or encoding:
            return error(416, f"unsupported range {wanted!r}")
        start = int(m.group(1))
        end = min(int(m.group(2)) if m.group(2) else len(data) - 1, len(data) - 1)
        if start > end:
            return error(416, f"range {wanted!r} outside {len(data)} bytes")
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        return Response(206, data[start : end + 1], content_type, headers)
    return Response(200, data, content_type, headers)


def register(router: Router, app: TwinApp) -> None:
    world_dir, cache = app.world.world_dir, app.world.cache_dir
    mesh_dir = MESH_DIRS[app.flavor]

    def em(req: Request, rel: str) -> Response:
        if not _safe(rel):
            return error(400, "bad path")
        return file_response(req, world_dir / "em" / rel)

    def ws(req: Request, rel: str) -> Response:
        if not _safe(rel):
            return error(400, "bad path")
        if rel == "info":
            return json_response(app.ws_info)
        head, _, rest = rel.partition("/")
        if head == mesh_dir:
            if rest == "info":
                return json_response(mesh_info(app))
            if app.flavor == "v1":
                return file_response(req, cache / "v1" / rest) if "/" not in rest else error(404, "no such object")
            if rest.startswith("initial/"):
                return file_response(req, cache / "v2" / rest)
            return error(404, "no such object")  # dynamic/: no edit-made fragments in the twin
        if head in MESH_DIRS.values() or head == "mesh":
            return error(404, "no such object")
        generated = app.world.ws_chunk(rel)  # a generated world's chunks are made when asked
        if generated is not None:
            return Response(200, generated, "application/octet-stream", {"Content-Encoding": "gzip"})
        return file_response(req, world_dir / "segmentation" / rel)

    router.add("GET", r"/em/(?P<rel>.+)", em)
    router.add("GET", r"/ws/(?P<rel>.+)", ws)
