"""Nearest-surface ray casting of several meshes in one scene with Embree (embreex).

One scene holds every mesh (faces concatenated, so a hit's face id tells which mesh it belongs to);
every camera's parallel rays go through one call: Embree's C API via render.embree_direct (one device per
process with threads=1, zero-copy shared buffers, 16-wide packets), or embreex's Python API as the fallback when
that library cannot be loaded. Vertices are shifted to the camera centre in float64 before the float32 cast, so
nm-scale world coordinates lose no precision. Plain ndarrays only: trimesh's wrapper hands embreex a TrackedArray
and its element-wise copy costs ~2x the whole cast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from render import embree_direct
from render.camera import OrthoCamera, pixel_rays


@dataclass(frozen=True)
class ViewHits:
    """Per pixel (res, res): `mesh` index of the nearest surface (-1 background), its `face` index within
    that mesh (-1 background), `depth` in nm along forward from the camera centre plane (nan background),
    and the face `normal` in world space (res, res, 3), zero on background, not yet oriented."""

    mesh: np.ndarray
    face: np.ndarray
    depth: np.ndarray
    normal: np.ndarray


def _plain(a, dtype) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a).view(np.ndarray), dtype=dtype)


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit face normals in float64 from the geometry (zero for degenerate faces)."""
    tri = vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, norm, out=np.zeros_like(n), where=norm > 0)


def _intersect(local_v: np.ndarray, faces: np.ndarray, origins: np.ndarray, dirs: np.ndarray):
    """Nearest hit of every ray: (primID int64, -1 on a miss; tfar float64). Embree's C API directly when the
    library can be loaded (render.embree_direct), else embreex's Python API."""
    v32, f32, o32, d32 = (
        _plain(local_v, np.float32),
        _plain(faces, np.int32),
        _plain(origins, np.float32),
        _plain(dirs, np.float32),
    )
    if embree_direct.available():
        prim, tfar = embree_direct.intersect(v32, f32, o32, d32)
        return prim, tfar.astype(np.float64)
    from embreex import rtcore_scene as rtcs
    from embreex.mesh_construction import TriangleMesh

    scene = rtcs.EmbreeScene()
    TriangleMesh(scene=scene, vertices=v32, indices=f32)
    out = scene.run(o32, d32, output=1)
    return np.asarray(out["primID"], dtype=np.int64), np.asarray(out["tfar"], dtype=np.float64)


def cast_views(meshes: list[trimesh.Trimesh], cameras: list[OrthoCamera]) -> list[ViewHits]:
    center = np.asarray(cameras[0].center_nm, dtype=np.float64)
    verts, faces, offsets = [], [], [0]
    for m in meshes:
        v = _plain(m.vertices, np.float64).reshape(-1, 3)
        f = _plain(m.faces, np.int64).reshape(-1, 3)
        faces.append(f + sum(len(x) for x in verts))
        verts.append(v)
        offsets.append(offsets[-1] + len(f))
    all_v = np.concatenate(verts) if verts else np.zeros((0, 3))
    all_f = np.concatenate(faces) if faces else np.zeros((0, 3), np.int64)
    res = cameras[0].resolution
    empty = [
        ViewHits(
            np.full((c.resolution,) * 2, -1, np.int64),
            np.full((c.resolution,) * 2, -1, np.int64),
            np.full((c.resolution,) * 2, np.nan),
            np.zeros((c.resolution, c.resolution, 3)),
        )
        for c in cameras
    ]
    if len(all_f) == 0:
        return empty
    local_v = all_v - center
    normals = face_normals(all_v, all_f)
    # rays start behind everything: the farthest vertex from the centre plus a margin
    back_off = float(np.abs(local_v).max()) * 1.75 + 1.0

    origins, dirs = [], []
    for cam in cameras:
        o, d = pixel_rays(cam, back_off)
        origins.append(o - center)
        dirs.append(d)
    prim, tfar = _intersect(local_v, all_f, np.concatenate(origins), np.concatenate(dirs))

    hits = []
    bounds = np.asarray(offsets)
    for i in range(len(cameras)):
        sl = slice(i * res * res, (i + 1) * res * res)
        p = prim[sl]
        fg = p >= 0
        mesh_idx = np.where(fg, np.searchsorted(bounds, p, side="right") - 1, -1)
        face = np.where(fg, p - bounds[np.clip(mesh_idx, 0, None)], -1)
        depth = np.where(fg, tfar[sl] - back_off, np.nan)
        normal = np.where(fg[:, None], normals[np.clip(p, 0, None)], 0.0)
        hits.append(
            ViewHits(
                mesh_idx.reshape(res, res),
                face.reshape(res, res),
                depth.reshape(res, res),
                normal.reshape(res, res, 3),
            )
        )
    return hits
