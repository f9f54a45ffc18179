"""Voxel work for one site: rasterize, place edit points on voxels, EM, write chunks and meshes.

Runs in a worker process; everything it returns is small. Every draw is seeded by the site, so the
result does not depend on which process ran it or in what order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import zmesh
from cloudvolume import CloudVolume, Mesh
from scipy import ndimage

from core.adjacency import adjacent_roots
from core.hashing import rng_for
from core.samples import ADJACENT_CUTOUT_NM
from pipeline.sources.base import cutout_box
from pipeline.sources.demo_volume import RES
from sim.demo_world.blueprint import SITE_VX, SiteBlueprint
from sim.demo_world.em import em_image
from sim.demo_world.geometry import face_contacts, rasterize
from sim.demo_world.history import supervoxel_ids

MAX_SYNAPSES_PER_SITE = 10


@dataclass
class SiteJob:
    plan: SiteBlueprint
    seed: int
    world_tmp: str
    roots: list[tuple[int, frozenset[int]]]  # every root of this site that gets a mesh
    merge_luts: dict[int, tuple[np.ndarray, list[int]]]  # plan op index -> (labels->roots at T-1, before roots)
    # a long axon's mesh outside every site (global nm), appended to the mesh of each root holding its labels
    outside: list[tuple[frozenset[int], np.ndarray, np.ndarray]] = field(default_factory=list)


def locate(labels: np.ndarray, p_nm: np.ndarray, allowed: frozenset[int], window: int = 6) -> tuple[np.ndarray, int]:
    """A voxel labelled with one of `allowed` nearest to p_nm: (voxel, 0 exact / 1 moved / 2 not found)."""
    shape = np.array(labels.shape)
    v = np.clip(np.floor(p_nm / RES).astype(np.int64), 0, shape - 1)
    if int(labels[tuple(v)]) in allowed:
        return v, 0
    lo = np.maximum(v - window, 0)
    hi = np.minimum(v + window + 1, shape)
    sub = labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    wanted = np.fromiter(allowed, dtype=np.int64)
    idx = np.argwhere(np.isin(sub, wanted)) + lo
    if len(idx) == 0:  # overwritten by a crossing neuron: the nearest such voxel anywhere in the site
        idx = np.argwhere(np.isin(labels, wanted))
        if len(idx) == 0:
            return v, 2
    d = np.linalg.norm((idx + 0.5) * RES - p_nm, axis=1)
    return idx[int(np.argmin(d))], 1


def _nt_scores(rng: np.random.Generator, seed: int, site: int, neuron: int) -> list[float]:
    """Fly-style transmitter scores (gaba, ach, glut, oct, ser, da): one dominant per presynaptic neuron."""
    dominant = int(rng_for("demo_world", seed, "nt", site, neuron).integers(0, 6))
    alpha = np.full(6, 0.4)
    alpha[dominant] = 6.0
    return rng.dirichlet(alpha).round(4).tolist()


def run_site(job: SiteJob) -> dict:
    """Rasterize the site, place its edit points on voxels, find the roots adjacent to each merge, write its EM
    and segmentation chunks and its roots' meshes, draw its synapses and a point on each neuron."""
    plan = job.plan
    labels = _rasterize(plan)
    start_vx = plan.start_vx.astype(np.int64)
    points, status = _edit_points(plan, labels, start_vx)
    adjacent = _adjacent_at_merges(job.merge_luts, points, labels, start_vx)
    _write_chunks(job, labels, start_vx)
    meshes = _root_meshes(job, labels, start_vx)
    if meshes:
        _segmentation(job.world_tmp).mesh.put(meshes, compress="gzip", skip_delete=True)
    return {
        "site": plan.index,
        "points": points,
        "point_status": status,
        "adjacent": adjacent,
        "synapses": _synapses(plan, labels, start_vx, job.seed),
        "anchors": _anchors(plan, labels, start_vx),
        "foreground_voxels": int(np.count_nonzero(labels)),
    }


def _rasterize(plan: SiteBlueprint) -> np.ndarray:
    """The site's label volume (site-local labels, 0 outside every neuron): each tree edge a capsule."""
    capsules = []
    for k, t in enumerate(plan.trees):
        pos = t.positions()
        for c, p in enumerate(t.parent):
            if p >= 0:
                capsules.append((pos[p], pos[c], t.radius[p], t.radius[c], int(plan.edge_label[k][c])))
    return rasterize(tuple(int(x) for x in SITE_VX), RES, capsules)


def _edit_points(plan: SiteBlueprint, labels: np.ndarray, start_vx: np.ndarray) -> tuple[list, list[int]]:
    """Each op's (source, sink) on voxels of the right side (global voxels), and how many points were found
    exactly where planned / moved / not found."""
    points, status = [], [0, 0, 0]
    for op in plan.ops:
        src, s1 = locate(labels, op.src_nm, op.src_labels)
        snk, s2 = locate(labels, op.snk_nm, op.snk_labels)
        status[s1] += 1
        status[s2] += 1
        points.append(((src + start_vx).tolist(), (snk + start_vx).tolist()))
    return points, status


def _adjacent_at_merges(
    merge_luts: dict[int, tuple[np.ndarray, list[int]]], points: list, labels: np.ndarray, start_vx: np.ndarray
) -> dict[int, list[int]]:
    """The roots adjacent to each merge's before roots at T-1, in the pipeline's 500 nm cutout around its
    points: what the pipeline's adjacent controls can draw."""
    shape = labels.shape
    adjacent = {}
    for k, (lut, before) in merge_luts.items():
        src, snk = (np.array(p) - start_vx for p in points[k])
        lo, hi = cutout_box((src + snk) / 2.0 * RES, ADJACENT_CUTOUT_NM, RES)
        lo_c, hi_c = np.maximum(lo, 0), np.minimum(hi, np.array(shape))
        crop = labels[lo_c[0] : hi_c[0], lo_c[1] : hi_c[1], lo_c[2] : hi_c[2]]
        found = adjacent_roots(lut[crop], sorted(before), exclude=set(before))
        adjacent[k] = sorted({adj for _base, adj, _contact in found})
    return adjacent


def _segmentation(world_tmp: str) -> CloudVolume:
    return CloudVolume(f"file://{world_tmp}/segmentation", progress=False, compress="gzip")


def _write_chunks(job: SiteJob, labels: np.ndarray, start_vx: np.ndarray) -> None:
    """The site's EM (seeded by the site) and supervoxel chunks."""
    plan = job.plan
    sv_lut = supervoxel_ids(plan.index, plan.n_labels)
    em = em_image(rng_for("demo_world", job.seed, "em", plan.index), labels, RES)
    box = tuple(slice(int(start_vx[a]), int(start_vx[a] + labels.shape[a])) for a in range(3))
    CloudVolume(f"file://{job.world_tmp}/em", progress=False, compress="gzip")[box] = em
    _segmentation(job.world_tmp)[box] = sv_lut[labels]


def _root_meshes(job: SiteJob, labels: np.ndarray, start_vx: np.ndarray) -> list[Mesh]:
    """A mesh of every root of the site in nm world coordinates (the long axon's outside parts appended to
    each root holding all their labels)."""
    plan = job.plan
    shape = np.array(labels.shape)
    objects = ndimage.find_objects(labels.astype(np.int64), max_label=plan.n_labels)
    meshes = []
    for rid, members in job.roots:
        sls = [objects[m - 1] for m in sorted(members) if objects[m - 1] is not None]
        lo = np.maximum(np.min([[s.start for s in sl] for sl in sls], axis=0) - 1, 0)
        hi = np.minimum(np.max([[s.stop for s in sl] for sl in sls], axis=0) + 1, shape)
        lut = np.zeros(plan.n_labels + 1, dtype=np.uint32)
        lut[sorted(members)] = 1
        mask = lut[labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]]
        mesher = zmesh.Mesher(tuple(RES))
        mesher.mesh(mask, close=True)
        m = mesher.get(1, normals=False, reduction_factor=8, max_error=40, voxel_centered=True)
        mesher.clear()
        vertices = (m.vertices + (start_vx + lo) * RES).astype(np.float32)
        faces = m.faces.astype(np.uint32)
        for labels_out, v_out, f_out in job.outside:
            if labels_out <= members:
                faces = np.concatenate([faces, f_out + np.uint32(len(vertices))])
                vertices = np.concatenate([vertices, v_out])
        meshes.append(Mesh(vertices, faces, segid=rid))
    return meshes


def _neuron_contacts(plan: SiteBlueprint, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """Face-adjacent voxel pairs on two different neurons: (first, second voxels, their labels, and a code per
    pair that names the unordered pair of neurons)."""
    first, second = face_contacts(labels)
    la = labels[tuple(first.T)].astype(np.int64)
    lb = labels[tuple(second.T)].astype(np.int64)
    na, nb = plan.label_neuron[la], plan.label_neuron[lb]
    keep = na != nb
    first, second, la, lb, na, nb = first[keep], second[keep], la[keep], lb[keep], na[keep], nb[keep]
    n = len(plan.trees)
    codes = np.minimum(na, nb) * n + np.maximum(na, nb)
    return first, second, la, lb, codes


def _synapses(plan: SiteBlueprint, labels: np.ndarray, start_vx: np.ndarray, seed: int) -> list[dict]:
    """Synapse candidates at contacts between different neurons (pairs with at least 4 contacts, one or two
    each, in a seeded order, at most MAX_SYNAPSES_PER_SITE), each with a seeded direction and scores."""
    rng = rng_for("demo_world", seed, "synapses", plan.index)
    first, second, la, lb, codes = _neuron_contacts(plan, labels)
    synapses = []
    pair_codes, counts = np.unique(codes, return_counts=True)
    for code in rng.permutation(pair_codes[counts >= 4]):
        rows = np.flatnonzero(codes == code)
        for r in rng.choice(rows, size=min(len(rows), 1 + int(rng.random() < 0.6)), replace=False):
            if len(synapses) >= MAX_SYNAPSES_PER_SITE:
                break
            flip = rng.random() < 0.5
            pre, post = (second[r], first[r]) if flip else (first[r], second[r])
            lpre, lpost = (lb[r], la[r]) if flip else (la[r], lb[r])
            synapses.append(
                {
                    "pre_label": int(lpre),
                    "post_label": int(lpost),
                    "pre_neuron": int(plan.label_neuron[lpre]),
                    "post_neuron": int(plan.label_neuron[lpost]),
                    "pre_vx": (pre + start_vx).tolist(),
                    "post_vx": (post + start_vx).tolist(),
                    "cleft_score": float(rng.integers(40, 260)),
                    "connection_score": float(np.round(rng.gamma(2.0, 30.0), 3)),
                    "nt": _nt_scores(rng, seed, plan.index, int(plan.label_neuron[lpre])),
                }
            )
    return synapses


def _anchors(plan: SiteBlueprint, labels: np.ndarray, start_vx: np.ndarray) -> list[list[int]]:
    """A voxel on each neuron, near its tree root (global voxels): the proofread table's point."""
    anchors = []
    for k, t in enumerate(plan.trees):
        v, st = locate(labels, t.pos[0], plan.neuron_labels(k), window=10)
        if st == 2:
            hits = np.argwhere(np.isin(labels, np.fromiter(plan.neuron_labels(k), dtype=np.int64)))
            v = hits[0]
        anchors.append((v + start_vx).tolist())
    return anchors
