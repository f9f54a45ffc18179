"""write_small_world: a demo world of a few neurons placed by hand, written in a fraction of a second, for the tests.

The generated demo world (sim/demo_world) plans sites, simulates a history and rasterizes tens of neurons: ~20 s
even at its tiny size. This one has the same layout (`file://` precomputed EM and supervoxel layers with legacy
meshes, the five CAVE-shaped tables, world.json in the demo world's format), so the demo source reads it, the twin
serves it and fetch and render work on it; every neuron, edit and synapse is placed here, as igneous' tests make
their layers with CloudVolume.from_numpy. The region is one 192 x 192 x 40 voxel block (3 x 3 x 1 chunks, the
level-2 chunks too) of the demo volume, one chunk below its top, in resin (the demo world's extracellular grey) on
every side; neurons are tubes (their voxels and their meshes drawn from the same capsules):

  A  proofread, the long neuron: a trunk along x with two branches crossing into other chunks (junctions) and an
     axon that leaves the region along +x for 100 um (mesh and skeleton only); A1 and A2 merged at op 1.
  B  proofread: a trunk with two branches (a junction); B1 and B2 merged at op 2 (its row written twice: a
     defect), the falsely merged piece D split off at op 3, after materialization version 2.
  C  a bystander touching A's trunk at op 1's point (the merge's adjacent control); not proofread.
  E  proofread: a straight tube; E1 and E2 merged at op 4, which has no points (a defect); then the piece Y merged
     at op 5 and split off again at op 6 (the server's filtered change log drops op 5).
  F  a bystander touching B at op 2's point, without a mesh (a defect: that adjacent control fails).
  G  proofread, above the others: leaves a level-2 chunk and comes back (two components in one chunk), then passes
     a chunk corner (a contact across it closes a cycle in its level-2 graph).
  P0-P9  proofread neurons without edits, below the others: enough roots for the change-log and row-cap bounds.

Synapses: A -> B and B -> A where their branches meet, A -> E, A -> C, B -> B (the same neuron), A -> P7 and
P6 -> B where a quiet neuron passes under them, and one whose pre root is null (a defect). Times follow the demo
world (sim/demo_world/history.py): roots from WORLD_START, edits between OPS_START and AS_OF, so the twin's
versions (1 expired, 2 between op 5 and op 3, 3 at AS_OF) apply. Nothing is drawn at random but the EM's noise and
the synapses' scores, from a fixed seed: the same bytes every time.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from cloudfiles import CloudFiles
from cloudvolume import CloudVolume, Mesh

from core.atomic import write_json, write_parquet
from core.release_schema import SPLIT_CUBE_NM
from core.samples import NEUROTRANSMITTERS
from pipeline.sources.demo_volume import CHUNK, RES, VOLUME_SIZE, VOXEL_OFFSET
from sim.demo_world.geometry import rasterize
from sim.demo_world.history import AS_OF, OPS_START, ROOT_BASE, SV_BASE, WORLD_START
from sim.demo_world.tables import (
    OPERATIONS_SCHEMA,
    PROOFREAD_SCHEMA,
    SKELETONS_SCHEMA,
    SYNAPSES_SCHEMA,
    TABLES,
)
from sim.demo_world.world import FORMAT, RESIN_EM, create_layers, resin_chunks, write_resin

# the region's first chunk (chunk indices of the demo volume): one below the volume's top, so that resin reaches the
# top face (a read there meets the volume's bounds: zero padding, not absent chunks)
REGION_CHUNK = np.array([4, 4, 98])
REGION_VX = np.array([192, 192, 40])  # 3 x 3 x 1 chunks (level-2 chunks too: a branch crossing one is a junction)
REGION_START = VOXEL_OFFSET + REGION_CHUNK * CHUNK
DAY = 86400
AXON_UM = 100.0
AXON_RADIUS_NM = 400.0  # thick enough that Draco's 17 nm steps change its area by well under 1%

RADIUS_NM = 200.0
PIECE_VX = 24  # a supervoxel: at most ~770 nm of a tube
GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0
Z_MID = int(REGION_VX[2] // 2)

# supervoxel labels (site 0's ids: SV_BASE + label) and the tubes that draw them: (from, to) in region voxels (x, y)
A1, A2, A3, B1, B2, B3, X1, C1, E1, E2, Y1, F1, G1 = range(1, 14)
TUBES: dict[int, list[tuple[tuple[int, int], tuple[int, int]]]] = {
    A1: [((8, 96), (64, 96))],
    A2: [((64, 96), (184, 96)), ((160, 96), (160, 20))],
    A3: [((96, 96), (96, 170))],
    B1: [((8, 30), (70, 30)), ((40, 30), (40, 80))],
    B2: [((70, 30), (140, 30))],
    B3: [((100, 30), (100, 80))],
    X1: [((120, 36), (120, 56))],
    C1: [((64, 102), (64, 120))],
    E1: [((108, 150), (146, 150))],
    E2: [((146, 150), (184, 150))],
    Y1: [((170, 158), (170, 182))],
    F1: [((70, 36), (70, 50))],
}
# G, above the others (z = HIGH_Z): a neurite that leaves level-2 chunk (0, 0) and comes back (two components in one
# chunk), then passes a chunk corner (a contact across it closes a cycle in its level-2 graph)
HIGH_Z = 33
G_PATH = [(10, 50), (20, 50), (20, 72), (34, 72), (34, 50), (56, 60), (66, 62), (66, 120)]
TUBES[G1] = list(zip(G_PATH[:-1], G_PATH[1:], strict=True))
# proofread neurons without edits, below the others (z = LOW_Z): straight tubes along y, P_LABELS[k] the k-th
N_QUIET = 10
LOW_Z = 6
P_LABELS = tuple(range(G1 + 1, G1 + 1 + N_QUIET))
TUBES.update({label: [((14 + 18 * k, 10), (14 + 18 * k, 182))] for k, label in enumerate(P_LABELS)})
DEPTH = {G1: HIGH_Z, **dict.fromkeys(P_LABELS, LOW_Z)}  # a label's z in region voxels (the others: mid-depth)
NEURON = {A1: 0, A2: 0, A3: 0, B1: 1, B2: 1, B3: 1, X1: 2, C1: 3, E1: 4, E2: 4, Y1: 5, F1: 6, G1: 7}
NEURON.update({label: 8 + k for k, label in enumerate(P_LABELS)})
# the skeletons of the proofread neurons: trunk, branches (each starting on the trunk), depth
TREES = {
    "A": ([(8, 96), (184, 96)], [[(96, 96), (96, 170)], [(160, 96), (160, 20)]], Z_MID),
    "B": ([(8, 30), (140, 30)], [[(40, 30), (40, 80)], [(100, 30), (100, 80)]], Z_MID),
    "E": ([(108, 150), (184, 150)], [], Z_MID),
    "G": (G_PATH, [], HIGH_Z),
    **{f"P{k}": (list(TUBES[label][0]), [], LOW_Z) for k, label in enumerate(P_LABELS)},
}


@dataclass(frozen=True)
class SmallRoot:
    name: str
    labels: tuple[int, ...]
    created: int
    expired: int | None


T1, T2, T4, T5 = (OPS_START + d * DAY for d in (20, 50, 80, 110))
T3, T6 = AS_OF - 90 * DAY, AS_OF - 60 * DAY  # after version 2 (halfway between OPS_START and AS_OF)
ROOTS = [
    SmallRoot("A1", (A1,), WORLD_START, T1),
    SmallRoot("A2", (A2, A3), WORLD_START, T1),
    SmallRoot("A", (A1, A2, A3), T1, None),
    SmallRoot("B1", (B1,), WORLD_START, T2),
    SmallRoot("B2", (B2, B3, X1), WORLD_START, T2),
    SmallRoot("B12", (B1, B2, B3, X1), T2, T3),
    SmallRoot("B", (B1, B2, B3), T3, None),
    SmallRoot("D", (X1,), T3, None),
    SmallRoot("C", (C1,), WORLD_START, None),
    SmallRoot("E1", (E1,), WORLD_START, T4),
    SmallRoot("E2", (E2,), WORLD_START, T4),
    SmallRoot("E12", (E1, E2), T4, T5),
    SmallRoot("Y0", (Y1,), WORLD_START, T5),
    SmallRoot("EY", (E1, E2, Y1), T5, T6),
    SmallRoot("E", (E1, E2), T6, None),
    SmallRoot("Y", (Y1,), T6, None),
    SmallRoot("F", (F1,), WORLD_START, None),
    SmallRoot("G", (G1,), WORLD_START, None),
    *(SmallRoot(f"P{k}", (label,), WORLD_START, None) for k, label in enumerate(P_LABELS)),
]
# 98: the salt under which the three proofread roots preflight checks (the first by pipeline.partitions.root_digest)
# are the edited neurons A, B and E (tests/sim/test_small_world.py holds it)
ROOT_ID = {r.name: ROOT_BASE + (i + 1) * (1 << 24) + 98 for i, r in enumerate(ROOTS)}
NO_MESH = ("F",)
LONG = "A"  # the long neuron; its axon belongs to A2's labels
PROOFREAD = ("A", "B", "E", "G", *(f"P{k}" for k in range(N_QUIET)))
ANCHORS = {"A": (A1, (20, 96)), "B": (B1, (20, 30)), "E": (E2, (176, 150)), "G": (G1, G_PATH[0])}
ANCHORS.update({f"P{k}": (label, TUBES[label][0][0]) for k, label in enumerate(P_LABELS)})
# (op id, time, merge?, before, after, source (label, region voxel xy), sink (label, region voxel xy))
OPS = [
    (584_001, T1, True, ("A1", "A2"), ("A",), (A1, (62, 96)), (A2, (66, 96))),
    (584_002, T2, True, ("B1", "B2"), ("B12",), (B1, (68, 30)), (B2, (72, 30))),
    (584_003, T3, False, ("B12",), ("B", "D"), (B2, (120, 30)), (X1, (120, 46))),
    (584_004, T4, True, ("E1", "E2"), ("E12",), None, None),  # no points
    # a false merge and its undoing: the server's filtered change log of E drops the merge (its supervoxels are no
    # longer all in E)
    (584_005, T5, True, ("E12", "Y0"), ("EY",), (E2, (170, 150)), (Y1, (170, 160))),
    (584_006, T6, False, ("EY",), ("E", "Y"), (E2, (170, 150)), (Y1, (170, 160))),
]
DUPLICATED_OPS = (584_002,)
# (id, pre label, pre near (x, y), post label, post near (x, y), the pre root left null in the table)
SYNAPSES = [
    (1_000_001, B3, (100, 80), A2, (100, 96), False),
    (1_000_002, A1, (40, 96), B1, (40, 80), False),
    (1_000_003, A2, (104, 96), B3, (100, 82), False),
    (1_000_004, A3, (96, 150), E1, (108, 150), False),
    (1_000_005, A1, (64, 96), C1, (64, 106), False),
    (1_000_006, B1, (60, 30), B2, (76, 30), False),
    (1_000_007, E2, (150, 150), A3, (96, 150), True),
    # where a quiet neuron passes under A and B
    (1_000_008, A2, (140, 96), P_LABELS[7], (140, 96), False),
    (1_000_009, P_LABELS[6], (122, 30), B2, (122, 30), False),
]


def write_small_world(world_dir: str | os.PathLike, seed: int = 0) -> dict:
    """Write the small world into world_dir (replacing it); returns its summary, also written to world.json."""
    world_dir = Path(world_dir)
    if world_dir.exists():
        shutil.rmtree(world_dir)
    world_dir.mkdir(parents=True)
    pieces, piece_label = _pieces()
    labels = piece_label[pieces]
    sv = np.where(pieces > 0, np.uint64(SV_BASE) + pieces.astype(np.uint64), np.uint64(0))
    create_layers(world_dir)
    box = tuple(slice(int(REGION_START[a]), int(REGION_START[a] + REGION_VX[a])) for a in range(3))
    CloudVolume(f"file://{world_dir}/em", progress=False, compress="gzip")[box] = _em(labels, seed)
    seg = CloudVolume(f"file://{world_dir}/segmentation", progress=False, compress="gzip")
    seg[box] = sv
    written = {tuple(int(c) for c in REGION_CHUNK + d) for d in np.ndindex(*(REGION_VX // CHUNK))}
    write_resin(world_dir, resin_chunks(written), num_threads=0)
    _put_meshes(world_dir, _meshes())
    tables = world_dir / "tables"
    write_parquet(tables / "roots.parquet", _roots_table(ROOTS, piece_label))
    write_parquet(tables / "operations.parquet", pa.Table.from_pylist(_op_rows(labels), schema=OPERATIONS_SCHEMA))
    write_parquet(
        tables / "proofread_neurons.parquet", pa.Table.from_pylist(_proofread(labels), schema=PROOFREAD_SCHEMA)
    )
    write_parquet(
        tables / "synapses.parquet", pa.Table.from_pylist(_synapses(labels, sv, seed), schema=SYNAPSES_SCHEMA)
    )
    write_parquet(tables / "skeletons.parquet", pa.Table.from_pylist(_skeletons(), schema=SKELETONS_SCHEMA))
    summary = _summary(labels)
    write_json(world_dir / "world.json", summary)
    return summary


# ------------------------------------------------------------------------------------------------ voxels
def _nm(xy: tuple[int, int], z: float = Z_MID) -> np.ndarray:
    """A region voxel's centre (x, y at mid-depth) in region nm."""
    return (np.array([xy[0], xy[1], z], dtype=np.float64) + 0.5) * RES


def _pieces() -> tuple[np.ndarray, np.ndarray]:
    """The region's supervoxels: each tube cut into pieces of at most PIECE_VX voxels along it, numbered from 1 in
    label order (the supervoxel id is SV_BASE + the piece); and the label of each piece (index 0: none)."""
    capsules, piece_label = [], [0]
    for label, tubes in TUBES.items():
        z = DEPTH.get(label, Z_MID)
        for a, b in tubes:
            n = max(1, int(np.ceil(np.hypot(b[0] - a[0], b[1] - a[1]) / PIECE_VX)))
            ends = [_nm((a[0] + (b[0] - a[0]) * i / n, a[1] + (b[1] - a[1]) * i / n), z) for i in range(n + 1)]
            for p, q in zip(ends[:-1], ends[1:], strict=True):
                capsules.append((p, q, RADIUS_NM, RADIUS_NM, len(piece_label)))
                piece_label.append(label)
    return rasterize(tuple(int(x) for x in REGION_VX), RES, capsules), np.asarray(piece_label, dtype=np.uint32)


def _em(labels: np.ndarray, seed: int) -> np.ndarray:
    """EM-like grey: cytoplasm 168, resin 112 (RESIN_EM: the resin chunks around match it), membranes 42, noise."""
    rng = np.random.default_rng(seed)
    img = np.where(labels != 0, 168.0, float(RESIN_EM))
    edge = np.zeros(labels.shape, dtype=bool)
    for axis in range(3):
        diff = np.diff(labels.astype(np.int64), axis=axis) != 0
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        edge[tuple(lo)] |= diff
        edge[tuple(hi)] |= diff
    img[edge] = 42.0
    img += rng.normal(0.0, 8.0, size=labels.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ meshes
def _tube(a: np.ndarray, b: np.ndarray, radius: float, step: float = 200.0, sides: int = 10) -> Mesh:
    """A closed tube from a to b (nm): a ring of `sides` vertices every ~`step` nm, each ring turned by a golden
    fraction of a side against the last (so Draco's grid moves its vertices in every direction: the area the twin
    serves stays within a percent of this one's), flat caps."""
    axis = b - a
    d = axis / np.linalg.norm(axis)
    u = np.cross(d, [0.0, 0.0, 1.0] if abs(d[2]) < 0.9 else [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(d, u)
    n_rings = max(2, int(np.ceil(np.linalg.norm(axis) / step)) + 1)
    ang = (
        np.linspace(0.0, 2 * np.pi, sides, endpoint=False)[None, :]
        + GOLDEN * 2 * np.pi / sides * np.arange(n_rings)[:, None]
    )
    ring = radius * (np.cos(ang)[..., None] * u + np.sin(ang)[..., None] * v)
    verts = (a + np.linspace(0.0, 1.0, n_rings)[:, None, None] * axis + ring).reshape(-1, 3)
    i, k = np.meshgrid(np.arange(n_rings - 1), np.arange(sides), indexing="ij")
    p, q = (i * sides + k).ravel(), (i * sides + (k + 1) % sides).ravel()
    side = np.concatenate([np.stack([p, q, q + sides], 1), np.stack([p, q + sides, p + sides], 1)])
    first, last, ks = len(verts), len(verts) + 1, np.arange(sides)
    top = (n_rings - 1) * sides
    caps = np.concatenate(
        [
            np.stack([np.full(sides, first), (ks + 1) % sides, ks], 1),
            np.stack([np.full(sides, last), top + ks, top + (ks + 1) % sides], 1),
        ]
    )
    verts = np.vstack([verts, a, b])
    return Mesh(verts.astype(np.float32), np.concatenate([side, caps]).astype(np.uint32), segid=0)


def _axon() -> tuple[np.ndarray, np.ndarray]:
    """The long axon outside the region, world nm: from A2's trunk end along +x."""
    start = _nm(TUBES[A2][0][1]) + REGION_START * RES
    return start, start + np.array([AXON_UM * 1000.0, 0.0, 0.0])


def _meshes() -> list[Mesh]:
    """Every root's mesh (but the meshless defect's), world nm: the tubes of its labels (the capsules its voxels were
    drawn from), the axon's appended to the roots holding A2."""
    out = []
    offset = REGION_START * RES
    for root in ROOTS:
        if root.name in NO_MESH:
            continue
        tubes = [
            _tube(_nm(a, z) + offset, _nm(b, z) + offset, RADIUS_NM)
            for label in root.labels
            for a, b in TUBES[label]
            for z in [DEPTH.get(label, Z_MID)]
        ]
        if A2 in root.labels:
            tubes.append(_tube(*_axon(), AXON_RADIUS_NM, step=100.0, sides=12))
        starts = np.cumsum([0] + [len(t.vertices) for t in tubes[:-1]])
        vertices = np.concatenate([t.vertices for t in tubes])
        faces = np.concatenate([t.faces + np.uint32(n) for t, n in zip(tubes, starts, strict=True)])
        out.append(Mesh(vertices, faces, segid=ROOT_ID[root.name]))
    return out


def _put_meshes(world_dir: Path, meshes: list[Mesh]) -> None:
    """Legacy precomputed meshes, as CloudVolume's mesh.put writes them (a manifest and one fragment per root),
    on this thread (CloudVolume's own put polls its upload threads)."""
    files = []
    for m in meshes:
        files.append((f"{m.segid}:0", json.dumps({"fragments": [f"{m.segid}:0:1"]}).encode()))
        files.append((f"{m.segid}:0:1", m.to_precomputed()))
    CloudFiles(f"file://{world_dir}/segmentation/mesh", num_threads=0).puts(files, compress="gzip", progress=False)


# ------------------------------------------------------------------------------------------------ tables
def _on(labels: np.ndarray, label: int, xy: tuple[int, int], window: int = 8) -> list[int]:
    """The voxel labelled `label` nearest (x, y, mid-depth), in world voxels."""
    at = np.array([xy[0], xy[1], DEPTH.get(label, Z_MID)])
    lo, hi = np.maximum(at - window, 0), np.minimum(at + window + 1, REGION_VX)
    hits = np.argwhere(labels[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] == label) + lo
    if len(hits) == 0:
        raise ValueError(f"no voxel of label {label} near {xy}")
    d = np.linalg.norm((hits - at) * RES, axis=1)
    return (hits[int(np.argmin(d))] + REGION_START).tolist()


def _roots_table(roots: list[SmallRoot], piece_label: np.ndarray) -> pa.Table:
    rows = sorted(roots, key=lambda r: ROOT_ID[r.name])
    svs = [(np.flatnonzero(np.isin(piece_label, r.labels)) + SV_BASE).tolist() for r in rows]
    return pa.table(
        {
            "root_id": pa.array([ROOT_ID[r.name] for r in rows], pa.uint64()),
            "supervoxel_ids": pa.array(svs, pa.list_(pa.uint64())),
            "created_ts": pa.array([r.created for r in rows], pa.int64()),
            "expired_ts": pa.array([r.expired for r in rows], pa.int64()),
            "site": pa.array([0] * len(rows), pa.int32()),
            "neuron_ids": pa.array([sorted({NEURON[x] for x in r.labels}) for r in rows], pa.list_(pa.int64())),
        }
    )


def _op_rows(labels: np.ndarray) -> list[dict]:
    rows = []
    for op_id, t, merge, before, after, src, snk in OPS:
        row = {
            "operation_id": op_id,
            "timestamp": t,
            "is_merge": merge,
            "before_root_ids": [ROOT_ID[r] for r in before],
            "after_root_ids": [ROOT_ID[r] for r in after],
            "source_coords_vx": [] if src is None else [_on(labels, *src)],
            "sink_coords_vx": [] if snk is None else [_on(labels, *snk)],
            "site": 0,
        }
        rows.append(row)
        if op_id in DUPLICATED_OPS:
            rows.append(dict(row))
    return rows


def _proofread(labels: np.ndarray) -> list[dict]:
    return [
        {
            "id": i + 1,
            "pt_root_id": ROOT_ID[name],
            "pt_position_nm": ((np.array(_on(labels, *ANCHORS[name])) + 0.5) * RES).tolist(),
            "valid": True,
            "neuron_id": i,
        }
        for i, name in enumerate(PROOFREAD)
    ]


def _final_root(label: int) -> int:
    return next(ROOT_ID[r.name] for r in ROOTS if r.expired is None and label in r.labels)


def _synapses(labels: np.ndarray, sv: np.ndarray, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed + 1)
    rows = []
    for syn_id, pre, pre_xy, post, post_xy, null_pre in SYNAPSES:
        pre_vx, post_vx = np.array(_on(labels, pre, pre_xy)), np.array(_on(labels, post, post_xy))
        row = {
            "id": syn_id,
            "pre_pt_root_id": None if null_pre else _final_root(pre),
            "post_pt_root_id": _final_root(post),
            "pre_pt_supervoxel_id": int(sv[tuple(pre_vx - REGION_START)]),
            "post_pt_supervoxel_id": int(sv[tuple(post_vx - REGION_START)]),
            "ctr_pt_position_nm": (((pre_vx + post_vx) / 2.0 + 0.5) * RES).tolist(),
            "pre_pt_position_nm": ((pre_vx + 0.5) * RES).tolist(),
            "post_pt_position_nm": ((post_vx + 0.5) * RES).tolist(),
            "cleft_score": float(rng.integers(40, 260)),
            "connection_score": float(np.round(rng.gamma(2.0, 30.0), 3)),
        }
        row.update(zip(NEUROTRANSMITTERS, rng.dirichlet(np.full(6, 0.6)).round(4).tolist(), strict=True))
        rows.append(row)
    return rows


def _path(points: list[tuple[int, int]], z: int, step_vx: int = 8) -> list[np.ndarray]:
    """Points every ~step voxels from the first to the last of `points` (region voxels at depth z), world nm."""
    out = []
    for a, b in zip(points[:-1], points[1:], strict=True):
        n = max(1, int(np.ceil(np.hypot(b[0] - a[0], b[1] - a[1]) / step_vx)))
        for i in range(n):
            f = i / n
            out.append(_nm((a[0] + f * (b[0] - a[0]), a[1] + f * (b[1] - a[1])), z) + REGION_START * RES)
    out.append(_nm(points[-1], z) + REGION_START * RES)
    return out


def _tree(trunk: list, branches: list[list], z: int, tail: list[np.ndarray]) -> dict:
    """A skeleton: the trunk, branches starting at a trunk point, and a tail of world-nm points after its end."""
    verts = _path(trunk, z)
    edges = [[i, i + 1] for i in range(len(verts) - 1)]
    for point in tail:
        edges.append([len(verts) - 1, len(verts)])
        verts.append(point)
    for branch in branches:
        base = int(np.argmin([np.linalg.norm(v - (_nm(branch[0], z) + REGION_START * RES)) for v in verts]))
        prev = base
        for p in _path(branch, z)[1:]:
            edges.append([prev, len(verts)])
            prev = len(verts)
            verts.append(p)
    return {"vertices_nm": [v.tolist() for v in verts], "edges": edges}


def _skeletons() -> list[dict]:
    start, end = _axon()
    tail = [start + (end - start) * f for f in np.linspace(0.0, 1.0, int(AXON_UM) + 1)[1:]]
    rows = [
        {"root_id": ROOT_ID[name], **_tree(trunk, branches, z, tail if name == LONG else [])}
        for name, (trunk, branches, z) in TREES.items()
    ]
    return sorted(rows, key=lambda r: r["root_id"])


def _summary(labels: np.ndarray) -> dict:
    start, end = _axon()
    lo, hi = REGION_START * RES, (REGION_START + REGION_VX) * RES
    return {
        "format": FORMAT,
        "parameters": {"small_world": True},
        "geometry": {
            "resolution_nm": RES.tolist(),
            "voxel_offset": VOXEL_OFFSET.tolist(),
            "volume_size": VOLUME_SIZE.tolist(),
            "chunk_size": CHUNK.tolist(),
            "site_size_vx": REGION_VX.tolist(),
            "bbox_nm": [(VOXEL_OFFSET * RES).tolist(), ((VOXEL_OFFSET + VOLUME_SIZE) * RES).tolist()],
            "cube_nm": SPLIT_CUBE_NM,
            "sites_vx": [REGION_START.tolist()],
            "region_nm": [lo.tolist(), hi.tolist()],
        },
        "time": {"world_start": WORLD_START, "ops_start": OPS_START, "as_of": AS_OF},
        "counts": {
            "sites": 1,
            "roots": len(ROOTS),
            "operations": len(OPS),
            "operation_rows": len(OPS) + len(DUPLICATED_OPS),
            "proofread_neurons": len(PROOFREAD),
            "synapses": len(SYNAPSES),
            "foreground_voxels": int(np.count_nonzero(labels)),
        },
        "defects": {
            "operations_without_points": [op[0] for op in OPS if op[5] is None],
            "duplicated_operation_rows": list(DUPLICATED_OPS),
            "synapses_with_null_root": [s[0] for s in SYNAPSES if s[5]],
            "roots_without_mesh": [ROOT_ID[n] for n in NO_MESH],
        },
        "long_neurons": [
            {
                "site": 0,
                "neuron_id": 0,
                "root_id": ROOT_ID[LONG],
                "extent_nm": (end - lo).round(1).tolist(),
                "diagonal_nm": round(float(np.linalg.norm(end - lo)), 1),
            }
        ],
        "tables": {name: f"tables/{name}.parquet" for name in TABLES},
    }
