"""generate_world: the synthetic demo connectome, byte-identical for the same seed and size.

Layout of a world directory (see world.json for counts and the injected defects):
  em/                   CloudVolume precomputed image layer, uint8, gzip raw chunks
  segmentation/         CloudVolume precomputed segmentation layer, uint64 supervoxel ids
  segmentation/mesh/    legacy precomputed meshes, one per root id that ever existed (nm)
                        (a few neurons send a long axon across the volume: see longrange.py)
  tables/roots.parquet, operations.parquet, proofread_neurons.parquet, synapses.parquet,
        skeletons.parquet
  world.json            the summary, written last: its presence marks a complete world
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
from cloudvolume import CloudVolume

from pipeline.core.atomic import write_json, write_parquet
from pipeline.core.hashing import rng_for, unit_interval
from pipeline.demo_world.history import AS_OF, OPS_START, WORLD_START, History, simulate, supervoxel_ids
from pipeline.demo_world.longrange import (
    AxonSpec,
    OutsideChunkJob,
    capsules_near,
    chunks_outside_sites,
    long_neuron_sites,
    run_outside_chunk,
)
from pipeline.demo_world.plan import CHUNK, CUBE_NM, RES, SITE_VX, VOLUME_SIZE, VOXEL_OFFSET, place_sites, plan_site
from pipeline.demo_world.site import ADJ_CUTOUT_NM, SiteJob, run_site

FORMAT = "cb2-demo-world/3"  # 2: long-range neurons; 3: resin chunks around the written ones
PROOFREAD_FRACTION = 0.85
NEUROTRANSMITTERS = ("gaba", "ach", "glut", "oct", "ser", "da")
TABLES = ("roots", "operations", "proofread_neurons", "synapses", "skeletons")

U64 = pa.uint64()
POINT = pa.list_(pa.float64())


def world_is_complete(world_dir: str | os.PathLike) -> bool:
    """True iff world_dir holds a finished world (its world.json parses and names this format)."""
    path = Path(world_dir) / "world.json"
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


def generate_world(
    world_dir: str | os.PathLike, n_sites: int, neurons_per_site: int, seed: int, workers: int | None = None
) -> dict:
    """Generate the world into a temp dir beside world_dir, then rename it into place (replacing any
    previous one). Returns the summary also written to world.json."""
    if n_sites < 1 or neurons_per_site < 2:
        raise ValueError("need n_sites >= 1 and neurons_per_site >= 2")
    world_dir = Path(world_dir).resolve()
    world_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in world_dir.parent.glob(f".{world_dir.name}.partial-*"):  # left by a killed generator
        if not _pid_alive(stale.name.rsplit("-", 1)[-1]):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = world_dir.parent / f".{world_dir.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        summary = _generate(tmp, n_sites, neurons_per_site, seed, workers)
        if world_dir.exists():
            shutil.rmtree(world_dir)
        os.replace(tmp, world_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _pid_alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def _create_layers(tmp: Path) -> None:
    common = {
        "num_channels": 1,
        "encoding": "raw",
        "resolution": [int(x) for x in RES],
        "voxel_offset": VOXEL_OFFSET.tolist(),
        "volume_size": VOLUME_SIZE.tolist(),
        "chunk_size": CHUNK.tolist(),
    }
    em_info = CloudVolume.create_new_info(layer_type="image", data_type="uint8", **common)
    CloudVolume(f"file://{tmp}/em", info=em_info, progress=False).commit_info()
    seg_info = CloudVolume.create_new_info(layer_type="segmentation", data_type="uint64", mesh="mesh", **common)
    seg = CloudVolume(f"file://{tmp}/segmentation", info=seg_info, progress=False)
    seg.commit_info()
    seg.mesh.meta.commit_info()


def _map(fn, jobs: list, workers: int) -> list:  # noqa: ANN001
    """fn over jobs, in order, in `workers` forked processes (1: here)."""
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(fn, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    return [fn(job) for job in jobs]


def _pick(rng: np.random.Generator, items: list, n: int, exclude: set) -> list:
    pool = [x for x in items if x not in exclude]
    return [pool[int(i)] for i in sorted(rng.permutation(len(pool))[:n])] if pool else []


def _axon_specs(starts: list[np.ndarray], nps: int, seed: int) -> dict[int, AxonSpec]:
    """The long neuron of each chosen site: its first proofread neuron (so its junctions are sampled)."""
    boxes = [(s * RES, (s + SITE_VX) * RES) for s in starts]
    specs = {}
    for s in long_neuron_sites(len(starts), seed):
        proofread = [k for k in range(nps) if unit_interval("demo_world", seed, "proofread", s, k) < PROOFREAD_FRACTION]
        specs[s] = AxonSpec(
            neuron=proofread[0] if proofread else 0,
            site_lo_nm=boxes[s][0],
            site_hi_nm=boxes[s][1],
            avoid_nm=tuple(b for i, b in enumerate(boxes) if i != s),
            volume_lo_nm=VOXEL_OFFSET * RES,
            volume_hi_nm=(VOXEL_OFFSET + VOLUME_SIZE) * RES,
        )
    return specs


def _write_outside(
    tmp: Path, plans: list, starts: list[np.ndarray], seed: int, workers: int
) -> tuple[dict, list[dict], int]:
    """Rasterize, write and mesh the long axons outside every site box (chunk by chunk, in parallel over
    chunks; the results, gathered in chunk order, do not depend on the worker).

    Returns ({site: [(labels, vertices, faces)]}, a summary per long neuron, foreground voxels written, the
    chunks written).
    """
    capsules, sv_of, owner = [], [np.uint64(0)], []
    for plan in plans:
        if plan.long_neuron < 0:
            continue
        k, tree = plan.long_neuron, plan.trees[plan.long_neuron]
        pos = tree.positions() + starts[plan.index] * RES
        luts = supervoxel_ids(plan.index, plan.n_labels)
        for c in plan.long_nodes:
            p = tree.parent[c]
            capsules.append((pos[p], pos[c], tree.radius[p], tree.radius[c], len(sv_of)))
            sv_of.append(luts[int(plan.edge_label[k][c])])
            owner.append(plan.index)
    if not capsules:
        return {}, [], 0, []
    sv_arr = np.array(sv_of, dtype=np.uint64)
    site_boxes = [(s, s + SITE_VX) for s in starts]
    chunks = chunks_outside_sites(capsules, RES, CHUNK, VOXEL_OFFSET, site_boxes)
    site_svs = {
        plan.index: np.unique(sv_arr[1:][np.array(owner) == plan.index]) for plan in plans if plan.long_neuron >= 0
    }
    jobs = [
        OutsideChunkJob(seed, str(tmp), c, capsules_near(capsules, c, RES, CHUNK, VOXEL_OFFSET), sv_arr, site_svs)
        for c in chunks
    ]
    results = _map(run_outside_chunk, jobs, workers)
    written = [tuple(r["chunk"]) for r in results if r["foreground"]]
    pieces: dict[int, list] = {s: [] for s in site_svs}
    n_chunks: dict[int, int] = {s: 0 for s in site_svs}
    fg = 0
    for res in results:
        fg += res["foreground"]
        for s, piece in res["pieces"].items():
            pieces[s].append(piece)
            n_chunks[s] += 1
    outside, summary = {}, []
    for plan in plans:
        if plan.long_neuron < 0:
            continue
        s, k = plan.index, plan.long_neuron
        verts, faces, base = [], [], 0
        for v, f in pieces[s]:
            verts.append(v)
            faces.append(f + np.uint32(base))
            base += len(v)
        labels = frozenset(int(plan.edge_label[k][c]) for c in plan.long_nodes)
        outside[s] = [(labels, np.concatenate(verts), np.concatenate(faces))]
        skel = plan.trees[k].positions() + starts[s] * RES
        summary.append(
            {
                "site": s,
                "neuron_id": s * len(plan.trees) + k,
                "extent_nm": (skel.max(axis=0) - skel.min(axis=0)).round(1).tolist(),
                "diagonal_nm": round(float(np.linalg.norm(skel.max(axis=0) - skel.min(axis=0))), 1),
                "axon_nodes": len(plan.long_nodes),
                "chunks_outside_sites": n_chunks[s],
            }
        )
    return outside, summary, fg, written


def _site_chunks(starts: list[np.ndarray]) -> set[tuple[int, int, int]]:
    out = set()
    for start in starts:
        first = (np.asarray(start) - VOXEL_OFFSET) // CHUNK
        for c in np.ndindex(*(SITE_VX // CHUNK)):
            out.add(tuple(int(x) for x in first + np.array(c)))
    return out


def resin_chunks(written: set[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """The chunks next to a written one (26-neighbourhood) that nothing wrote, inside the volume: the demo's
    tissue ends in resin there, so a cutout near a site's edge reads data, not absent chunks."""
    n_chunks = -(-VOLUME_SIZE // CHUNK)
    out = set()
    for c in written:
        for d in np.ndindex(3, 3, 3):
            n = tuple(int(x) for x in np.asarray(c) + np.asarray(d) - 1)
            if n not in written and all(0 <= n[a] < n_chunks[a] for a in range(3)):
                out.add(n)
    return sorted(out)


RESIN_EM = 112  # the demo EM's extracellular grey (demo_world.em): embedding resin, no segment


def _write_resin(job: tuple[str, tuple[int, int, int]]) -> None:
    tmp, chunk = job
    lo = VOXEL_OFFSET + np.asarray(chunk) * CHUNK
    hi = np.minimum(lo + CHUNK, VOXEL_OFFSET + VOLUME_SIZE)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    shape = tuple(int(b - a) for a, b in zip(lo, hi, strict=True))
    CloudVolume(f"file://{tmp}/em", progress=False, compress="gzip")[box] = np.full(shape, RESIN_EM, np.uint8)
    CloudVolume(f"file://{tmp}/segmentation", progress=False, compress="gzip")[box] = np.zeros(shape, np.uint64)


def _generate(tmp: Path, n_sites: int, nps: int, seed: int, workers: int | None) -> dict:
    starts = place_sites(n_sites, seed)
    specs = _axon_specs(starts, nps, seed)
    plans = [plan_site(seed, s, starts[s], nps, specs.get(s)) for s in range(n_sites)]
    hist: History = simulate(plans, seed)

    # Proofread neurons: most true neurons, by their final root.
    neurons = []  # (site, k, global id, final root, proofread)
    for plan in plans:
        for k in range(nps):
            labels = plan.neuron_labels(k)
            root = int(hist.final_lut[plan.index][min(labels)])
            assert all(int(hist.final_lut[plan.index][x]) == root for x in labels)
            proofread = unit_interval("demo_world", seed, "proofread", plan.index, k) < PROOFREAD_FRACTION
            neurons.append((plan.index, k, plan.index * nps + k, root, proofread))
    # Ops in the change log of a proofread root: the lineage of every final proofread root.
    creator = {r: op for op in hist.ops for r in op.after_root_ids}
    in_history: set[int] = set()
    stack = [r for *_, r, pr in neurons if pr]
    while stack:
        op = creator.get(stack.pop())
        if op is not None and op.operation_id not in in_history:
            in_history.add(op.operation_id)
            stack.extend(op.before_root_ids)

    def in_proofread_history(op) -> bool:
        return op.operation_id in in_history

    # Deliberate defects (deterministic).
    rng = rng_for("demo_world", seed, "defects")
    merges = [op.operation_id for op in hist.ops if op.is_merge and in_proofread_history(op)]
    splits = [op.operation_id for op in hist.ops if not op.is_merge and in_proofread_history(op)]
    no_points = _pick(rng, merges, 1, set()) + _pick(rng, splits, 1, set())
    duplicated = _pick(rng, merges, 1, set(no_points)) + _pick(rng, splits, 1, set(no_points))
    op_by_id = {op.operation_id: op for op in hist.ops}
    no_mesh: list[int] = []
    for op_id in _pick(rng, merges, 1, set(no_points) | set(duplicated)):
        no_mesh.append(op_by_id[op_id].before_root_ids[0])
    final_proofread = sorted({r for *_, r, pr in neurons if pr})
    no_mesh += _pick(rng, final_proofread, 1, set(no_mesh))

    # Voxel work per site (parallel over sites; results do not depend on the worker).
    _create_layers(tmp)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if n_sites >= 8 else 1
    outside, long_summary, fg_outside, outside_chunks = _write_outside(tmp, plans, starts, seed, workers)
    jobs = []
    for plan in plans:
        site_roots = [(rid, r.labels) for rid, r in sorted(hist.roots.items()) if r.site == plan.index]
        merge_luts = {
            op.plan_index: (op.lut_before, op.before_root_ids)
            for op in hist.ops
            if op.site == plan.index and op.is_merge
        }
        kept = [x for x in site_roots if x[0] not in no_mesh]
        jobs.append(SiteJob(plan, seed, str(tmp), kept, merge_luts, outside.get(plan.index, [])))
    results = _map(run_site, jobs, workers)
    resin = resin_chunks(_site_chunks(starts) | set(outside_chunks))
    _map(_write_resin, [(str(tmp), c) for c in resin], workers)

    # Tables.
    tables_dir = tmp / "tables"
    sv_luts = {plan.index: supervoxel_ids(plan.index, plan.n_labels) for plan in plans}
    rows = sorted(hist.roots.values(), key=lambda r: r.root_id)
    write_parquet(
        tables_dir / "roots.parquet",
        pa.table(
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
        ),
    )

    op_rows = []
    for op in hist.ops:
        src, snk = results[op.site]["points"][op.plan_index]
        row = {
            "operation_id": op.operation_id,
            "timestamp": op.timestamp,
            "is_merge": op.is_merge,
            "before_root_ids": op.before_root_ids,
            "after_root_ids": op.after_root_ids,
            "source_coords_vx": [] if op.operation_id in no_points else [src],
            "sink_coords_vx": [] if op.operation_id in no_points else [snk],
            "site": op.site,
        }
        op_rows.append(row)
        if op.operation_id in duplicated:
            op_rows.append(dict(row))
    write_parquet(
        tables_dir / "operations.parquet",
        pa.Table.from_pylist(
            op_rows,
            schema=pa.schema(
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
            ),
        ),
    )

    pr_rows = []
    for s, k, gid, root, pr in neurons:
        if pr:
            anchor = np.array(results[s]["anchors"][k])
            pr_rows.append(
                {
                    "id": len(pr_rows) + 1,
                    "pt_root_id": root,
                    "pt_position_nm": ((anchor + 0.5) * RES).tolist(),
                    "valid": True,
                    "neuron_id": gid,
                }
            )
    write_parquet(
        tables_dir / "proofread_neurons.parquet",
        pa.Table.from_pylist(
            pr_rows,
            schema=pa.schema(
                [
                    ("id", pa.int64()),
                    ("pt_root_id", U64),
                    ("pt_position_nm", POINT),
                    ("valid", pa.bool_()),
                    ("neuron_id", pa.int64()),
                ]
            ),
        ),
    )

    syn_rows = []
    for res in results:
        s = res["site"]
        for syn in res["synapses"]:
            pre_vx, post_vx = np.array(syn["pre_vx"]), np.array(syn["post_vx"])
            row = {
                "id": 1_000_001 + len(syn_rows),
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
            syn_rows.append(row)
    proofread_roots = set(final_proofread)
    good_syn = [
        r["id"]
        for r in syn_rows
        if r["pre_pt_root_id"] in proofread_roots
        and r["post_pt_root_id"] in proofread_roots
        and r["pre_pt_root_id"] != r["post_pt_root_id"]
    ]
    null_syn = _pick(rng, good_syn, 2, set())
    for row in syn_rows:
        if null_syn and row["id"] == null_syn[0]:
            row["pre_pt_root_id"] = None
        elif len(null_syn) > 1 and row["id"] == null_syn[1]:
            row["post_pt_root_id"] = None
    write_parquet(
        tables_dir / "synapses.parquet",
        pa.Table.from_pylist(
            syn_rows,
            schema=pa.schema(
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
            ),
        ),
    )

    skel_rows, n_junctions = [], 0
    for s, k, _gid, root, pr in neurons:
        if not pr:
            continue
        tree = plans[s].trees[k]
        n_junctions += int((tree.degree() >= 3).sum())
        skel_rows.append(
            {
                "root_id": root,
                "vertices_nm": (tree.positions() + starts[s] * RES).tolist(),
                "edges": tree.edges().tolist(),
            }
        )
    skel_rows.sort(key=lambda r: r["root_id"])
    write_parquet(
        tables_dir / "skeletons.parquet",
        pa.Table.from_pylist(
            skel_rows,
            schema=pa.schema(
                [
                    ("root_id", U64),
                    ("vertices_nm", pa.list_(POINT)),
                    ("edges", pa.list_(pa.list_(pa.int64()))),
                ]
            ),
        ),
    )

    final_root = {gid: root for _s, _k, gid, root, _pr in neurons}
    for item in long_summary:
        item["root_id"] = final_root[item["neuron_id"]]

    # Counts: what the pipeline can draw from this world.
    eligible = {op.operation_id for op in hist.ops if in_proofread_history(op)}
    with_points = eligible - set(no_points)
    adjacent_controls = sum(
        min(3, len(results[op.site]["adjacent"][op.plan_index]))
        for op in hist.ops
        if op.is_merge and op.operation_id in with_points
    )
    status = np.sum([r["point_status"] for r in results], axis=0).tolist()
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    summary = {
        "format": FORMAT,
        "parameters": {"n_sites": n_sites, "neurons_per_site": nps, "seed": seed},
        "geometry": {
            "resolution_nm": RES.tolist(),
            "voxel_offset": VOXEL_OFFSET.tolist(),
            "volume_size": VOLUME_SIZE.tolist(),
            "chunk_size": CHUNK.tolist(),
            "site_size_vx": SITE_VX.tolist(),
            "bbox_nm": [(VOXEL_OFFSET * RES).tolist(), ((VOXEL_OFFSET + VOLUME_SIZE) * RES).tolist()],
            "cube_nm": CUBE_NM,
            "sites_vx": [s.tolist() for s in starts],
        },
        "time": {"world_start": WORLD_START, "ops_start": OPS_START, "as_of": AS_OF},
        "counts": {
            "sites": n_sites,
            "neurons": len(neurons),
            "supervoxels": sum(p.n_labels for p in plans),
            "roots": len(hist.roots),
            "operations": len(hist.ops),
            "merge_operations": sum(op.is_merge for op in hist.ops),
            "split_operations": sum(not op.is_merge for op in hist.ops),
            "operation_rows": len(op_rows),
            "merge_operations_with_points_in_proofread_history": sum(
                op.is_merge and op.operation_id in with_points for op in hist.ops
            ),
            "split_operations_with_points_in_proofread_history": sum(
                not op.is_merge and op.operation_id in with_points for op in hist.ops
            ),
            "adjacent_controls_max3_per_merge": adjacent_controls,
            "proofread_neurons": len(pr_rows),
            "proofread_junctions_deg3": n_junctions,
            "synapses": len(syn_rows),
            "synapses_between_proofread_neurons": len(good_syn) - len(null_syn),
            "edit_points_exact_moved_unresolved": status,
            "adjacent_cutout_nm": ADJ_CUTOUT_NM,
            "foreground_voxels": sum(r["foreground_voxels"] for r in results) + fg_outside,
            "long_neurons": len(long_summary),
            "resin_chunks": len(resin),
            "files": len(files),
            "bytes_on_disk": sum(p.stat().st_size for p in files),
        },
        "defects": {
            "operations_without_points": no_points,
            "duplicated_operation_rows": duplicated,
            "synapses_with_null_root": null_syn,
            "roots_without_mesh": no_mesh,
        },
        "long_neurons": long_summary,
        "tables": {name: f"tables/{name}.parquet" for name in TABLES},
    }
    write_json(tmp / "world.json", summary)
    return summary
