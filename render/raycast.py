"""Nearest-surface ray casting of several meshes in one scene with Embree (embreex).

One scene holds every mesh (faces concatenated, so a hit's face id tells which mesh it belongs to);
every camera's parallel rays go through one call: Embree's C API via render.embree_direct (one device per
process with threads=1, zero-copy shared buffers, 16-wide packets), or embreex's Python API as the fallback when
that library cannot be loaded. Vertices are shifted to the camera centre in float64 before the float32 cast, so
nm-scale world coordinates lose no precision. Plain ndarrays only: trimesh's wrapper hands embreex a TrackedArray
and its element-wise copy costs ~2x the whole cast.

cast_sparse skips every 16-ray packet none of whose pixel centres lies in a face's projected bounding box (those
rays cannot hit anything) and returns hits at hit pixels only; the packets it does cast are the ones casting every
pixel would cast, so the hits are identical (tests/render/test_render_fast_paths.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import trimesh

from render import embree_direct
from render.camera import OrthoCamera


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
    """Unit face normals in float64 from the geometry (zero for degenerate faces). Written out per component:
    the same operations, in the same order, as np.cross and np.linalg.norm(axis=1), at a fraction of the cost."""
    p0, p1, p2 = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    a, b = p1 - p0, p2 - p0
    n = np.empty((len(faces), 3))
    n[:, 0] = a[:, 1] * b[:, 2] - a[:, 2] * b[:, 1]
    n[:, 1] = a[:, 2] * b[:, 0] - a[:, 0] * b[:, 2]
    n[:, 2] = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    norm = np.sqrt((n[:, 0] * n[:, 0] + n[:, 1] * n[:, 1]) + n[:, 2] * n[:, 2])[:, None]
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


@dataclass(frozen=True)
class SparseHits:
    """The hit pixels of one view: `pixels` flat row-major indices (sorted), and per hit pixel the `mesh` index,
    the `face` index within that mesh, the concatenated-scene face id `prim`, and `depth` in nm along forward
    from the camera centre plane. `normals` are the world-space unit normals of every scene face (shared)."""

    resolution: int
    pixels: np.ndarray
    mesh: np.ndarray
    face: np.ndarray
    prim: np.ndarray
    depth: np.ndarray
    normals: np.ndarray

    def dense(self) -> ViewHits:
        res = self.resolution
        mesh = np.full(res * res, -1, np.int64)
        face = np.full(res * res, -1, np.int64)
        depth = np.full(res * res, np.nan)
        normal = np.zeros((res * res, 3))
        mesh[self.pixels] = self.mesh
        face[self.pixels] = self.face
        depth[self.pixels] = self.depth
        normal[self.pixels] = self.normals[self.prim]
        return ViewHits(
            mesh.reshape(res, res), face.reshape(res, res), depth.reshape(res, res), normal.reshape(res, res, 3)
        )


_W = 16  # rays per packet (embree_direct casts 16-wide packets)
_MARGIN_PX = 1.0  # slack of the coverage test, far above float32 rounding of ray and vertex coordinates


def _face_boxes(local_v: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-face axis-aligned bounds: (lo, hi), each (3, F)."""
    lo, hi = np.empty((3, len(faces))), np.empty((3, len(faces)))
    for k in range(3):
        x = local_v[:, k]
        x0, x1, x2 = x[faces[:, 0]], x[faces[:, 1]], x[faces[:, 2]]
        np.minimum(np.minimum(x0, x1, out=lo[k]), x2, out=lo[k])
        np.maximum(np.maximum(x0, x1, out=hi[k]), x2, out=hi[k])
    return lo, hi


def _project_range(lo: np.ndarray, hi: np.ndarray, d: np.ndarray, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Range of `d . p + offset` over each face's box (lo, hi): contains the face's projection onto d."""
    pmin, pmax = np.full(lo.shape[1], offset), np.full(lo.shape[1], offset)
    for k in range(3):
        if d[k] > 0:
            pmin += d[k] * lo[k]
            pmax += d[k] * hi[k]
        elif d[k] < 0:
            pmin += d[k] * hi[k]
            pmax += d[k] * lo[k]
    return pmin, pmax


def _coverage(lo: np.ndarray, hi: np.ndarray, cam: OrthoCamera, center: np.ndarray, unit: int) -> np.ndarray:
    """(res, res // unit) bool, conservative: False only where no face can be hit by any ray of that row's
    `unit` consecutive pixels. Orthographic rays travel along forward, so a ray can hit a face only if its pixel
    centre lies in the face's projected 2-D bounding box (here grown by a pixel). Marked with a 2-D difference
    array over every face's pixel range. (lo, hi): per-face bounds relative to `center` (_face_boxes)."""
    res = cam.resolution
    basis = cam.basis()
    shift = center - np.asarray(cam.center_nm, dtype=np.float64)
    scale = 0.5 * res / cam.half_width_nm
    x0, x1 = _project_range(lo, hi, basis[0], float(basis[0] @ shift))
    y0, y1 = _project_range(lo, hi, basis[1], float(basis[1] @ shift))
    # continuous pixel index (pixel centres at integers); rows grow downwards
    c_lo = np.ceil(x0 * scale + (0.5 * res - 0.5 - _MARGIN_PX))
    c_hi = np.floor(x1 * scale + (0.5 * res - 0.5 + _MARGIN_PX))
    r_lo = np.ceil((0.5 * res - 0.5 - _MARGIN_PX) - y1 * scale)
    r_hi = np.floor((0.5 * res - 0.5 + _MARGIN_PX) - y0 * scale)
    keep = (c_hi >= 0) & (c_lo <= res - 1) & (r_hi >= 0) & (r_lo <= res - 1)
    c_lo = np.clip(c_lo[keep], 0, res - 1).astype(np.int64) // unit
    c_hi = np.clip(c_hi[keep], 0, res - 1).astype(np.int64) // unit
    r_lo = np.clip(r_lo[keep], 0, res - 1).astype(np.int64)
    r_hi = np.clip(r_hi[keep], 0, res - 1).astype(np.int64) + 1
    nc = res // unit + 1
    c_hi += 1
    idx = np.concatenate([r_lo * nc + c_lo, r_lo * nc + c_hi, r_hi * nc + c_lo, r_hi * nc + c_hi])
    w = np.ones(len(idx))
    w[len(c_lo) : 3 * len(c_lo)] = -1.0
    diff = np.bincount(idx, weights=w, minlength=(res + 1) * nc).reshape(res + 1, nc)
    return diff.cumsum(axis=0).cumsum(axis=1)[:res, : nc - 1] > 0.5


def _origin_axis(cam: OrthoCamera, k: int, col: np.ndarray, row: np.ndarray, back_off: float, center) -> np.ndarray:
    """Axis k of the origins (float64, relative to `center`) of the pixels (row, col): per element the same
    float64 arithmetic as render.camera.pixel_rays followed by `- center`, namely
    (((c + u * right) + v * up) - back_off * forward) - center. A term that is a zero product adds nothing to a
    non-zero value, so when one of right[k], up[k] is zero the value is a table over one pixel axis."""
    res = cam.resolution
    s = ((np.arange(res) + 0.5) / res * 2.0 - 1.0) * cam.half_width_nm
    u_tab, v_tab = s, -s
    r, up = float(cam.right[k]), float(cam.up[k])
    cc = float(np.float64(cam.center_nm[k]))
    back = back_off * np.float64(cam.forward[k])
    ck = center[k]
    if up == 0.0:
        t = cc + u_tab * r
        if np.all(t != 0.0):
            return ((t - back) - ck)[col]
    elif r == 0.0 and cc != 0.0:
        return (((cc + v_tab * up) - back) - ck)[row]
    return (((cc + u_tab[col] * r) + v_tab[row] * up) - back) - ck


def cast_sparse(meshes: list[trimesh.Trimesh], cameras: list[OrthoCamera]) -> list[SparseHits]:
    """Every camera's hit pixels, nearest surface of all `meshes` in one scene.

    With Embree's C API the rays are the same 16-ray packets as casting every pixel of every view in one
    row-major list (views concatenated), but packets none of whose rays can hit anything (the coverage test
    above) are not cast: their rays are misses. Every other packet is cast unchanged, so the hits are exactly
    those of casting all pixels."""
    center = np.asarray(cameras[0].center_nm, dtype=np.float64)
    all_v, all_f, offsets = _one_scene(meshes)
    res = cameras[0].resolution
    if any(c.resolution != res for c in cameras):
        raise ValueError("cast_sparse needs one resolution for every camera")
    if len(all_f) == 0:
        empty_i = np.zeros(0, np.int64)
        return [SparseHits(res, empty_i, empty_i, empty_i, empty_i, np.zeros(0), np.zeros((0, 3))) for _ in cameras]
    local_v = all_v - center
    normals = face_normals(all_v, all_f)
    # rays start behind everything: the farthest vertex from the centre plus a margin
    back_off = float(np.abs(local_v).max()) * 1.75 + 1.0
    cast = _cast_covered_packets if embree_direct.available() else _cast_every_pixel
    ray_hit, prim, tfar = cast(local_v, all_f, cameras, center, back_off)
    return _hits_per_view(ray_hit, prim, tfar - back_off, offsets, normals, cameras)


def _one_scene(meshes: list[trimesh.Trimesh]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Every mesh's vertices and faces concatenated (faces re-indexed), and the first scene face id of each
    mesh (plus the total), so a hit's face id tells which mesh it belongs to."""
    verts, faces, offsets = [], [], [0]
    for m in meshes:
        v = _plain(m.vertices, np.float64).reshape(-1, 3)
        f = _plain(m.faces, np.int64).reshape(-1, 3)
        faces.append(f + sum(len(x) for x in verts))
        verts.append(v)
        offsets.append(offsets[-1] + len(f))
    all_v = np.concatenate(verts) if verts else np.zeros((0, 3))
    all_f = np.concatenate(faces) if faces else np.zeros((0, 3), np.int64)
    return all_v, all_f, offsets


def _forwards32(cameras: list[OrthoCamera]) -> np.ndarray:
    return np.array([cam.forward for cam in cameras], dtype=np.float64).astype(np.float32)


def _covered_packets(
    lo: np.ndarray, hi: np.ndarray, cameras: list[OrthoCamera], center: np.ndarray, n_rays: int
) -> np.ndarray:
    """Indices of the 16-ray packets (of all views' rays in one row-major list) that can hit a face."""
    res = cameras[0].resolution
    if res % _W == 0:  # packets are row segments: coverage straight at packet granularity
        return np.flatnonzero(np.concatenate([_coverage(lo, hi, c, center, _W).reshape(-1) for c in cameras]))
    rr = res * res
    cover = np.zeros(-(-n_rays // _W) * _W, dtype=bool)
    for i, cam in enumerate(cameras):
        cover[i * rr : (i + 1) * rr] = _coverage(lo, hi, cam, center, 1).reshape(-1)
    return np.flatnonzero(cover.reshape(-1, _W).any(axis=1))


def _packet_rays(
    rays: np.ndarray, cameras: list[OrthoCamera], center: np.ndarray, back_off: float
) -> tuple[np.ndarray, np.ndarray]:
    """Origins and directions (3, n) float32 of the given ray indices (views concatenated, row-major)."""
    res = cameras[0].resolution
    rr = res * res
    fwd32 = _forwards32(cameras)
    org = np.empty((3, len(rays)), dtype=np.float32)
    dirs = np.empty((3, len(rays)), dtype=np.float32)
    cuts = np.searchsorted(rays, np.arange(len(cameras) + 1) * rr)
    for i, cam in enumerate(cameras):
        a, b = int(cuts[i]), int(cuts[i + 1])
        pix = rays[a:b] - i * rr
        col, row = pix % res, pix // res
        for k in range(3):
            org[k, a:b] = _origin_axis(cam, k, col, row, back_off, center)
        dirs[:, a:b] = fwd32[i][:, None]
    return org, dirs


def _cast_covered_packets(
    local_v: np.ndarray, all_f: np.ndarray, cameras: list[OrthoCamera], center: np.ndarray, back_off: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embree's C API on the packets that can hit a face: (hit ray indices, their scene face ids, tfar)."""
    res = cameras[0].resolution
    n_rays = res * res * len(cameras)
    lo, hi = _face_boxes(local_v, all_f)
    packets = _covered_packets(lo, hi, cameras, center, n_rays)
    npk = len(packets)
    rays = np.minimum(packets[:, None] * _W + np.arange(_W), n_rays - 1).reshape(-1)  # padding repeats the last
    n_last = min(_W, n_rays - int(packets[-1]) * _W) if npk else _W
    org, dirs = _packet_rays(rays, cameras, center, back_off)
    with embree_direct.Scene(_plain(local_v, np.float32), _plain(all_f, np.int32)) as scene:
        prim32, tfar32 = scene.intersect_packets(
            org.reshape(3, npk, _W).transpose(1, 0, 2), dirs.reshape(3, npk, _W).transpose(1, 0, 2), n_last
        )
    hit = prim32 >= 0
    if n_last < _W:  # inactive lanes of a last partial packet (misses anyway)
        hit[len(rays) - (_W - n_last) :] = False
    return rays[hit], prim32[hit].astype(np.int64), tfar32[hit].astype(np.float64)


def _cast_every_pixel(
    local_v: np.ndarray, all_f: np.ndarray, cameras: list[OrthoCamera], center: np.ndarray, back_off: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """embreex's Python API on every pixel of every view: (hit ray indices, their scene face ids, tfar)."""
    res = cameras[0].resolution
    rr = res * res
    pix = np.arange(rr)
    col, row = pix % res, pix // res
    origins = np.concatenate(
        [np.stack([_origin_axis(c, k, col, row, back_off, center) for k in range(3)], axis=1) for c in cameras]
    )
    dirs = np.repeat(_forwards32(cameras), rr, axis=0)
    prim_all, tfar_all = _intersect(local_v, all_f, origins, dirs)
    ray_hit = np.flatnonzero(prim_all >= 0)
    return ray_hit, prim_all[ray_hit], tfar_all[ray_hit]


def _hits_per_view(
    ray_hit: np.ndarray,
    prim: np.ndarray,
    depth: np.ndarray,
    offsets: list[int],
    normals: np.ndarray,
    cameras: list[OrthoCamera],
) -> list[SparseHits]:
    """Cut the hits (ray indices ascending, views concatenated) into each view's, and tell each scene face id's
    mesh and face within it."""
    res = cameras[0].resolution
    rr = res * res
    bounds = np.asarray(offsets)
    out = []
    cuts = np.searchsorted(ray_hit, np.arange(len(cameras) + 1) * rr)
    for i in range(len(cameras)):
        sl = slice(cuts[i], cuts[i + 1])
        p = prim[sl]
        mesh_idx = np.searchsorted(bounds, p, side="right") - 1
        out.append(SparseHits(res, ray_hit[sl] - i * rr, mesh_idx, p - bounds[mesh_idx], p, depth[sl], normals))
    return out


def cast_views(meshes: list[trimesh.Trimesh], cameras: list[OrthoCamera]) -> list[ViewHits]:
    """Dense per-pixel hits of every camera (see cast_sparse)."""
    return [h.dense() for h in cast_sparse(meshes, cameras)]
