"""Per-site plans of the demo world: neurons, their supervoxel pieces, false splits and false merges.

A plan is pure geometry and bookkeeping (no voxels): the edit history is simulated from it, and the
site is rasterized from it afterwards. Labels here are site-local supervoxel numbers (1..n).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.core.hashing import rng_for
from pipeline.demo_world.geometry import Tree, grow_neuron, pieces, touch_branch
from pipeline.demo_world.longrange import AxonSpec, grow_axon

RES = np.array([32.0, 32.0, 45.0])
CHUNK = np.array([64, 64, 40])
SITE_VX = np.array([128, 128, 80])
VOXEL_OFFSET = np.array([640, 512, 120])
VOLUME_SIZE = np.array([11264, 8128, 4000])  # 360.4 x 260.1 x 180.0 um
CUBE_NM = 80_000.0
MARGIN_NM = 420.0


@dataclass
class OpPlan:
    """One edit to make: a merge (fix a false split) or a split (fix a false merge)."""

    kind: str  # "merge" | "split"
    neurons: tuple[int, ...]  # merge: (i,), split: (i, j) with i's branch ending on j
    src_labels: frozenset[int]  # labels the source point must lie on
    snk_labels: frozenset[int]
    src_nm: np.ndarray  # site-local nm
    snk_nm: np.ndarray
    key_label: int  # a label of the root this op acts on (split) / of the source side (merge)
    snk_key_label: int  # merge: a label of the sink side


@dataclass
class SitePlan:
    index: int
    start_vx: np.ndarray  # global voxel index of the site's lower corner
    trees: list[Tree]
    edge_label: list[np.ndarray]  # per tree: label of each edge (by child node), 0 for the root
    label_neuron: np.ndarray  # (n_labels + 1,) local neuron index of each label, -1 for 0
    initial_groups: list[frozenset[int]]
    ops: list[OpPlan]
    bystanders: list[list[int]] = field(default_factory=list)  # per merge op, in ops order
    long_neuron: int = -1  # the neuron with a long axon leaving the site (-1: none)
    long_nodes: list[int] = field(default_factory=list)  # its axon's nodes (tree indices)

    @property
    def n_labels(self) -> int:
        return len(self.label_neuron) - 1

    def neuron_labels(self, k: int) -> frozenset[int]:
        return frozenset(int(x) for x in np.flatnonzero(self.label_neuron == k))


def place_sites(n_sites: int, seed: int) -> list[np.ndarray]:
    """Chunk-aligned, non-overlapping site corners (global voxels), spread over the 80 um cubes."""
    rng = rng_for("demo_world", seed, "sites")
    n_cubes = np.ceil(VOLUME_SIZE * RES / CUBE_NM).astype(int)
    cubes = [np.array(c) for c in np.ndindex(*n_cubes)]
    order = rng.permutation(len(cubes))
    cube_vx = CUBE_NM / RES
    placed: list[np.ndarray] = []
    for s in range(n_sites):
        cube = cubes[order[s % len(cubes)]]
        lo_vx = cube * cube_vx
        hi_vx = np.minimum((cube + 1) * cube_vx, VOLUME_SIZE)
        k_lo = np.ceil(lo_vx / CHUNK).astype(int)
        k_hi = np.floor((hi_vx - SITE_VX) / CHUNK).astype(int)
        for _attempt in range(200):
            k = np.array([rng.integers(k_lo[a], max(k_lo[a], k_hi[a]) + 1) for a in range(3)])
            start = k * CHUNK
            if all(np.any(np.abs(start - p) >= SITE_VX) for p in placed):
                break
        else:  # pragma: no cover - only with far more sites than the volume holds
            raise RuntimeError(f"cannot place site {s}")
        placed.append(start)
    return [VOXEL_OFFSET + p for p in placed]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def plan_site(seed: int, site: int, start_vx: np.ndarray, n_neurons: int, axon: AxonSpec | None = None) -> SitePlan:
    rng = rng_for("demo_world", seed, "site", site)
    box = SITE_VX * RES
    trees = [grow_neuron(rng, box, MARGIN_NM) for _ in range(n_neurons)]
    n_orig = [t.n for t in trees]
    order = [int(x) for x in rng.permutation(n_neurons)]

    # False merges: a branch of neuron i grows onto neuron j (they touch; the start state joins them).
    contacts = []
    avoid: dict[int, set[int]] = {k: set() for k in range(n_neurons)}
    for p in range(n_neurons // 2):
        i, j = order[2 * p], order[2 * p + 1]
        tj = trees[j]
        branch, node = None, -1
        for node in (int(x) for x in rng.permutation(np.arange(2, n_orig[j]))):
            radius = float(rng.uniform(100.0, 140.0))
            branch = touch_branch(rng, trees[i], tj.pos[node], tj.radius[node], list(range(n_orig[i])), radius)
            if branch:
                break
        if not branch:
            continue
        contacts.append({"i": i, "j": j, "branch": branch, "q": tj.pos[node].copy(), "node": node})
        kids = [c for c, par in enumerate(tj.parent) if par == node]
        avoid[j] |= {node, tj.parent[node], *kids}

    # False splits: neuron i is cut at a node u of degree 2 (edge u->c starts the far side).
    cuts = []
    for i in (int(x) for x in rng.permutation(n_neurons)[: (n_neurons + 1) // 2]):
        t = trees[i]
        deg = t.degree()
        cands = []
        for c in range(1, n_orig[i]):
            u = t.parent[c]
            if u <= 0 or deg[u] != 2 or c in avoid[i] or u in avoid[i]:
                continue
            sub = len(t.subtree(c))
            if sub >= 4 and t.n - sub >= 4:
                cands.append(c)
        if cands:
            c = cands[int(rng.integers(len(cands)))]
            cuts.append({"i": i, "c": c, "u": t.parent[c], "pp": t.parent[t.parent[c]]})

    # Bystanders: two other neurons grow a branch that touches neuron i at the cut.
    partner = {}
    for ct in contacts:
        partner[ct["i"]] = ct["j"]
        partner[ct["j"]] = ct["i"]
    for cut in cuts:
        i, u = cut["i"], cut["u"]
        others = [int(k) for k in rng.permutation(n_neurons) if k != i]
        others.sort(key=lambda k: k == partner.get(i))
        cut["bystanders"] = []
        for k in others[:2]:
            radius = float(rng.uniform(100.0, 140.0))
            br = touch_branch(rng, trees[k], trees[i].pos[u], trees[i].radius[u], list(range(n_orig[k])), radius, 800.0)
            if br:
                cut["bystanders"].append(k)

    # A long axon (own seeded stream: every other draw of the site is unchanged by it).
    long_nodes: list[int] = []
    if axon is not None:
        k = axon.neuron
        long_nodes = grow_axon(rng_for("demo_world", seed, "axon", site), trees[k], n_orig[k], start_vx * RES, axon)

    # Supervoxels: pieces of the trees, cut nodes forced to be piece boundaries.
    breaks = {k: {cut["u"] for cut in cuts if cut["i"] == k} for k in range(n_neurons)}
    edge_label, label_neuron, next_label = [], [-1], 1
    for k, t in enumerate(trees):
        pc = pieces(t, breaks[k])
        n_pieces = int(pc.max()) + 1
        edge_label.append(np.where(pc >= 0, pc + next_label, 0))
        label_neuron.extend([k] * n_pieces)
        next_label += n_pieces
    label_neuron_arr = np.array(label_neuron, dtype=np.int64)

    def labels_of(k: int) -> frozenset[int]:
        return frozenset(int(x) for x in np.flatnonzero(label_neuron_arr == k))

    fragments: dict[int, list[frozenset[int]]] = {k: [labels_of(k)] for k in range(n_neurons)}
    ops: list[OpPlan] = []
    bystanders: list[list[int]] = []
    for cut in cuts:
        i, c, u, pp = cut["i"], cut["c"], cut["u"], cut["pp"]
        t = trees[i]
        far = frozenset(int(edge_label[i][x]) for x in t.subtree(c))
        near = labels_of(i) - far
        fragments[i] = [near, far]
        pu = t.pos[u]
        src = pu + _unit(t.pos[pp] - pu) * min(130.0, 0.5 * float(np.linalg.norm(t.pos[pp] - pu)))
        snk = pu + _unit(t.pos[c] - pu) * min(130.0, 0.5 * float(np.linalg.norm(t.pos[c] - pu)))
        ops.append(OpPlan("merge", (i,), near, far, src, snk, int(edge_label[i][u]), int(edge_label[i][c])))
        bystanders.append(cut["bystanders"])

    groups = {frag: {frag} for k in range(n_neurons) for frag in fragments[k]}
    for ct in contacts:
        i, j, branch = ct["i"], ct["j"], ct["branch"]
        ti = trees[i]
        tip = int(edge_label[i][branch[-1]])
        fi = next(f for f in fragments[i] if tip in f)
        fj = next(f for f in fragments[j] if int(edge_label[j][ct["node"]]) in f)
        merged = groups[fi] | groups[fj]
        for f in merged:
            groups[f] = merged
        end = ti.pos[branch[-1]]
        prev = ti.pos[ti.parent[branch[-1]]]
        src = end + _unit(prev - end) * min(220.0, 0.8 * float(np.linalg.norm(prev - end)))
        ops.append(OpPlan("split", (i, j), labels_of(i), labels_of(j), src, ct["q"], tip, tip))
    initial = sorted({frozenset().union(*g) for g in map(frozenset, groups.values())}, key=min)
    return SitePlan(
        index=site,
        start_vx=np.asarray(start_vx),
        trees=trees,
        edge_label=edge_label,
        label_neuron=label_neuron_arr,
        initial_groups=initial,
        ops=ops,
        bystanders=bystanders,
        long_neuron=axon.neuron if axon is not None else -1,
        long_nodes=long_nodes,
    )
