"""The demo world's CAVE-shaped tables: their schemas, and their rows from the history and the sites' voxel work.

Rows are built here by pure functions, defects included (chosen in defects.py); world.py writes them.
Positions are nm at voxel centres, as a materialized CAVE table gives them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from core.samples import NEUROTRANSMITTERS
from pipeline.sources.demo_volume import RES
from sim.demo_world.blueprint import SiteBlueprint
from sim.demo_world.defects import Defects, Neuron
from sim.demo_world.history import History

TABLES = ("roots", "operations", "proofread_neurons", "synapses", "skeletons")

U64 = pa.uint64()
POINT = pa.list_(pa.float64())

OPERATIONS_SCHEMA = pa.schema(
    [
        ("operation_id", U64),
        ("timestamp", pa.int64()),
        ("is_merge", pa.bool_()),
        ("before_root_ids", pa.list_(U64)),
        ("after_root_ids", pa.list_(U64)),
        ("source_coords_vx", pa.list_(pa.list_(pa.int64()))),
        ("sink_coords_vx", pa.list_(pa.list_(pa.int64()))),
        ("site", pa.int32()),
    ]
)
PROOFREAD_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("pt_root_id", U64),
        ("pt_position_nm", POINT),
        ("valid", pa.bool_()),
        ("neuron_id", pa.int64()),
    ]
)
SYNAPSES_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("pre_pt_root_id", U64),
        ("post_pt_root_id", U64),
        ("pre_pt_supervoxel_id", U64),
        ("post_pt_supervoxel_id", U64),
        ("ctr_pt_position_nm", POINT),
        ("pre_pt_position_nm", POINT),
        ("post_pt_position_nm", POINT),
        ("cleft_score", pa.float64()),
        ("connection_score", pa.float64()),
        *[(nt, pa.float64()) for nt in NEUROTRANSMITTERS],
    ]
)
SKELETONS_SCHEMA = pa.schema(
    [
        ("root_id", U64),
        ("vertices_nm", pa.list_(POINT)),
        ("edges", pa.list_(pa.list_(pa.int64()))),
    ]
)


@dataclass(frozen=True)
class TableCounts:
    """What the summary reports of the tables written."""

    operation_rows: int
    proofread_neurons: int
    synapses: int
    synapses_between_proofread: int  # between two different proofread roots, before two lose a root
    null_synapses: list[int]  # the synapse ids written with a null root (a defect)


def roots_table(hist: History, plans: list[SiteBlueprint], sv_luts: dict[int, np.ndarray], nps: int) -> pa.Table:
    """Every root that ever existed, by id: its supervoxels, lifetime, site and the neurons it holds parts of."""
    rows = sorted(hist.roots.values(), key=lambda r: r.root_id)
    return pa.table(
        {
            "root_id": pa.array([r.root_id for r in rows], U64),
            "supervoxel_ids": pa.array([sv_luts[r.site][sorted(r.labels)].tolist() for r in rows], pa.list_(U64)),
            "created_ts": pa.array([r.created_ts for r in rows], pa.int64()),
            "expired_ts": pa.array([r.expired_ts for r in rows], pa.int64()),
            "site": pa.array([r.site for r in rows], pa.int32()),
            "neuron_ids": pa.array(
                [sorted({r.site * nps + int(plans[r.site].label_neuron[x]) for x in r.labels}) for r in rows],
                pa.list_(pa.int64()),
            ),
        }
    )


def operation_rows(hist: History, results: list[dict], defects: Defects) -> list[dict]:
    """One row per operation in time order, with its edit points on voxels; the defects: some rows without
    points, some twice."""
    rows = []
    for op in hist.ops:
        src, snk = results[op.site]["points"][op.plan_index]
        row = {
            "operation_id": op.operation_id,
            "timestamp": op.timestamp,
            "is_merge": op.is_merge,
            "before_root_ids": op.before_root_ids,
            "after_root_ids": op.after_root_ids,
            "source_coords_vx": [] if op.operation_id in defects.no_points else [src],
            "sink_coords_vx": [] if op.operation_id in defects.no_points else [snk],
            "site": op.site,
        }
        rows.append(row)
        if op.operation_id in defects.duplicated:
            rows.append(dict(row))
    return rows


def proofread_rows(neurons: list[Neuron], results: list[dict]) -> list[dict]:
    """One row per proofread neuron: its final root and a point on it (its tree root's voxel)."""
    rows = []
    for n in neurons:
        if n.proofread:
            anchor = np.array(results[n.site]["anchors"][n.k])
            rows.append(
                {
                    "id": len(rows) + 1,
                    "pt_root_id": n.root,
                    "pt_position_nm": ((anchor + 0.5) * RES).tolist(),
                    "valid": True,
                    "neuron_id": n.neuron_id,
                }
            )
    return rows


def synapse_rows(results: list[dict], hist: History, sv_luts: dict[int, np.ndarray]) -> list[dict]:
    """One row per synapse the sites found, site by site, with the final roots of its two sides."""
    rows = []
    for res in results:
        s = res["site"]
        for syn in res["synapses"]:
            pre_vx, post_vx = np.array(syn["pre_vx"]), np.array(syn["post_vx"])
            row = {
                "id": 1_000_001 + len(rows),
                "pre_pt_root_id": int(hist.final_lut[s][syn["pre_label"]]),
                "post_pt_root_id": int(hist.final_lut[s][syn["post_label"]]),
                "pre_pt_supervoxel_id": int(sv_luts[s][syn["pre_label"]]),
                "post_pt_supervoxel_id": int(sv_luts[s][syn["post_label"]]),
                "ctr_pt_position_nm": (((pre_vx + post_vx) / 2.0 + 0.5) * RES).tolist(),
                "pre_pt_position_nm": ((pre_vx + 0.5) * RES).tolist(),
                "post_pt_position_nm": ((post_vx + 0.5) * RES).tolist(),
                "cleft_score": syn["cleft_score"],
                "connection_score": syn["connection_score"],
            }
            row.update(zip(NEUROTRANSMITTERS, syn["nt"], strict=True))
            rows.append(row)
    return rows


def skeleton_rows(neurons: list[Neuron], plans: list[SiteBlueprint], starts: list[np.ndarray]) -> list[dict]:
    """The skeleton of every proofread neuron (its tree, in world nm), by root id."""
    rows = []
    for n in neurons:
        if not n.proofread:
            continue
        tree = plans[n.site].trees[n.k]
        rows.append(
            {
                "root_id": n.root,
                "vertices_nm": (tree.positions() + starts[n.site] * RES).tolist(),
                "edges": tree.edges().tolist(),
            }
        )
    rows.sort(key=lambda r: r["root_id"])
    return rows
