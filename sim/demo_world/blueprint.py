"""Per-site blueprints of the demo world: neurons, their supervoxel pieces, false splits and false merges.

A blueprint is pure geometry and bookkeeping (no voxels): the edit history is simulated from it, and the
site is rasterized from it afterwards. Labels here are site-local supervoxel numbers (1..n).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.hashing import rng_for
from core.release_schema import SPLIT_CUBE_NM
from pipeline.sources.demo_volume import CHUNK, RES, VOLUME_SIZE, VOXEL_OFFSET
from sim.demo_world.geometry import Tree, grow_neuron, pieces, touch_branch
from sim.demo_world.longrange import AxonSpec, grow_axon, unit

SITE_VX = np.array([128, 128, 80])
MARGIN_NM = 420.0


@dataclass
class EditBlueprint:
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
class SiteBlueprint:
    index: int
    start_vx: np.ndarray  # global voxel index of the site's lower corner
    trees: list[Tree]
    edge_label: list[np.ndarray]  # per tree: label of each edge (by child node), 0 for the root
    label_neuron: np.ndarray  # (n_labels + 1,) local neuron index of each label, -1 for 0
    initial_groups: list[frozenset[int]]
    ops: list[EditBlueprint]
    bystanders: list[list[int]] = field(default_factory=list)  # per merge op, in ops order
    long_neuron: int = -1  # the neuron with a long axon leaving the site (-1: none)
    long_nodes: list[int] = field(default_factory=list)  # its axon's nodes (tree indices)

    @property
    def n_labels(self) -> int:
        return len(self.label_neuron) - 1

    def neuron_labels(self, k: int) -> frozenset[int]:
        return _labels_of(self.label_neuron, k)


def place_sites(n_sites: int, seed: int) -> list[np.ndarray]:
    """Chunk-aligned, non-overlapping site corners (global voxels), spread over the 80 um cubes."""
    rng = rng_for("demo_world", seed, "sites")
    n_cubes = np.ceil(VOLUME_SIZE * RES / SPLIT_CUBE_NM).astype(int)
    cubes = [np.array(c) for c in np.ndindex(*n_cubes)]
    order = rng.permutation(len(cubes))
    cube_vx = SPLIT_CUBE_NM / RES
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


@dataclass
class _Contact:
    """A false merge: a branch of neuron i grown onto neuron j at j's node `node` (position q)."""

    i: int
    j: int
    branch: list[int]  # the new nodes of i, the last one touching j
    q: np.ndarray
    node: int


@dataclass
class _Cut:
    """A false split: neuron i cut at node u (degree 2) between its parent pp and its child c."""

    i: int
    c: int
    u: int
    pp: int
    bystanders: list[int] = field(default_factory=list)  # neurons grown to touch i at u


def design_site(
    seed: int, site: int, start_vx: np.ndarray, n_neurons: int, axon: AxonSpec | None = None
) -> SiteBlueprint:
    """The blueprint of one site: neurons, the false merges and splits their start state has, the edits that fix
    them, and the supervoxels. One seeded stream per site, drawn in the order of the steps below (the long
    axon has its own)."""
    rng = rng_for("demo_world", seed, "site", site)
    trees = [grow_neuron(rng, SITE_VX * RES, MARGIN_NM) for _ in range(n_neurons)]
    n_orig = [t.n for t in trees]  # nodes of each neuron before anything grows onto another
    order = [int(x) for x in rng.permutation(n_neurons)]
    contacts, avoid = _false_merges(rng, trees, n_orig, order)
    cuts = _false_splits(rng, trees, n_orig, avoid)
    _grow_bystanders(rng, trees, n_orig, cuts, contacts)
    long_nodes: list[int] = []
    if axon is not None:
        k = axon.neuron
        long_nodes = grow_axon(rng_for("demo_world", seed, "axon", site), trees[k], n_orig[k], start_vx * RES, axon)
    edge_label, label_neuron = _supervoxels(trees, cuts)
    fragments = _fragments(trees, cuts, edge_label, label_neuron)
    merges = [_merge_op(trees[cut.i], cut, edge_label[cut.i], label_neuron) for cut in cuts]
    splits = [_split_op(trees[ct.i], ct, edge_label[ct.i], label_neuron) for ct in contacts]
    return SiteBlueprint(
        index=site,
        start_vx=np.asarray(start_vx),
        trees=trees,
        edge_label=edge_label,
        label_neuron=label_neuron,
        initial_groups=_initial_groups(contacts, fragments, edge_label),
        ops=merges + splits,
        bystanders=[cut.bystanders for cut in cuts],
        long_neuron=axon.neuron if axon is not None else -1,
        long_nodes=long_nodes,
    )


def _false_merges(
    rng: np.random.Generator, trees: list[Tree], n_orig: list[int], order: list[int]
) -> tuple[list[_Contact], dict[int, set[int]]]:
    """Pair the neurons in `order`; in each pair a branch of i grows onto j (they touch; the start state joins
    them). Returns the contacts and, per neuron, the nodes a cut must avoid (j's contact node and neighbours)."""
    n_neurons = len(trees)
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
        contacts.append(_Contact(i, j, branch, tj.pos[node].copy(), node))
        kids = [c for c, par in enumerate(tj.parent) if par == node]
        avoid[j] |= {node, tj.parent[node], *kids}
    return contacts, avoid


def _false_splits(
    rng: np.random.Generator, trees: list[Tree], n_orig: list[int], avoid: dict[int, set[int]]
) -> list[_Cut]:
    """Half the neurons (rounded up) are cut at a node u of degree 2 (edge u->c starts the far side), away from
    a contact and leaving at least 4 nodes on each side."""
    n_neurons = len(trees)
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
            cuts.append(_Cut(i, c, t.parent[c], t.parent[t.parent[c]]))
    return cuts


def _grow_bystanders(
    rng: np.random.Generator, trees: list[Tree], n_orig: list[int], cuts: list[_Cut], contacts: list[_Contact]
) -> None:
    """Two other neurons (the false-merge partner last) grow a branch that touches neuron i at each cut, so the
    merge that fixes it has adjacent roots: adds to `trees` and to each cut's `bystanders`."""
    n_neurons = len(trees)
    partner = {}
    for ct in contacts:
        partner[ct.i] = ct.j
        partner[ct.j] = ct.i
    for cut in cuts:
        i, u = cut.i, cut.u
        others = [int(k) for k in rng.permutation(n_neurons) if k != i]
        others.sort(key=lambda k: k == partner.get(i))
        for k in others[:2]:
            radius = float(rng.uniform(100.0, 140.0))
            br = touch_branch(rng, trees[k], trees[i].pos[u], trees[i].radius[u], list(range(n_orig[k])), radius, 800.0)
            if br:
                cut.bystanders.append(k)


def _supervoxels(trees: list[Tree], cuts: list[_Cut]) -> tuple[list[np.ndarray], np.ndarray]:
    """Pieces of the trees as labels 1..n, cut nodes forced to be piece boundaries: (per tree the label of each
    edge by child node, 0 for the root; the neuron of each label, -1 for label 0)."""
    breaks = {k: {cut.u for cut in cuts if cut.i == k} for k in range(len(trees))}
    edge_label, label_neuron, next_label = [], [-1], 1
    for k, t in enumerate(trees):
        pc = pieces(t, breaks[k])
        n_pieces = int(pc.max()) + 1
        edge_label.append(np.where(pc >= 0, pc + next_label, 0))
        label_neuron.extend([k] * n_pieces)
        next_label += n_pieces
    return edge_label, np.array(label_neuron, dtype=np.int64)


def _labels_of(label_neuron: np.ndarray, k: int) -> frozenset[int]:
    return frozenset(int(x) for x in np.flatnonzero(label_neuron == k))


def _cut_sides(
    tree: Tree, cut: _Cut, edge_label: np.ndarray, label_neuron: np.ndarray
) -> tuple[frozenset[int], frozenset[int]]:
    """(near, far): the labels of neuron i on each side of its cut."""
    far = frozenset(int(edge_label[x]) for x in tree.subtree(cut.c))
    return _labels_of(label_neuron, cut.i) - far, far


def _fragments(
    trees: list[Tree], cuts: list[_Cut], edge_label: list[np.ndarray], label_neuron: np.ndarray
) -> dict[int, list[frozenset[int]]]:
    """Each neuron's pieces before any merge: the whole neuron, or the two sides of its cut."""
    fragments = {k: [_labels_of(label_neuron, k)] for k in range(len(trees))}
    for cut in cuts:
        fragments[cut.i] = list(_cut_sides(trees[cut.i], cut, edge_label[cut.i], label_neuron))
    return fragments


def _toward(p: np.ndarray, q: np.ndarray, cap: float, fraction: float) -> np.ndarray:
    """The point from p towards q, at min(cap, fraction of the distance)."""
    return p + unit(q - p) * min(cap, fraction * float(np.linalg.norm(q - p)))


def _merge_op(tree: Tree, cut: _Cut, edge_label: np.ndarray, label_neuron: np.ndarray) -> EditBlueprint:
    """The merge that fixes a cut: source on the near side, sink on the far side, each 130 nm from u at most."""
    near, far = _cut_sides(tree, cut, edge_label, label_neuron)
    pu = tree.pos[cut.u]
    src = _toward(pu, tree.pos[cut.pp], 130.0, 0.5)
    snk = _toward(pu, tree.pos[cut.c], 130.0, 0.5)
    return EditBlueprint("merge", (cut.i,), near, far, src, snk, int(edge_label[cut.u]), int(edge_label[cut.c]))


def _split_op(tree_i: Tree, ct: _Contact, edge_label_i: np.ndarray, label_neuron: np.ndarray) -> EditBlueprint:
    """The split that fixes a contact: source on i's branch just before its tip, sink on j where it touches."""
    tip = int(edge_label_i[ct.branch[-1]])
    end = tree_i.pos[ct.branch[-1]]
    prev = tree_i.pos[tree_i.parent[ct.branch[-1]]]
    src = _toward(end, prev, 220.0, 0.8)
    src_labels, snk_labels = _labels_of(label_neuron, ct.i), _labels_of(label_neuron, ct.j)
    return EditBlueprint("split", (ct.i, ct.j), src_labels, snk_labels, src, ct.q, tip, tip)


def _initial_groups(
    contacts: list[_Contact], fragments: dict[int, list[frozenset[int]]], edge_label: list[np.ndarray]
) -> list[frozenset[int]]:
    """The start state's roots: every fragment on its own, but the two sides of a contact joined (by the
    fragment holding i's branch tip and the one holding j's contact node), ordered by their lowest label."""
    groups = {frag: {frag} for frags in fragments.values() for frag in frags}
    for ct in contacts:
        tip = int(edge_label[ct.i][ct.branch[-1]])
        fi = next(f for f in fragments[ct.i] if tip in f)
        fj = next(f for f in fragments[ct.j] if int(edge_label[ct.j][ct.node]) in f)
        merged = groups[fi] | groups[fj]
        for f in merged:
            groups[f] = merged
    return sorted({frozenset().union(*g) for g in map(frozenset, groups.values())}, key=min)
