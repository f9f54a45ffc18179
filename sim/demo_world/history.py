"""The edit history of the demo world, as a chunkedgraph would have recorded it.

Initial roots (created at WORLD_START) are the plans' initial groups; ops are spread over
[OPS_START, AS_OF) at least 10 s apart, in a seeded order. Each op expires its before roots at its
timestamp T and creates its after roots at T: at T-1 the before state, at T the after state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.hashing import rng_for
from sim.demo_world.blueprint import SiteBlueprint

WORLD_START = 1733011200  # 2024-12-01T00:00:00Z: the initial roots
OPS_START = 1735689600  # 2025-01-01T00:00:00Z
AS_OF = 1780272000  # 2026-06-01T00:00:00Z (config/demo.yaml as_of)
ROOT_BASE = 10 << 56  # 720575940379279360: root ids look like 7205759403...
SV_BASE = 1 << 56


@dataclass
class Root:
    root_id: int
    site: int
    labels: frozenset[int]
    created_ts: int
    expired_ts: int | None = None


@dataclass
class Op:
    operation_id: int
    timestamp: int
    site: int
    plan_index: int  # index into the site plan's ops
    is_merge: bool
    before_root_ids: list[int]
    after_root_ids: list[int]
    lut_before: np.ndarray = field(repr=False)  # (n_labels + 1,) root of each site label at T-1


@dataclass
class History:
    roots: dict[int, Root]
    ops: list[Op]  # in time order
    final_lut: dict[int, np.ndarray]  # site -> root of each label at AS_OF


def supervoxel_ids(site: int, n_labels: int) -> np.ndarray:
    """Global supervoxel id of each site label (index 0 -> 0)."""
    out = np.zeros(n_labels + 1, dtype=np.uint64)
    out[1:] = np.uint64(SV_BASE) + np.uint64(site << 24) + np.arange(1, n_labels + 1, dtype=np.uint64)
    return out


def simulate(plans: list[SiteBlueprint], seed: int) -> History:
    rid_rng = rng_for("demo_world", seed, "root_ids")
    roots: dict[int, Root] = {}
    luts = {p.index: np.zeros(p.n_labels + 1, dtype=np.uint64) for p in plans}
    counter = [0]

    def new_root(site: int, labels: frozenset[int], ts: int) -> int:
        counter[0] += 1
        rid = ROOT_BASE + counter[0] * (1 << 24) + int(rid_rng.integers(0, 1 << 24))
        roots[rid] = Root(rid, site, labels, ts)
        luts[site][sorted(labels)] = rid
        return rid

    for plan in plans:
        for group in plan.initial_groups:
            new_root(plan.index, group, WORLD_START)

    todo = [(plan.index, k) for plan in plans for k in range(len(plan.ops))]
    rng = rng_for("demo_world", seed, "history")
    n_slots = (AS_OF - OPS_START) // 10 - 1
    slots = np.sort(rng.choice(n_slots, size=len(todo), replace=False))
    perm = rng.permutation(len(todo))
    by_site = {p.index: p for p in plans}
    ops: list[Op] = []
    op_id = 100_000 + int(rng.integers(0, 50_000))
    for m, slot in enumerate(slots):
        site, k = todo[perm[m]]
        plan, op = by_site[site], by_site[site].ops[k]
        ts = OPS_START + 10 * int(slot) + 3
        op_id += int(rng.integers(1, 40))
        lut = luts[site]
        before_lut = lut.copy()
        if op.kind == "merge":
            ra, rb = int(lut[op.key_label]), int(lut[op.snk_key_label])
            assert ra != rb, "a merge joins two different roots"
            before = [ra, rb]
            for r in before:
                roots[r].expired_ts = ts
            after = [new_root(site, roots[ra].labels | roots[rb].labels, ts)]
        else:
            r = int(lut[op.key_label])
            members = roots[r].labels
            i, j = op.neurons
            side_a = frozenset(x for x in members if plan.label_neuron[x] == i)
            side_b = members - side_a
            assert side_a and side_b and all(plan.label_neuron[x] == j for x in side_b)
            before = [r]
            roots[r].expired_ts = ts
            after = [new_root(site, side_a, ts), new_root(site, side_b, ts)]
        ops.append(Op(op_id, ts, site, k, op.kind == "merge", before, after, before_lut))
    return History(roots=roots, ops=ops, final_lut=luts)
