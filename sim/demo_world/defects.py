"""Who is proofread in the demo world, which edits lie in their history, and the defects planted there.

The pipeline draws its samples from the change log of proofread roots only, so the deliberate defects (an
operation without points, a duplicated operation row, a root without a mesh, a synapse without a root) are
chosen among exactly those: every one of them reaches the pipeline and must end in its ledger. All choices
are seeded draws (core.hashing); the defects and the null synapses share one stream, drawn in that
order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from core.hashing import unit_interval
from sim.demo_world.blueprint import SiteBlueprint
from sim.demo_world.history import History

PROOFREAD_FRACTION = 0.85


class Neuron(NamedTuple):
    """A true neuron: its site, its index in the site, its global id, its root at AS_OF, whether proofread."""

    site: int
    k: int
    neuron_id: int
    root: int
    proofread: bool


@dataclass(frozen=True)
class Defects:
    """The planted defects, by the ids the tables carry."""

    no_points: list[int]  # operation ids whose row has no source / sink coordinates
    duplicated: list[int]  # operation ids whose row appears twice
    no_mesh: list[int]  # root ids that get no mesh


def is_proofread(seed: int, site: int, k: int) -> bool:
    """Whether neuron k of `site` is in the proofread table: a seeded draw per neuron, so most of them are."""
    return unit_interval("demo_world", seed, "proofread", site, k) < PROOFREAD_FRACTION


def pick(rng: np.random.Generator, items: list, n: int, exclude: set) -> list:
    """n items not in `exclude`, drawn from `rng`, in the items' order."""
    pool = [x for x in items if x not in exclude]
    return [pool[int(i)] for i in sorted(rng.permutation(len(pool))[:n])] if pool else []


def true_neurons(plans: list[SiteBlueprint], hist: History, nps: int, seed: int) -> list[Neuron]:
    """Every neuron of every site, site by site, with its final root (the one root all its labels end in)."""
    neurons = []
    for plan in plans:
        for k in range(nps):
            labels = plan.neuron_labels(k)
            root = int(hist.final_lut[plan.index][min(labels)])
            assert all(int(hist.final_lut[plan.index][x]) == root for x in labels)
            neurons.append(Neuron(plan.index, k, plan.index * nps + k, root, is_proofread(seed, plan.index, k)))
    return neurons


def proofread_history(hist: History, neurons: list[Neuron]) -> set[int]:
    """The operation ids in the change log of a proofread root: the lineage of every final proofread root."""
    creator = {r: op for op in hist.ops for r in op.after_root_ids}
    in_history: set[int] = set()
    stack = [n.root for n in neurons if n.proofread]
    while stack:
        op = creator.get(stack.pop())
        if op is not None and op.operation_id not in in_history:
            in_history.add(op.operation_id)
            stack.extend(op.before_root_ids)
    return in_history


def final_proofread_roots(neurons: list[Neuron]) -> list[int]:
    return sorted({n.root for n in neurons if n.proofread})


def choose_defects(rng: np.random.Generator, hist: History, in_history: set[int], neurons: list[Neuron]) -> Defects:
    """One merge and one split without points, one of each duplicated, a merge's before root and a final
    proofread root without a mesh: each among the operations (roots) the pipeline will draw."""
    merges = [op.operation_id for op in hist.ops if op.is_merge and op.operation_id in in_history]
    splits = [op.operation_id for op in hist.ops if not op.is_merge and op.operation_id in in_history]
    no_points = pick(rng, merges, 1, set()) + pick(rng, splits, 1, set())
    duplicated = pick(rng, merges, 1, set(no_points)) + pick(rng, splits, 1, set(no_points))
    op_by_id = {op.operation_id: op for op in hist.ops}
    no_mesh: list[int] = []
    for op_id in pick(rng, merges, 1, set(no_points) | set(duplicated)):
        no_mesh.append(op_by_id[op_id].before_root_ids[0])
    no_mesh += pick(rng, final_proofread_roots(neurons), 1, set(no_mesh))
    return Defects(no_points, duplicated, no_mesh)


def choose_null_synapses(
    rng: np.random.Generator, syn_rows: list[dict], proofread_roots: set[int]
) -> tuple[list[int], list[int]]:
    """(the synapses between two different proofread roots, two of them to lose a root): drawn after the
    other defects, from the same stream."""
    good = [
        r["id"]
        for r in syn_rows
        if r["pre_pt_root_id"] in proofread_roots
        and r["post_pt_root_id"] in proofread_roots
        and r["pre_pt_root_id"] != r["post_pt_root_id"]
    ]
    return good, pick(rng, good, 2, set())


def null_synapse_roots(syn_rows: list[dict], null_syn: list[int]) -> None:
    """Drop the pre root of the first chosen synapse and the post root of the second (in place)."""
    for row in syn_rows:
        if null_syn and row["id"] == null_syn[0]:
            row["pre_pt_root_id"] = None
        elif len(null_syn) > 1 and row["id"] == null_syn[1]:
            row["post_pt_root_id"] = None
