"""Neuron geometry of the demo world: random branching trees, their supervoxel pieces, rasterization.

Everything here is in a site's local frame: nm from the lower corner of the site's voxel block.
A tree's edge is named by its child node (edge c joins parent[c] and c).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Tree:
    """A neuron's centreline: node positions (nm, site frame), parents (-1 for the root), radii (nm)."""

    pos: list[np.ndarray] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    radius: list[float] = field(default_factory=list)

    def add(self, p: np.ndarray, parent: int, radius: float) -> int:
        self.pos.append(np.asarray(p, dtype=np.float64))
        self.parent.append(int(parent))
        self.radius.append(float(radius))
        return len(self.pos) - 1

    @property
    def n(self) -> int:
        return len(self.pos)

    def positions(self) -> np.ndarray:
        return np.array(self.pos, dtype=np.float64).reshape(-1, 3)

    def degree(self) -> np.ndarray:
        deg = np.zeros(self.n, dtype=np.int64)
        for c, p in enumerate(self.parent):
            if p >= 0:
                deg[c] += 1
                deg[p] += 1
        return deg

    def children(self) -> list[list[int]]:
        kids: list[list[int]] = [[] for _ in range(self.n)]
        for c, p in enumerate(self.parent):
            if p >= 0:
                kids[p].append(c)
        return kids

    def subtree(self, c: int) -> set[int]:
        """Nodes of the subtree rooted at node c (c included)."""
        kids = self.children()
        out, stack = set(), [c]
        while stack:
            x = stack.pop()
            out.add(x)
            stack.extend(kids[x])
        return out

    def edges(self) -> np.ndarray:
        return np.array([(p, c) for c, p in enumerate(self.parent) if p >= 0], dtype=np.int64).reshape(-1, 2)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else np.array([1.0, 0.0, 0.0])


def _walk(
    rng: np.random.Generator,
    start: np.ndarray,
    direction: np.ndarray,
    n_steps: int,
    step: float,
    lo: np.ndarray,
    hi: np.ndarray,
    wiggle: float = 0.4,
) -> list[np.ndarray]:
    """A persistent random walk that bounces off the box [lo, hi]."""
    pts, p, d = [], np.asarray(start, dtype=np.float64), _unit(direction)
    for _ in range(n_steps):
        d = _unit(d + wiggle * rng.normal(size=3))
        q = p + step * d
        out = (q < lo) | (q > hi)
        if out.any():
            d = np.where(out, -d, d)
            q = np.clip(p + step * d, lo, hi)
        pts.append(q)
        p = q
    return pts


def grow_neuron(rng: np.random.Generator, box_nm: np.ndarray, margin_nm: float) -> Tree:
    """A trunk crossing the site with side branches (branch points of degree 3) and some sub-branches."""
    lo = np.full(3, margin_nm)
    hi = np.asarray(box_nm, dtype=np.float64) - margin_nm
    tree = Tree()
    r_trunk = float(rng.uniform(170.0, 300.0))
    start = rng.uniform(lo, hi)
    trunk = _walk(rng, start, rng.normal(size=3), int(rng.integers(12, 17)), 260.0, lo, hi, wiggle=0.35)
    prev = tree.add(start, -1, r_trunk)
    trunk_nodes = [prev]
    for k, p in enumerate(trunk):
        prev = tree.add(p, prev, r_trunk * (1.0 - 0.25 * (k + 1) / len(trunk)))
        trunk_nodes.append(prev)
    n_branches = int(rng.integers(2, 5))
    where = sorted(rng.choice(np.arange(2, len(trunk_nodes) - 2), size=n_branches, replace=False).tolist())
    for b in where:
        node = trunk_nodes[b]
        axis = tree.pos[node] - tree.pos[tree.parent[node]]
        d = rng.normal(size=3)
        d = d - _unit(axis) * float(np.dot(d, _unit(axis)))
        r_b = float(rng.uniform(100.0, min(170.0, 0.75 * r_trunk)))
        pts = _walk(rng, tree.pos[node], d, int(rng.integers(4, 9)), 240.0, lo, hi)
        prev, chain = node, []
        for p in pts:
            prev = tree.add(p, prev, r_b)
            chain.append(prev)
        if len(chain) >= 4 and rng.random() < 0.5:
            sub = chain[int(rng.integers(1, len(chain) - 2))]
            pts = _walk(rng, tree.pos[sub], rng.normal(size=3), int(rng.integers(3, 6)), 220.0, lo, hi)
            prev = sub
            for p in pts:
                prev = tree.add(p, prev, float(rng.uniform(95.0, 120.0)))
    return tree


def point_segment_distance(points: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each point to segment ab and the segment parameter t in [0, 1] of the nearest point."""
    ab = b - a
    denom = float(np.dot(ab, ab))
    t = np.zeros(points.shape[:-1]) if denom < 1e-12 else np.clip(((points - a) @ ab) / denom, 0.0, 1.0)
    nearest = a + t[..., None] * ab
    return np.linalg.norm(points - nearest, axis=-1), t


def nearest_on_tree(tree: Tree, point: np.ndarray) -> tuple[float, np.ndarray, float, int]:
    """(distance, nearest centreline point, radius there, edge child index) from `point` to the tree."""
    pos = tree.positions()
    best = (np.inf, pos[0], tree.radius[0], 0)
    for c, p in enumerate(tree.parent):
        if p < 0:
            continue
        d, t = point_segment_distance(point[None, :], pos[p], pos[c])
        if d[0] < best[0]:
            tt = float(t[0])
            q = pos[p] + tt * (pos[c] - pos[p])
            r = tree.radius[p] + tt * (tree.radius[c] - tree.radius[p])
            best = (float(d[0]), q, r, c)
    return best


def add_chain(
    tree: Tree, from_node: int, end: np.ndarray, r_start: float, r_end: float, step: float = 250.0
) -> list[int]:
    """A straight branch from node `from_node` to point `end`, in steps of about `step` nm."""
    start = tree.pos[from_node]
    n = max(1, int(np.ceil(np.linalg.norm(end - start) / step)))
    nodes, prev = [], from_node
    for k in range(1, n + 1):
        f = k / n
        prev = tree.add(start + f * (end - start), prev, r_start + f * (r_end - r_start))
        nodes.append(prev)
    return nodes


def touch_branch(
    rng: np.random.Generator,
    tree: Tree,
    target: np.ndarray,
    target_radius: float,
    candidates: list[int],
    radius: float,
    want_nm: float = 900.0,
) -> list[int] | None:
    """Grow a branch of `tree` that ends just inside the surface of a tube (centre `target`, radius
    `target_radius`), so the two become face-adjacent there. Returns the new nodes."""
    pos = tree.positions()
    dist = np.linalg.norm(pos[candidates] - target, axis=1)
    ok = dist > target_radius + radius + 250.0
    if not ok.any():
        return None
    cost = np.abs(dist - want_nm) + np.where(ok, 0.0, np.inf)
    node = candidates[int(np.argmin(cost))]
    u = _unit(pos[node] - target)
    end = target + u * (target_radius + 0.3 * radius)
    return add_chain(tree, node, end, min(radius, tree.radius[node]), radius)


def pieces(tree: Tree, breaks: set[int], max_edges: int = 4) -> np.ndarray:
    """Piece index of each edge (by child node; -1 for the root): a new piece starts at every node
    of degree != 2, at every node in `breaks`, and after `max_edges` edges."""
    deg = tree.degree()
    piece = np.full(tree.n, -1, dtype=np.int64)
    length: list[int] = []
    for c, p in enumerate(tree.parent):
        if p < 0:
            continue
        parent_piece = piece[p]
        if tree.parent[p] < 0 or deg[p] != 2 or p in breaks or length[parent_piece] >= max_edges:
            piece[c] = len(length)
            length.append(1)
        else:
            piece[c] = parent_piece
            length[parent_piece] += 1
    return piece


def rasterize(
    shape: tuple[int, int, int], res: np.ndarray, capsules: list[tuple[np.ndarray, np.ndarray, float, float, int]]
) -> np.ndarray:
    """Label each voxel with the capsule whose surface is nearest inside (score = distance - radius < 0).

    capsules: (a_nm, b_nm, r_a, r_b, label). Voxel centres are at (i + 0.5) * res.
    """
    labels = np.zeros(shape, dtype=np.uint32)
    best = np.full(shape, np.inf, dtype=np.float32)
    shape_arr = np.asarray(shape)
    for a, b, ra, rb, label in capsules:
        rmax = max(ra, rb)
        lo = np.maximum(np.floor((np.minimum(a, b) - rmax) / res - 0.5).astype(int), 0)
        hi = np.minimum(np.ceil((np.maximum(a, b) + rmax) / res + 0.5).astype(int), shape_arr)
        if (hi <= lo).any():
            continue
        axes = [(np.arange(lo[k], hi[k]) + 0.5) * res[k] for k in range(3)]
        grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)
        d, t = point_segment_distance(grid, a, b)
        score = (d - (ra + t * (rb - ra))).astype(np.float32)
        sl = tuple(slice(lo[k], hi[k]) for k in range(3))
        win = (score < 0) & (score < best[sl])
        best[sl][win] = score[win]
        labels[sl][win] = label
    return labels


def face_contacts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All face-adjacent voxel pairs with two different non-zero labels: (first voxel, second voxel) indices."""
    firsts, seconds = [], []
    for axis in range(3):
        n = labels.shape[axis]
        a = np.take(labels, np.arange(n - 1), axis=axis)
        b = np.take(labels, np.arange(1, n), axis=axis)
        idx = np.argwhere((a != b) & (a != 0) & (b != 0))
        step = np.zeros(3, dtype=np.int64)
        step[axis] = 1
        firsts.append(idx)
        seconds.append(idx + step)
    return np.concatenate(firsts), np.concatenate(seconds)
