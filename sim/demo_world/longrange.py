"""Long-range neurons: a few demo neurons whose axon leaves its site and runs far across the volume.

Why: a sample's fetch box (pipeline.stages.fetch_sample.crop_box_half_nm) is ~7 um wide, and every other demo neuron
fits in its 4 um site, so a bounded mesh fetch would save nothing on them. Real neurons (a MICrONS
pyramidal cell, a fly projection neuron) reach far beyond any sample's box: these axons, >= 80 um
long with a few side twigs (branch points, hence junction samples far from the site), make the
demo show what fetching whole meshes costs.

The axon is grown in the site's plan (its nodes become supervoxel pieces like any other edge), so the
edit history, tables and skeletons carry it unchanged. Its voxels inside the site are written by the
site's job; those outside every site box are rasterized here, chunk by chunk, and meshed here, and
each root that contains the axon gets that outside mesh appended to its site mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zmesh

from core.hashing import rng_for
from sim.demo_world.em import em_image
from sim.demo_world.geometry import Tree, rasterize

AXON_LENGTH_NM = (85_000.0, 100_000.0)  # reach >= 10 x the demo fetch box (2 x 3439 nm)
AXON_STEP_NM = 400.0
AXON_RADIUS_NM = (130.0, 170.0)
TWIG_STEP_NM = 300.0
CLEARANCE_NM = 1_500.0  # from other sites' boxes
EDGE_MARGIN_NM = 3_000.0  # from the volume's faces (the corner chunks stay empty)
SITES_PER_LONG_NEURON = 12


@dataclass(frozen=True)
class AxonSpec:
    """Where a long axon may go: global nm boxes of the other sites, the volume, this site's corner."""

    neuron: int
    site_lo_nm: np.ndarray
    site_hi_nm: np.ndarray
    avoid_nm: tuple[tuple[np.ndarray, np.ndarray], ...]
    volume_lo_nm: np.ndarray
    volume_hi_nm: np.ndarray


def long_neuron_sites(n_sites: int, seed: int) -> list[int]:
    """Sites that get a long neuron: about one in SITES_PER_LONG_NEURON, at least one, never site 0 when
    there are others (its first proofread neuron is the world's first row, which tests read as a
    typical, compact neuron)."""
    n = max(1, round(n_sites / SITES_PER_LONG_NEURON))
    pool = list(range(1, n_sites)) if n_sites > 1 else [0]
    order = rng_for("demo_world", seed, "long_sites").permutation(len(pool))
    return sorted(pool[int(i)] for i in order[:n])


def _box_distance(points: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Distance of each point to the axis-aligned box [lo, hi] (0 inside)."""
    d = np.maximum(np.maximum(lo - points, 0.0), points - hi)
    return np.linalg.norm(d, axis=-1)


def _path_ok(points: np.ndarray, spec: AxonSpec) -> bool:
    inside = (points >= spec.volume_lo_nm + EDGE_MARGIN_NM) & (points <= spec.volume_hi_nm - EDGE_MARGIN_NM)
    if not inside.all():
        return False
    return all((_box_distance(points, lo, hi) > CLEARANCE_NM).all() for lo, hi in spec.avoid_nm)


def unit(v: np.ndarray) -> np.ndarray:
    """v scaled to length 1 (a zero vector stays zero)."""
    return v / max(float(np.linalg.norm(v)), 1e-9)


def grow_axon(rng: np.random.Generator, tree: Tree, n_orig: int, start_nm: np.ndarray, spec: AxonSpec) -> list[int]:
    """Add a long axon (and side twigs) to `tree` from one of its original tips; returns the new nodes.

    `tree` is in site-local nm; `start_nm` is the site's lower corner in global nm. Tries seeded
    directions until the whole path keeps clear of other sites and of the volume's faces.
    """
    pos = tree.positions()
    deg = tree.degree()
    tips = [i for i in range(n_orig) if deg[i] == 1]
    centre = (spec.site_hi_nm - spec.site_lo_nm) / 2.0
    radius = float(rng.uniform(*AXON_RADIUS_NM))
    length = float(rng.uniform(*AXON_LENGTH_NM))
    n_steps = int(np.ceil(length / AXON_STEP_NM))
    for _attempt in range(256):
        d = unit(rng.normal(size=3) * np.array([1.0, 1.0, 0.6]))
        tip = max(tips, key=lambda i: (float(np.dot(pos[i] - centre, d)), -i))
        heading, p, path = d.copy(), pos[tip].copy(), []
        for _ in range(n_steps):
            heading = unit(heading + 0.08 * rng.normal(size=3) + 0.05 * d)
            p = p + AXON_STEP_NM * heading
            path.append(p.copy())
        path_arr = np.array(path)
        outside = _box_distance(path_arr + start_nm, spec.site_lo_nm, spec.site_hi_nm) > 2_000.0
        # after it first leaves its site, the axon never comes back
        first_out = int(np.argmax(outside)) if outside.any() else len(path)
        if first_out == len(path) or not outside[first_out:].all():
            continue
        far = path_arr[first_out:] + start_nm
        if not _path_ok(far, spec):
            continue
        twigs = _twigs(rng, path_arr, first_out, start_nm, spec)
        if twigs is None:
            continue
        new_nodes, prev = [], tip
        for q in path:
            prev = tree.add(q, prev, radius)
            new_nodes.append(prev)
        for at, points, r in twigs:
            prev = new_nodes[at]
            for q in points:
                prev = tree.add(q, prev, r)
                new_nodes.append(prev)
        return new_nodes
    raise RuntimeError("no room for a long axon from this site")  # pragma: no cover - volume is large


def _twigs(
    rng: np.random.Generator, path: np.ndarray, first_out: int, start_nm: np.ndarray, spec: AxonSpec
) -> list[tuple[int, list[np.ndarray], float]] | None:
    """3-5 short side branches at spread-out axon nodes outside the site: each makes a branch point."""
    n = int(rng.integers(3, 6))
    usable = np.arange(first_out + 5, len(path) - 5)
    at = sorted(int(x) for x in np.linspace(usable[0], usable[-1], n + 2)[1:-1].round())
    out = []
    for i in at:
        axis = unit(path[i + 1] - path[i - 1])
        side = rng.normal(size=3)
        side = unit(side - axis * float(np.dot(side, axis)))
        r = float(rng.uniform(100.0, 120.0))
        points, q = [], path[i].copy()
        for _ in range(int(rng.integers(4, 7))):
            side = unit(side + 0.2 * rng.normal(size=3))
            q = q + TWIG_STEP_NM * side
            points.append(q.copy())
        if not _path_ok(np.array(points) + start_nm, spec):
            return None
        out.append((i, points, r))
    return out


@dataclass
class OutsidePart:
    """A long neuron's voxels outside every site: its supervoxels and its mesh there (global nm)."""

    site: int
    neuron: int
    labels: frozenset[int]  # site-local labels of the axon's pieces
    vertices: np.ndarray
    faces: np.ndarray
    chunks: int


def chunks_outside_sites(
    capsules_nm: list[tuple[np.ndarray, np.ndarray, float, float, int]],
    res: np.ndarray,
    chunk: np.ndarray,
    voxel_offset: np.ndarray,
    site_boxes_vx: list[tuple[np.ndarray, np.ndarray]],
) -> list[tuple[int, int, int]]:
    """Chunk indices (global chunk grid from voxel_offset) a capsule may touch, minus those inside a site."""
    found: set[tuple[int, int, int]] = set()
    for a, b, ra, rb, _label in capsules_nm:
        r = max(ra, rb) + float(res.max())
        lo = np.floor((np.minimum(a, b) - r) / res).astype(np.int64)
        hi = np.ceil((np.maximum(a, b) + r) / res).astype(np.int64)
        c_lo = (lo - voxel_offset) // chunk
        c_hi = (hi - voxel_offset) // chunk
        for c in np.ndindex(*(c_hi - c_lo + 1)):
            found.add(tuple(int(x) for x in c_lo + np.array(c)))
    if not found:
        return []
    ordered = sorted(found)
    origins = voxel_offset + np.array(ordered, dtype=np.int64) * chunk  # (chunks, 3)
    los = np.array([lo for lo, _ in site_boxes_vx]).reshape(-1, 3)  # (sites, 3)
    his = np.array([hi for _, hi in site_boxes_vx]).reshape(-1, 3)
    inside = ((origins[:, None, :] >= los[None]) & (origins[:, None, :] < his[None])).all(axis=2).any(axis=1)
    return [c for c, skip in zip(ordered, inside, strict=True) if not skip]


def rasterize_outside(
    seed: int,
    capsules_nm: list[tuple[np.ndarray, np.ndarray, float, float, int]],
    sv_of: np.ndarray,
    chunk_index: tuple[int, int, int],
    res: np.ndarray,
    chunk: np.ndarray,
    voxel_offset: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(origin_vx, supervoxel ids, EM) of one chunk: the capsules (global nm, label = index into sv_of)."""
    origin = voxel_offset + np.array(chunk_index) * chunk
    shift = origin * res
    local = [(a - shift, b - shift, ra, rb, label) for a, b, ra, rb, label in capsules_nm]
    labels = rasterize(tuple(int(x) for x in chunk), res, local)
    svs = sv_of[labels]
    em = em_image(rng_for("demo_world", seed, "em_outside", *chunk_index), labels, res)
    return origin, svs, em


@dataclass
class OutsideChunkJob:
    """One chunk outside every site: the capsules that may touch it (global nm, label = index into sv_of)."""

    seed: int
    world_tmp: str
    chunk: tuple[int, int, int]
    capsules: list[tuple[np.ndarray, np.ndarray, float, float, int]]
    sv_of: np.ndarray
    site_svs: dict[int, np.ndarray]  # site -> its long neuron's supervoxels


def capsule_boxes(capsules: list, res: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every capsule's box (radius + a voxel), global nm: (lows, highs), one row per capsule. Computed once for a
    world: `capsules_near` then costs one vectorized test per chunk (a loop over capsules per chunk made a world of
    870 sites take most of an hour)."""
    if not capsules:
        return np.zeros((0, 3)), np.zeros((0, 3))
    a = np.array([c[0] for c in capsules], dtype=np.float64)
    b = np.array([c[1] for c in capsules], dtype=np.float64)
    r = np.array([max(c[2], c[3]) + float(res.max()) for c in capsules], dtype=np.float64)[:, None]
    return np.minimum(a, b) - r, np.maximum(a, b) + r


def capsules_near(capsules: list, chunk: tuple[int, int, int], res: np.ndarray, chunk_vx: np.ndarray,
                  voxel_offset: np.ndarray, boxes: tuple[np.ndarray, np.ndarray] | None = None) -> list:  # fmt: skip
    """The capsules whose box (radius + a voxel) meets the chunk, in their order (`boxes`: capsule_boxes')."""
    lo = (voxel_offset + np.asarray(chunk) * chunk_vx) * res
    hi = lo + chunk_vx * res
    lows, highs = capsule_boxes(capsules, res) if boxes is None else boxes
    meets = (lows < hi).all(axis=1) & (highs > lo).all(axis=1)
    return [capsules[i] for i in np.flatnonzero(meets)]


def run_outside_chunk(job: OutsideChunkJob) -> dict:
    """Rasterize, write (EM + supervoxels) and mesh one chunk; runs in a worker, returns small results."""
    from cloudvolume import CloudVolume

    from pipeline.sources.demo_volume import CHUNK, RES, VOXEL_OFFSET

    origin, svs, em = rasterize_outside(job.seed, job.capsules, job.sv_of, job.chunk, RES, CHUNK, VOXEL_OFFSET)
    if not svs.any():
        return {"chunk": job.chunk, "foreground": 0, "pieces": {}}
    box = tuple(slice(int(origin[a]), int(origin[a] + CHUNK[a])) for a in range(3))
    CloudVolume(f"file://{job.world_tmp}/em", progress=False, compress="gzip")[box] = em
    CloudVolume(f"file://{job.world_tmp}/segmentation", progress=False, compress="gzip")[box] = svs
    pieces = {}
    for site, wanted in job.site_svs.items():
        mask = np.isin(svs, wanted)
        if mask.any():
            pieces[site] = mesh_mask(mask, origin, RES)
    return {"chunk": job.chunk, "foreground": int(np.count_nonzero(svs)), "pieces": pieces}


def mesh_mask(mask: np.ndarray, origin_vx: np.ndarray, res: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The closed surface of a chunk's mask, in global nm (as the site meshes: voxel-centred, simplified)."""
    mesher = zmesh.Mesher(tuple(float(x) for x in res))
    mesher.mesh(mask.astype(np.uint32), close=True)
    if 1 not in mesher.ids():
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint32)
    m = mesher.get(1, normals=False, reduction_factor=8, max_error=40, voxel_centered=True)
    mesher.clear()
    return (m.vertices + origin_vx * res).astype(np.float32), m.faces.astype(np.uint32)
