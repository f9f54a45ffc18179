"""The (3, 7, 224, 224) float16 geometry render (ARCHITECTURE.md, contract §2).

Channels: 0 silhouette {0,1}; 1 depth, the view's foreground min-max normalised to [0, 1] (0 nearest),
background 0; 2-4 unit face normal in camera space (x right, y up, z towards the viewer), oriented to
face the camera, background 0; 5 mask A; 6 mask B. Dual renders cast both meshes in one scene, so each
pixel's depth, normal and mask come from the one nearest surface.
"""

from __future__ import annotations

import numpy as np
import trimesh

from core.errors import SampleError
from core.hashing import rng_for
from render.camera import OrthoCamera, view_cameras
from render.raycast import SparseHits, cast_sparse

N_CHANNELS = 7
CROP_FACTOR = 1.2  # meshes are cropped to the box centre +- CROP_FACTOR * extent before rendering


def draw_view_params(
    sample_hash: str, coord_nm, extent_range, jitter_nm: float, seed: int = 0
) -> tuple[np.ndarray, float]:
    """Seeded by the sample's hash (and the species config's seed, to re-draw a whole release on purpose):
    extent ~ U(extent_range), centre = coord + N(0, jitter_nm) per axis."""
    lo, hi = (float(x) for x in extent_range)
    extent = float(rng_for(sample_hash, seed, "view_extent_nm").uniform(lo, hi))
    jitter = rng_for(sample_hash, seed, "render_center_jitter_nm").normal(0.0, float(jitter_nm), size=3)
    center = np.asarray(coord_nm, dtype=np.float64).reshape(3) + jitter
    return center, extent


def crop_mesh(mesh: trimesh.Trimesh, center_nm, half_size_nm: float) -> trimesh.Trimesh:
    """Faces with at least one vertex inside the box centre +- half_size_nm (so faces crossing the box edge
    are kept whole), minus degenerate (zero-area) faces; unreferenced vertices are dropped."""
    v = np.asarray(mesh.vertices, dtype=np.float64).reshape(-1, 3)
    d = np.abs(v - np.asarray(center_nm, dtype=np.float64).reshape(3))
    # elementwise over the 3 axes / corners: numpy's reductions over a length-3 axis are slow
    return _keep(mesh, (d[:, 0] <= half_size_nm) & (d[:, 1] <= half_size_nm) & (d[:, 2] <= half_size_nm))


def crop_box(mesh: trimesh.Trimesh, lo_nm, hi_nm) -> trimesh.Trimesh:
    """The same crop as crop_mesh for a box [lo, hi] that need not be a cube around a point (a source's bounded
    mesh: the union of its samples' boxes); cropping the result again with a smaller box gives what cropping
    the whole mesh with it gives."""
    v = np.asarray(mesh.vertices, dtype=np.float64).reshape(-1, 3)
    lo, hi = np.asarray(lo_nm, dtype=np.float64).reshape(3), np.asarray(hi_nm, dtype=np.float64).reshape(3)
    return _keep(mesh, ((v >= lo) & (v <= hi)).all(axis=1))


def _keep(mesh: trimesh.Trimesh, inside: np.ndarray) -> trimesh.Trimesh:
    """The faces with a vertex `inside`, minus degenerate ones, vertices kept in their order and re-indexed."""
    v = np.asarray(mesh.vertices, dtype=np.float64).reshape(-1, 3)
    f = np.asarray(mesh.faces, dtype=np.int64).reshape(-1, 3)
    if len(f) == 0:
        return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), process=False)
    f = f[inside[f[:, 0]] | inside[f[:, 1]] | inside[f[:, 2]]]
    p0 = v[f[:, 0]]
    e1, e2 = v[f[:, 1]] - p0, v[f[:, 2]] - p0
    cx = e1[:, 1] * e2[:, 2] - e1[:, 2] * e2[:, 1]
    cy = e1[:, 2] * e2[:, 0] - e1[:, 0] * e2[:, 2]
    cz = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    f = f[(cx != 0) | (cy != 0) | (cz != 0)]  # zero area <=> zero cross product
    # keep the referenced vertices in their original order (what np.unique's sorted ids give), re-indexed
    used = np.zeros(len(v), dtype=bool)
    used[f.reshape(-1)] = True
    new_id = np.cumsum(used) - 1
    return trimesh.Trimesh(v[used], new_id[f], process=False)


def _camera_normals(cam: OrthoCamera, normals: np.ndarray) -> np.ndarray:
    """World face normals (F, 3) -> unit camera-space normals facing the camera, float32 (F, 3)."""
    n_cam = normals @ cam.basis().T
    n_cam[n_cam[:, 2] < 0] *= -1.0  # face the camera
    norm = np.linalg.norm(n_cam, axis=1, keepdims=True)
    return np.divide(n_cam, norm, out=np.zeros_like(n_cam), where=norm > 0).astype(np.float32)


def _view_channels(cam: OrthoCamera, hits: SparseHits, dual: bool, out: np.ndarray) -> None:
    """Fill `out` (N_CHANNELS, res * res), zero on entry, at the hit pixels only (everything else is background).
    Values are computed in float64 and rounded to float32 before they are cast to out's dtype (the same values as
    a float32 render cast to float16). Normals are computed (and cast) per face, then looked up per pixel."""
    pix = hits.pixels
    if len(pix) == 0:
        return
    out[0, pix] = 1.0
    d = hits.depth
    lo, hi = d.min(), d.max()
    if hi > lo:
        out[1, pix] = ((d - lo) / (hi - lo)).astype(np.float32)
    n_face = np.ascontiguousarray(_camera_normals(cam, hits.normals).T).astype(out.dtype)  # (3, F)
    out[2:5, pix] = np.take(n_face, hits.prim, axis=1)
    if dual:
        out[5, pix] = hits.mesh == 0
        out[6, pix] = hits.mesh == 1
    else:
        out[5, pix] = 1.0


def render_geometry(meshes: list[trimesh.Trimesh], center_nm, extent_nm: float, resolution: int = 224) -> np.ndarray:
    """Render 1 (single) or 2 (dual: A, B) meshes -> (3, 7, res, res) float16 over views front, side, top."""
    if len(meshes) not in (1, 2):
        raise ValueError(f"render_geometry takes 1 or 2 meshes, got {len(meshes)}")
    cams = view_cameras(center_nm, extent_nm, resolution)
    hits = cast_sparse(meshes, cams)
    arr = np.zeros((len(cams), N_CHANNELS, resolution * resolution), dtype=np.float16)
    for i, (c, h) in enumerate(zip(cams, hits, strict=True)):
        _view_channels(c, h, len(meshes) == 2, arr[i])
    if not any(len(h.pixels) for h in hits):
        faces = [len(m.faces) for m in meshes]
        raise SampleError("empty_render", f"nothing visible in any view (faces per mesh {faces}, extent {extent_nm})")
    return arr.reshape(len(cams), N_CHANNELS, resolution, resolution)
