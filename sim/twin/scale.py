"""A world at the real release's scale for the bank: 20,000+ proofread neurons, built lazily from a few arrays.

The demo world (sim/demo_world) holds every root's supervoxels and meshes on disk: right for fetch and render,
impossible at FlyWire's size. The bank reads no EM and no mesh: the proofread table, the synapse table, each
neuron's change log and operation details, its level-2 graph and a small segmentation cutout at every merge
(adjacent controls). `ScaleWorld` serves exactly those, from arrays drawn once from a seed; every answer (a change
log, a level-2 graph, a segmentation chunk, a table at a version) is computed when asked, so a 20,000-neuron world
costs the twin ~100 MB whatever the requests.

The history model (one chain of roots per proofread neuron):
- neuron i starts at WORLD_START as root C(i, 0) and is edited k_i times (k_i heavy-tailed: median ~2-3, a few
  hundred for the largest; ~70% merges); edit j makes C(i, j + 1);
- a merge joins a fragment root F(g), alive since WORLD_START, to the neuron; a split cuts a falsely merged piece off
  as a new root X(g) (that piece belonged to the neuron from the start);
- each edit has its own segmentation chunk: the neuron's supervoxel A(g) and the other side's B(g) touch at the
  edit's point, and a never-edited neighbour N(g) touches both (the adjacent control the bank finds);
- synapses join proofread neurons (their anchor supervoxel P(i)) to proofread neurons or to never-edited other roots
  O(m); every proofread-to-proofread synapse is a candidate.
Every edit is relevant and in its neuron (the server's change-log filter keeps them all): the filtered and the whole
change log are the same here. Ids use the chunkedgraph's layout (sim/twin/ids.py).
"""

from __future__ import annotations

import gzip
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from core.atomic import write_json
from pipeline.sources.demo_volume import RES, VOLUME_SIZE, VOXEL_OFFSET
from sim.demo_world.history import AS_OF, OPS_START, WORLD_START
from sim.twin import ids
from sim.twin.model import NEVER_S, Operation, Version, default_versions, to_ms

# The watershed's storage chunks: smaller than the graph's (64 x 64 x 40), so that a generated chunk is 160 KB raw.
WS_CHUNK = np.array([32, 32, 20])
_GRID = VOLUME_SIZE // WS_CHUNK
_LOCAL = WS_CHUNK // 2  # the edit's point inside its chunk: the bank's 16 x 16 x 11 cutout stays inside
# supervoxel kinds (segment id bits 22-25) and root kinds (segment id bits 40-47)
SV_A, SV_B, SV_N, SV_P, SV_O = 1, 2, 3, 4, 5
ROOT_C, ROOT_F, ROOT_X, ROOT_N, ROOT_O = 1, 2, 3, 4, 5
_SV_KIND_SHIFT, _ROOT_KIND_SHIFT = 22, 40
_ROOT_BASE = ids.N_LAYERS << (64 - ids.LAYER_BITS)  # layer 10, chunk 0: 720575940379279360 + segment id
MERGE_FRACTION = 0.7
NEVER_MS = NEVER_S * 1000


@dataclass(frozen=True)
class ScaleParams:
    """What a scale world is drawn from: the same parameters give the same world, byte for byte."""

    neurons: int = 20_000
    synapses: int = 1_000_000
    other_roots: int = 60_000  # never-edited partners of the synapses that leave the proofread set
    proofread_partner_fraction: float = 0.15  # synapses whose post side is a proofread neuron
    ops_median: float = 2.5  # edits per neuron: lognormal, this median
    ops_sigma: float = 1.3  # ... this spread (mean ~6, the largest few hundred at 20,000 neurons)
    ops_max: int = 800
    l2_median: int = 300  # level-2 nodes per neuron: lognormal (FlyWire-like hundreds to thousands)
    l2_max: int = 4000
    seed: int = 0


def _sv(kind: int, index: np.ndarray, chunk: np.ndarray | None = None) -> np.ndarray:
    """Layer-1 ids (supervoxels) of `kind` and index; the chunk bits name the graph chunk they lie in."""
    index = np.asarray(index, dtype=np.uint64)
    seg = (np.uint64(kind) << np.uint64(_SV_KIND_SHIFT)) | index
    bits, sb = ids.SPATIAL_BITS[1], ids.segid_bits(1)
    out = np.uint64(1 << (64 - ids.LAYER_BITS)) | seg
    if chunk is not None:
        c = np.asarray(chunk, dtype=np.uint64).reshape(-1, 3)
        for axis, shift in enumerate((sb + 2 * bits, sb + bits, sb)):
            out = out | (c[:, axis] << np.uint64(shift))
    return out


def _root(kind: int, index: np.ndarray) -> np.ndarray:
    return np.uint64(_ROOT_BASE) | (np.uint64(kind) << np.uint64(_ROOT_KIND_SHIFT)) | np.asarray(index, np.uint64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64: a seeded, salt-free hash of ids (jitter of a level-2 node's representative point)."""
    z = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class _RepCoords:
    """The l2cache's rep_coord_nm of any level-2 id: a point in its chunk, jittered by a hash of the id."""

    def get(self, l2_id: int, default: object = None) -> list[float] | None:
        if ids.layer_of(l2_id) != 2:
            return default  # type: ignore[return-value]
        chunk = np.asarray(ids.chunk_of(l2_id), dtype=np.float64)
        h = int(_mix(np.array([l2_id], np.uint64))[0])
        frac = np.array([(h >> s) & 0xFFFF for s in (0, 16, 32)], dtype=np.float64) / 65536.0
        vx = VOXEL_OFFSET + (chunk + 0.1 + 0.8 * frac) * ids.GRAPH_CHUNK_VX
        return (vx * RES).tolist()


class _Ops:
    """`world.ops`: an edit by operation id, built when asked."""

    def __init__(self, world: ScaleWorld) -> None:
        self._world = world

    def get(self, op_id: int, default: object = None) -> Operation | None:
        g = self._world.op_index(op_id)
        return default if g is None else self._world.operation(g)  # type: ignore[return-value]


class _L2Graphs:
    """`world.l2_edges`: a neuron's level-2 graph (every root of its chain answers the same graph)."""

    def __init__(self, world: ScaleWorld) -> None:
        self._world = world

    def get(self, root: int, default: object = None) -> list[list[int]]:
        neuron = self._world.chain_neuron(int(root))
        return default if neuron is None else self._world.level2_edges(neuron)  # type: ignore[return-value]


class ScaleWorld:
    """A generated world of `params.neurons` proofread neurons, served lazily (module docstring).

    `world_dir` receives `world.json` (the parameters and counts) and the segmentation layer's `info`; nothing else is
    written: no EM, no meshes (their endpoints answer 404)."""

    is_generated = True

    def __init__(self, world_dir: str | Path, params: ScaleParams | None = None) -> None:
        self.params = p = params or ScaleParams()
        self.world_dir = Path(world_dir)
        self.cache_dir = self.world_dir / "twin-cache"  # nothing in it: no mesh fragments
        self.versions: tuple[Version, ...] = default_versions()
        self._lock = threading.Lock()
        self._tables: dict[tuple[str, int], pa.Table] = {}
        rng = np.random.default_rng([p.seed, p.neurons, 0x5CA1E])
        n = p.neurons
        k = np.floor(np.exp(rng.normal(np.log(p.ops_median), p.ops_sigma, n))).astype(np.int64)
        self.k = np.clip(k, 0, p.ops_max)
        self.op_start = np.concatenate([[0], np.cumsum(self.k)]).astype(np.int64)
        g_total = int(self.op_start[-1])
        self.op_neuron = np.repeat(np.arange(n, dtype=np.int64), self.k)
        self.op_j = np.arange(g_total, dtype=np.int64) - self.op_start[self.op_neuron]
        # edit times: whole ms in [OPS_START, AS_OF - 1 day), sorted within each neuron, distinct overall
        span_ms = (AS_OF - 86400 - OPS_START) * 1000
        t = OPS_START * 1000 + rng.choice(span_ms, size=g_total, replace=False).astype(np.int64)
        order = np.lexsort((t, self.op_neuron))
        self.op_ms = t[order]
        self.op_merge = rng.random(g_total) < MERGE_FRACTION
        # operation ids in time order, as a server numbers its edits
        by_time = np.argsort(self.op_ms, kind="stable")
        self.op_id = np.empty(g_total, dtype=np.int64)
        self.op_id[by_time] = np.arange(1, g_total + 1)
        self._g_of_id = by_time  # op id - 1 -> g
        # each edit in its own watershed chunk
        cells = rng.choice(int(np.prod(_GRID)), size=g_total, replace=False).astype(np.int64)
        self.op_chunk = np.stack(np.unravel_index(cells, tuple(_GRID)), axis=1).astype(np.int64)
        self._cell_order = np.argsort(cells)
        self._cells_sorted = cells[self._cell_order]
        self.op_vx = VOXEL_OFFSET + self.op_chunk * WS_CHUNK + _LOCAL
        self._chain_key = (self.op_neuron << 42) | self.op_ms  # searchsorted: the chain root of a neuron at t
        self.chain_base = self.op_start + np.arange(n + 1, dtype=np.int64)  # C(i, 0)'s index
        self.soma_vx = VOXEL_OFFSET + (rng.random((n, 3)) * (VOLUME_SIZE - 1)).astype(np.int64)
        nodes = np.floor(np.exp(rng.normal(np.log(p.l2_median), 0.8, n))).astype(np.int64)
        self.l2_nodes = np.clip(nodes, 8, p.l2_max)
        self.l2_base = np.concatenate([[1], 1 + np.cumsum(self.l2_nodes)]).astype(np.int64)
        self.first_op_s = float(self.op_ms.min()) / 1000.0 if g_total else float(WORLD_START)
        self.ops = _Ops(self)
        self.l2_edges = _L2Graphs(self)
        self.rep_coord = _RepCoords()
        self.summary = {
            "kind": "scale",
            "params": p.__dict__,
            "time": {"world_start": WORLD_START, "ops_start": OPS_START, "as_of": AS_OF},
            "counts": {
                "proofread_neurons": n,
                "operations": g_total,
                "merges": int(self.op_merge.sum()),
                "ops_per_neuron": {
                    "median": float(np.median(self.k)),
                    "mean": float(self.k.mean()),
                    "max": int(self.k.max(initial=0)),
                },  # fmt: skip
                "synapses": p.synapses,
                "level2_nodes": int(self.l2_nodes.sum()),
            },
        }
        self._write()

    # ------------------------------------------------------------------ files
    def _write(self) -> None:
        seg = self.ws_info()
        write_json(self.world_dir / "segmentation" / "info", seg)
        write_json(self.world_dir / "world.json", self.summary)

    def ws_info(self) -> dict:
        scale = {
            "chunk_sizes": [WS_CHUNK.tolist()],
            "encoding": "raw",
            "key": "_".join(str(int(r)) for r in RES),
            "resolution": [int(r) for r in RES],
            "size": VOLUME_SIZE.tolist(),
            "voxel_offset": VOXEL_OFFSET.tolist(),
        }
        return {"@type": "neuroglancer_multiscale_volume", "type": "segmentation", "data_type": "uint64",
                "num_channels": 1, "mesh": "mesh", "scales": [scale]}  # fmt: skip

    _CHUNK_NAME = re.compile(r"^[^/]+/(\d+)-(\d+)_(\d+)-(\d+)_(\d+)-(\d+)$")

    def ws_chunk(self, rel: str) -> bytes | None:
        """A watershed chunk's raw bytes (None: no such chunk; every chunk without an edit is absent)."""
        m = self._CHUNK_NAME.match(rel.removesuffix(".gz"))
        if m is None:
            return None
        lo = np.array([int(m.group(i)) for i in (1, 3, 5)])
        cell = (lo - VOXEL_OFFSET) // WS_CHUNK
        if np.any((lo - VOXEL_OFFSET) % WS_CHUNK) or np.any(cell < 0) or np.any(cell >= _GRID):
            return None
        linear = int(np.ravel_multi_index(tuple(cell), tuple(_GRID)))
        at = int(np.searchsorted(self._cells_sorted, linear))
        if at >= len(self._cells_sorted) or self._cells_sorted[at] != linear:
            return None
        g = int(self._cell_order[at])
        a, b, nb = (int(x) for x in self.edit_supervoxels(g))
        data = np.zeros(tuple(WS_CHUNK), dtype=np.uint64)
        c = _LOCAL
        box = (slice(c[0] - 10, c[0] + 10), slice(c[1] - 10, c[1] + 10), slice(c[2] - 7, c[2] + 7))
        data[box] = a
        data[c[0] :, box[1], box[2]] = b
        data[c[0] - 10 : c[0] + 10, c[1] + 4 : c[1] + 10, box[2]] = nb
        return gzip.compress(data.tobytes(order="F"), compresslevel=1, mtime=0)

    # ------------------------------------------------------------------ ids
    def edit_supervoxels(self, g: int) -> np.ndarray:
        """A(g), B(g), N(g): the neuron's side of edit g, the other side, the neighbour touching both."""
        chunk = ids.chunk_index_of_nm((self.op_vx[g] * RES)[None])[0]
        return np.concatenate([_sv(kind, [g], chunk) for kind in (SV_A, SV_B, SV_N)])

    def anchor_supervoxels(self, neurons: np.ndarray) -> np.ndarray:
        return _sv(SV_P, neurons)

    def chain_root(self, neuron: np.ndarray, t_ms: np.ndarray | int) -> np.ndarray:
        """C(i, j) at t: j = the neuron's edits at or before t (a read at T sees what was written at T)."""
        neuron = np.asarray(neuron, dtype=np.int64)
        key = (neuron << 42) | np.asarray(t_ms, dtype=np.int64)
        j = np.searchsorted(self._chain_key, key, side="right") - self.op_start[neuron]
        return _root(ROOT_C, self.chain_base[neuron] + j)

    def _decode_root(self, root: int) -> tuple[int, int] | None:
        r = int(root)
        if r >> (64 - ids.LAYER_BITS) != ids.N_LAYERS or ids.chunk_of(r) != (0, 0, 0):
            return None
        seg = r & ((1 << ids.segid_bits(ids.N_LAYERS)) - 1)
        return seg >> _ROOT_KIND_SHIFT, seg & ((1 << _ROOT_KIND_SHIFT) - 1)

    def chain_neuron(self, root: int) -> int | None:
        got = self._decode_root(root)
        if got is None or got[0] != ROOT_C or got[1] >= self.chain_base[-1]:
            return None
        return int(np.searchsorted(self.chain_base, got[1], side="right") - 1)

    def lifetime_ms(self, root: int) -> tuple[int, int] | None:
        """(created, expired) of a root in ms, NEVER_MS for alive; None for an id this world never made."""
        got = self._decode_root(root)
        if got is None:
            return None
        kind, idx = got
        n_ops = len(self.op_ms)
        start = WORLD_START * 1000
        if kind == ROOT_C:
            i = self.chain_neuron(root)
            if i is None:
                return None
            j = idx - int(self.chain_base[i])
            g0 = int(self.op_start[i])
            created = start if j == 0 else int(self.op_ms[g0 + j - 1])
            return created, (int(self.op_ms[g0 + j]) if j < self.k[i] else NEVER_MS)
        if kind in (ROOT_F, ROOT_X, ROOT_N) and idx < n_ops:
            if kind == ROOT_F:
                return (start, int(self.op_ms[idx])) if self.op_merge[idx] else None
            if kind == ROOT_X:
                return None if self.op_merge[idx] else (int(self.op_ms[idx]), NEVER_MS)
            return start, NEVER_MS
        if kind == ROOT_O and idx < self.params.other_roots:
            return start, NEVER_MS
        return None

    # ------------------------------------------------------------------ roots in time
    def roots_at(self, svs: np.ndarray, t_ms: int) -> np.ndarray:
        """Root of each supervoxel at t_ms; 0 for 0, unknown ids and times before WORLD_START."""
        sv = np.asarray(svs, dtype=np.uint64).ravel()
        out = np.zeros(sv.shape, dtype=np.uint64)
        if sv.size == 0 or t_ms < WORLD_START * 1000:
            return out
        seg = sv & np.uint64((1 << ids.segid_bits(1)) - 1)
        kind = (seg >> np.uint64(_SV_KIND_SHIFT)).astype(np.int64)
        idx = (seg & np.uint64((1 << _SV_KIND_SHIFT) - 1)).astype(np.int64)
        layer1 = (sv >> np.uint64(64 - ids.LAYER_BITS)) == 1
        n_ops, n = len(self.op_ms), self.params.neurons
        t = int(t_ms)
        sel = layer1 & (kind == SV_P) & (idx < n)
        out[sel] = self.chain_root(idx[sel], t)
        edit = layer1 & np.isin(kind, (SV_A, SV_B, SV_N)) & (idx < n_ops)
        g = np.where(edit, idx, 0)
        neuron = self.op_neuron[g] if n_ops else g
        sel = edit & (kind == SV_A)
        out[sel] = self.chain_root(neuron[sel], t)
        sel = edit & (kind == SV_N)
        out[sel] = _root(ROOT_N, g[sel])
        b = edit & (kind == SV_B)
        before = self.op_ms[g] > t if n_ops else np.zeros_like(b)
        merge = self.op_merge[g] if n_ops else np.zeros_like(b)
        sel = b & merge & before
        out[sel] = _root(ROOT_F, g[sel])
        sel = b & ((merge & ~before) | (~merge & before))
        out[sel] = self.chain_root(neuron[sel], t)
        sel = b & ~merge & ~before
        out[sel] = _root(ROOT_X, g[sel])
        sel = layer1 & (kind == SV_O) & (idx < self.params.other_roots)
        out[sel] = _root(ROOT_O, idx[sel])
        return out

    def is_latest(self, roots: list[int], t_ms: int) -> list[bool]:
        return [bool((life := self.lifetime_ms(r)) is not None and life[1] > t_ms) for r in roots]

    def created_s(self, roots: list[int]) -> list[float]:
        return [0.0 if (life := self.lifetime_ms(r)) is None else life[0] / 1000.0 for r in roots]

    def expired_s(self, roots: list[int]) -> list[float | None]:
        """When each root was replaced (None: an id this world never made); NEVER_S for alive roots."""
        return [None if (life := self.lifetime_ms(r)) is None else life[1] / 1000.0 for r in roots]

    def delta_roots(self, past_ms: int | None, future_ms: int) -> tuple[list[int], list[int]]:
        sel = (self.op_ms <= future_ms) & (True if past_ms is None else self.op_ms >= past_ms)
        old, new = [], []
        for g in np.flatnonzero(sel):
            op = self.operation(int(g))
            old.extend(op.before)
            new.extend(op.after)
        return sorted(old), sorted(new)

    def past_ids(self, roots: list[int], past_ms: int, future_ms: int) -> tuple[dict[int, list[int]], dict[int, int]]:
        """Past: a chain root's ancestors alive at past_ms (the chain's root then and the fragments merged since);
        future: a past id to the chain's root at future_ms when no split happened in between (merges only)."""
        past: dict[int, list[int]] = {}
        future: dict[int, int] = {}
        for root in (int(r) for r in roots):
            i = self.chain_neuron(root)
            life = self.lifetime_ms(root)
            if i is None or life is None:
                past[root] = [root] if life is not None and life[0] <= past_ms else []
                continue
            chain_index = root & ((1 << _ROOT_KIND_SHIFT) - 1)
            g0 = int(self.op_start[i])
            g1 = g0 + chain_index - int(self.chain_base[i])  # the edits that made this root
            found = [int(self.chain_root(np.array([i]), past_ms)[0])] if past_ms >= WORLD_START * 1000 else []
            found += [int(_root(ROOT_F, g)) for g in range(g0, g1) if self.op_merge[g] and self.op_ms[g] > past_ms]
            past[root] = sorted(found)
            times, merges = self.op_ms[g0 : g0 + int(self.k[i])], self.op_merge[g0 : g0 + int(self.k[i])]
            if merges[(times > past_ms) & (times <= future_ms)].all():
                later = int(self.chain_root(np.array([i]), future_ms)[0])
                future.update(dict.fromkeys(past[root], later))
        return past, future

    # ------------------------------------------------------------------ history
    def op_index(self, op_id: int) -> int | None:
        op_id = int(op_id)
        return int(self._g_of_id[op_id - 1]) if 1 <= op_id <= len(self._g_of_id) else None

    def operation(self, g: int) -> Operation:
        i, j = int(self.op_neuron[g]), int(self.op_j[g])
        base = int(self.chain_base[i])
        before_c, after_c = int(_root(ROOT_C, base + j)), int(_root(ROOT_C, base + j + 1))
        if self.op_merge[g]:
            before, after = (before_c, int(_root(ROOT_F, g))), (after_c,)
        else:
            before, after = (before_c,), (after_c, int(_root(ROOT_X, g)))
        p = tuple(int(v) for v in self.op_vx[g])
        a, b, _ = (int(x) for x in self.edit_supervoxels(g))
        return Operation(int(self.op_id[g]), int(self.op_ms[g]) / 1000.0, bool(self.op_merge[g]), before, after,
                         ((p[0] - 2, p[1], p[2]),), ((p[0] + 2, p[1], p[2]),), (a, b))  # fmt: skip

    def change_log(self, root: int, filtered: bool = True) -> list[dict]:
        """The lineage's edits of a root, oldest first (every edit here is relevant: `filtered` changes nothing)."""
        got = self._decode_root(root)
        if got is None or self.lifetime_ms(root) is None:
            return []
        kind, idx = got
        if kind == ROOT_C:
            i = int(self.chain_neuron(root))
            g0, last = int(self.op_start[i]), int(self.op_start[i]) + idx - int(self.chain_base[i])
        elif kind == ROOT_X:
            i = int(self.op_neuron[idx])
            g0, last = int(self.op_start[i]), idx + 1
        else:
            return []
        out = []
        for g in range(g0, last):
            op = self.operation(g)
            kept = [op.after[1]] if kind == ROOT_X and g == idx else [op.after[0]]
            out.append({"operation_id": op.operation_id, "timestamp": int(self.op_ms[g]), "user_id": 7,
                        "before_root_ids": list(op.before), "after_root_ids": kept, "is_merge": op.is_merge,
                        "user_name": "twin", "user_affiliation": "cb2-build twin"})  # fmt: skip
        return out

    # ------------------------------------------------------------------ level-2 graphs
    def level2_edges(self, neuron: int) -> list[list[int]]:
        """A neuron's level-2 graph: a branching walk through graph chunks from its soma (one node per chunk
        component, several per chunk where the walk returns), with a few short cycles, as real ones have."""
        n = int(self.l2_nodes[neuron])
        rng = np.random.default_rng([self.params.seed, neuron, 0x12])
        grid = (VOLUME_SIZE // ids.GRAPH_CHUNK_VX).astype(np.int64)
        parent = np.where(rng.random(n) < 0.9, np.arange(n) - 1, (rng.random(n) * np.arange(n)).astype(np.int64))
        parent[0] = -1
        steps = np.eye(3, dtype=np.int64)[rng.integers(0, 3, n)] * rng.choice([-1, 1], n)[:, None]
        chunk = np.empty((n, 3), dtype=np.int64)
        chunk[0] = (self.soma_vx[neuron] - VOXEL_OFFSET) // ids.GRAPH_CHUNK_VX
        for v in range(1, n):
            chunk[v] = np.clip(chunk[parent[v]] + steps[v], 0, grid - 1)
        base = int(self.l2_base[neuron])
        l2 = [ids.encode(2, int(c[0]), int(c[1]), int(c[2]), base + v) for v, c in enumerate(chunk)]
        edges = [[l2[int(parent[v])], l2[v]] for v in range(1, n)]
        grand = parent[np.maximum(parent, 0)]
        for v in np.flatnonzero((rng.random(n) < 0.03) & (parent >= 0) & (grand >= 0)):
            edges.append([l2[int(grand[v])], l2[int(v)]])  # a triangle: level-2 graphs are not trees
        return edges

    # ------------------------------------------------------------------ meshes: none here
    def fragment_rows(self, node_id: int) -> list[int]:
        return []

    def v1_fragments(self, node_id: int) -> list[str]:
        return []

    frag_l2: list = []
    frag_chunk: list = []
    frag_v1: list = []
    frag_v2: list = []
    frag_bytes: list = []

    # ------------------------------------------------------------------ materialized tables
    def version(self, number: int) -> Version | None:
        return next((v for v in self.versions if v.version == int(number)), None)

    def table(self, name: str, version: int) -> pa.Table | None:
        key = (name, int(version))
        with self._lock:
            if key in self._tables:
                return self._tables[key]
        v = self.version(version)
        if v is None or name not in ("proofread_neurons", "synapses"):
            return None
        t_ms = to_ms(v.timestamp)
        table = self._proofread(t_ms) if name == "proofread_neurons" else self._synapses(t_ms)
        with self._lock:
            self._tables[key] = table
        return table

    def _proofread(self, t_ms: int) -> pa.Table:
        n = self.params.neurons
        svs = self.anchor_supervoxels(np.arange(n))
        return pa.table({
            "id": pa.array(np.arange(1, n + 1), pa.int64()),
            "valid": pa.array(np.ones(n, bool)),
            "pt_supervoxel_id": pa.array(svs.astype(np.int64)),
            "pt_root_id": pa.array(self.roots_at(svs, t_ms).astype(np.int64)),
            "pt_position": _points(self.soma_vx),
        })  # fmt: skip

    def _synapses(self, t_ms: int) -> pa.Table:
        p = self.params
        rng = np.random.default_rng([p.seed, p.neurons, 0x5E])
        s = p.synapses
        pre = rng.integers(0, p.neurons, s)
        to_proofread = rng.random(s) < p.proofread_partner_fraction
        post_sv = np.where(to_proofread, self.anchor_supervoxels(rng.integers(0, p.neurons, s)),
                           _sv(SV_O, rng.integers(0, p.other_roots, s)))  # fmt: skip
        pre_sv = self.anchor_supervoxels(pre)
        ctr = VOXEL_OFFSET + (rng.random((s, 3)) * (VOLUME_SIZE - 8)).astype(np.int64) + 4
        cols = {
            "id": pa.array(np.arange(1, s + 1), pa.int64()),
            "valid": pa.array(np.ones(s, bool)),
            "pre_pt_supervoxel_id": pa.array(pre_sv.astype(np.int64)),
            "pre_pt_root_id": pa.array(self.roots_at(pre_sv, t_ms).astype(np.int64)),
            "post_pt_supervoxel_id": pa.array(post_sv.astype(np.int64)),
            "post_pt_root_id": pa.array(self.roots_at(post_sv, t_ms).astype(np.int64)),
            "pre_pt_position": _points(ctr - [2, 0, 0]),
            "post_pt_position": _points(ctr + [2, 0, 0]),
            "ctr_pt_position": _points(ctr),
            "cleft_score": pa.array(rng.integers(50, 200, s).astype(np.float64)),
            "connection_score": pa.array(rng.random(s) * 100.0),
        }
        return pa.table(cols)


def _points(vx: np.ndarray) -> pa.Array:
    flat = pa.array(np.asarray(vx, dtype=np.float64).ravel())
    return pa.FixedSizeListArray.from_arrays(flat, 3)
