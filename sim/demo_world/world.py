"""generate_world: the synthetic demo connectome, byte-identical for the same seed and size.

Layout of a world directory (see world.json for counts and the injected defects):
  em/                   CloudVolume precomputed image layer, uint8, gzip raw chunks
  segmentation/         CloudVolume precomputed segmentation layer, uint64 supervoxel ids
  segmentation/mesh/    legacy precomputed meshes, one per root id that ever existed (nm)
                        (a few neurons send a long axon across the volume: see longrange.py)
  tables/roots.parquet, operations.parquet, proofread_neurons.parquet, synapses.parquet,
        skeletons.parquet
  world.json            the summary, written last: its presence marks a complete world

Who is proofread and the planted defects: defects.py; the tables' rows and schemas: tables.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from cloudfiles import CloudFiles
from cloudfiles.compression import compress
from cloudvolume import CloudVolume
from cloudvolume import chunks as cv_chunks
from cloudvolume.lib import Bbox

from core.atomic import write_json, write_parquet
from core.hashing import rng_for
from core.release_schema import SPLIT_CUBE_NM
from core.samples import ADJACENT_CUTOUT_NM
from pipeline.sources.demo_volume import CHUNK, RES, VOLUME_SIZE, VOXEL_OFFSET
from sim.demo_world.blueprint import SITE_VX, SiteBlueprint, design_site, place_sites
from sim.demo_world.defects import (
    Defects,
    Neuron,
    choose_defects,
    choose_null_synapses,
    final_proofread_roots,
    is_proofread,
    null_synapse_roots,
    proofread_history,
    true_neurons,
)
from sim.demo_world.history import AS_OF, OPS_START, WORLD_START, History, simulate, supervoxel_ids
from sim.demo_world.longrange import (
    AxonSpec,
    OutsideChunkJob,
    capsule_boxes,
    capsules_near,
    chunks_outside_sites,
    long_neuron_sites,
    run_outside_chunk,
)
from sim.demo_world.site import SiteJob, run_site
from sim.demo_world.tables import (
    OPERATIONS_SCHEMA,
    PROOFREAD_SCHEMA,
    SKELETONS_SCHEMA,
    SYNAPSES_SCHEMA,
    TABLES,
    TableCounts,
    operation_rows,
    proofread_rows,
    roots_table,
    skeleton_rows,
    synapse_rows,
)

FORMAT = "cb2-demo-world/3"  # 2: long-range neurons; 3: resin chunks around the written ones


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


def create_layers(tmp: Path) -> None:
    """The EM and segmentation layers' info (and the legacy mesh dir's) in `tmp`, the demo volume's geometry."""
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


def _axon_specs(starts: list[np.ndarray], nps: int, seed: int) -> dict[int, AxonSpec]:
    """The long neuron of each chosen site: its first proofread neuron (so its junctions are sampled)."""
    boxes = [(s * RES, (s + SITE_VX) * RES) for s in starts]
    specs = {}
    for s in long_neuron_sites(len(starts), seed):
        proofread = [k for k in range(nps) if is_proofread(seed, s, k)]
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
) -> tuple[dict, list[dict], int, list[tuple[int, int, int]]]:
    """Rasterize, write and mesh the long axons outside every site box (chunk by chunk, in parallel over
    chunks; the results, gathered in chunk order, do not depend on the worker).

    Returns ({site: [(labels, vertices, faces)]}, a summary per long neuron, foreground voxels written, the
    chunks written).
    """
    capsules, sv_of, owner = _long_axon_capsules(plans, starts)
    if not capsules:
        return {}, [], 0, []
    sv_arr = np.array(sv_of, dtype=np.uint64)
    site_boxes = [(s, s + SITE_VX) for s in starts]
    chunks = chunks_outside_sites(capsules, RES, CHUNK, VOXEL_OFFSET, site_boxes)
    long_plans = [plan for plan in plans if plan.long_neuron >= 0]
    site_svs = {plan.index: np.unique(sv_arr[1:][np.array(owner) == plan.index]) for plan in long_plans}
    boxes = capsule_boxes(capsules, RES)
    near = [capsules_near(capsules, c, RES, CHUNK, VOXEL_OFFSET, boxes) for c in chunks]
    jobs = [OutsideChunkJob(seed, str(tmp), c, caps, sv_arr, site_svs) for c, caps in zip(chunks, near, strict=True)]
    results = _map(run_outside_chunk, jobs, workers)
    written = [tuple(r["chunk"]) for r in results if r["foreground"]]
    pieces, n_chunks, fg = _gather_pieces(results, site_svs)
    outside = {plan.index: [_outside_mesh(plan, pieces[plan.index])] for plan in long_plans}
    summary = [_long_neuron_summary(plan, starts[plan.index], n_chunks[plan.index]) for plan in long_plans]
    return outside, summary, fg, written


def _long_axon_capsules(plans: list[SiteBlueprint], starts: list[np.ndarray]) -> tuple[list, list, list[int]]:
    """The long axons' edges as capsules (global nm), each naming its supervoxel by index into the second
    list (index 0: no supervoxel), and the site that owns each capsule."""
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
    return capsules, sv_of, owner


def _gather_pieces(results: list[dict], site_svs: dict) -> tuple[dict[int, list], dict[int, int], int]:
    """Per site, its mesh pieces from every chunk (chunk order) and how many chunks had one; the foreground
    voxels written in all."""
    pieces: dict[int, list] = {s: [] for s in site_svs}
    n_chunks: dict[int, int] = {s: 0 for s in site_svs}
    fg = 0
    for res in results:
        fg += res["foreground"]
        for s, piece in res["pieces"].items():
            pieces[s].append(piece)
            n_chunks[s] += 1
    return pieces, n_chunks, fg


def _outside_mesh(plan: SiteBlueprint, pieces: list) -> tuple[frozenset[int], np.ndarray, np.ndarray]:
    """The long axon's labels and its chunk pieces joined into one mesh (faces re-indexed)."""
    verts, faces, base = [], [], 0
    for v, f in pieces:
        verts.append(v)
        faces.append(f + np.uint32(base))
        base += len(v)
    labels = frozenset(int(plan.edge_label[plan.long_neuron][c]) for c in plan.long_nodes)
    return labels, np.concatenate(verts), np.concatenate(faces)


def _long_neuron_summary(plan: SiteBlueprint, start: np.ndarray, n_chunks: int) -> dict:
    """world.json's entry for a long neuron: its extent in the volume and how far it leaves its site."""
    s, k = plan.index, plan.long_neuron
    skel = plan.trees[k].positions() + start * RES
    return {
        "site": s,
        "neuron_id": s * len(plan.trees) + k,
        "extent_nm": (skel.max(axis=0) - skel.min(axis=0)).round(1).tolist(),
        "diagonal_nm": round(float(np.linalg.norm(skel.max(axis=0) - skel.min(axis=0))), 1),
        "axon_nodes": len(plan.long_nodes),
        "chunks_outside_sites": n_chunks,
    }


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


def write_resin(tmp: Path, resin: list[tuple[int, int, int]], num_threads: int = 20) -> None:
    """Every resin chunk of both layers. A resin chunk is constant, so its encoded, gzipped bytes depend only
    on its shape: each shape is encoded once by CloudVolume's own codec and the same bytes are put under
    each chunk's name (byte-identical to writing each chunk through CloudVolume, in a fraction of the time).
    `num_threads`: CloudFiles' upload threads (0: in this thread, for a world of a few chunks)."""
    for layer, value, dtype in (("em", RESIN_EM, np.uint8), ("segmentation", 0, np.uint64)):
        cv = CloudVolume(f"file://{tmp}/{layer}", progress=False)
        blobs: dict[tuple[int, ...], bytes] = {}
        files = []
        for chunk in resin:
            lo = VOXEL_OFFSET + np.asarray(chunk) * CHUNK
            hi = np.minimum(lo + CHUNK, VOXEL_OFFSET + VOLUME_SIZE)
            shape = tuple(int(b - a) for a, b in zip(lo, hi, strict=True))
            if shape not in blobs:
                raw = cv_chunks.encode(np.full((*shape, 1), value, dtype), cv.meta.encoding(0))
                blobs[shape] = compress(raw, "gzip")
            files.append((Bbox(lo, hi).to_filename(), blobs[shape]))
        CloudFiles(f"file://{tmp}/{layer}/{cv.meta.key(0)}", num_threads=num_threads).puts(
            files, compress="gzip", raw=True, progress=False
        )


@dataclass(frozen=True)
class _Simulated:
    """The world as planned and simulated, before any voxel: site corners, plans, the edit history, its true
    neurons, and the operations in the change log of a proofread root (what the pipeline can draw)."""

    nps: int  # neurons per site
    starts: list[np.ndarray]
    plans: list[SiteBlueprint]
    hist: History
    neurons: list[Neuron]
    in_history: set[int]


@dataclass(frozen=True)
class _Voxels:
    """What the voxel work returns: each site's run_site answer (in site order), a summary per long neuron,
    the foreground voxels written outside the sites, and the number of resin chunks."""

    results: list[dict]
    long_summary: list[dict]
    fg_outside: int
    n_resin: int


def _generate(tmp: Path, n_sites: int, nps: int, seed: int, workers: int | None) -> dict:
    """Plan and simulate the world, plant the defects, write the voxels, then the tables, then world.json (last:
    its presence marks a complete world)."""
    world = _simulate(n_sites, nps, seed)
    rng = rng_for("demo_world", seed, "defects")  # one stream: the defects here, the null synapses with the tables
    defects = choose_defects(rng, world.hist, world.in_history, world.neurons)
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if n_sites >= 8 else 1
    voxels = _write_voxels(tmp, world, defects.no_mesh, seed, workers)
    counts = _write_tables(tmp / "tables", rng, world, voxels.results, defects)
    summary = _summary(tmp, {"n_sites": n_sites, "neurons_per_site": nps, "seed": seed}, world, defects, voxels, counts)
    write_json(tmp / "world.json", summary)
    return summary


def _simulate(n_sites: int, nps: int, seed: int) -> _Simulated:
    """Place the sites, plan each one (a long axon for a few), simulate the edit history, find who is proofread."""
    starts = place_sites(n_sites, seed)
    specs = _axon_specs(starts, nps, seed)
    plans = [design_site(seed, s, starts[s], nps, specs.get(s)) for s in range(n_sites)]
    hist: History = simulate(plans, seed)
    neurons = true_neurons(plans, hist, nps, seed)
    return _Simulated(nps, starts, plans, hist, neurons, proofread_history(hist, neurons))


def _site_job(plan: SiteBlueprint, hist: History, no_mesh: list[int], seed: int, tmp: Path, outside: dict) -> SiteJob:
    """The voxel work of one site: its roots (but the meshless defects), its merges' T-1 lookup tables and the
    parts of its long axon outside every site."""
    site_roots = [(rid, r.labels) for rid, r in sorted(hist.roots.items()) if r.site == plan.index]
    merge_luts = {
        op.plan_index: (op.lut_before, op.before_root_ids) for op in hist.ops if op.site == plan.index and op.is_merge
    }
    kept = [x for x in site_roots if x[0] not in no_mesh]
    return SiteJob(plan, seed, str(tmp), kept, merge_luts, outside.get(plan.index, []))


def _write_voxels(tmp: Path, world: _Simulated, no_mesh: list[int], seed: int, workers: int) -> _Voxels:
    """Create the two layers, then write the long axons outside the sites, every site, and the resin around
    all of it (parallel over sites and chunks; results do not depend on the worker)."""
    create_layers(tmp)
    outside, long_summary, fg_outside, outside_chunks = _write_outside(tmp, world.plans, world.starts, seed, workers)
    jobs = [_site_job(plan, world.hist, no_mesh, seed, tmp, outside) for plan in world.plans]
    results = _map(run_site, jobs, workers)
    resin = resin_chunks(_site_chunks(world.starts) | set(outside_chunks))
    write_resin(tmp, resin)
    return _Voxels(results, long_summary, fg_outside, len(resin))


def _write_tables(
    tables_dir: Path, rng: np.random.Generator, world: _Simulated, results: list[dict], defects: Defects
) -> TableCounts:
    """Write the five tables; `rng` (the defects' stream) draws the two synapses that lose a root."""
    plans, hist, neurons = world.plans, world.hist, world.neurons
    sv_luts = {plan.index: supervoxel_ids(plan.index, plan.n_labels) for plan in plans}
    write_parquet(tables_dir / "roots.parquet", roots_table(hist, plans, sv_luts, world.nps))
    ops = operation_rows(hist, results, defects)
    write_parquet(tables_dir / "operations.parquet", pa.Table.from_pylist(ops, schema=OPERATIONS_SCHEMA))
    proofread = proofread_rows(neurons, results)
    write_parquet(tables_dir / "proofread_neurons.parquet", pa.Table.from_pylist(proofread, schema=PROOFREAD_SCHEMA))
    synapses = synapse_rows(results, hist, sv_luts)
    good, null_syn = choose_null_synapses(rng, synapses, set(final_proofread_roots(neurons)))
    null_synapse_roots(synapses, null_syn)
    write_parquet(tables_dir / "synapses.parquet", pa.Table.from_pylist(synapses, schema=SYNAPSES_SCHEMA))
    skeletons = skeleton_rows(neurons, plans, world.starts)
    write_parquet(tables_dir / "skeletons.parquet", pa.Table.from_pylist(skeletons, schema=SKELETONS_SCHEMA))
    return TableCounts(len(ops), len(proofread), len(synapses), len(good), null_syn)


def _geometry(starts: list[np.ndarray]) -> dict:
    return {
        "resolution_nm": RES.tolist(),
        "voxel_offset": VOXEL_OFFSET.tolist(),
        "volume_size": VOLUME_SIZE.tolist(),
        "chunk_size": CHUNK.tolist(),
        "site_size_vx": SITE_VX.tolist(),
        "bbox_nm": [(VOXEL_OFFSET * RES).tolist(), ((VOXEL_OFFSET + VOLUME_SIZE) * RES).tolist()],
        "cube_nm": SPLIT_CUBE_NM,
        "sites_vx": [s.tolist() for s in starts],
    }


def _proofread_junctions(world: _Simulated) -> int:
    """Nodes of degree >= 3 over the proofread neurons' skeletons: the junction controls on offer."""
    return sum(int((world.plans[n.site].trees[n.k].degree() >= 3).sum()) for n in world.neurons if n.proofread)


def _counts(world: _Simulated, no_points: list[int], voxels: _Voxels, tables: TableCounts) -> dict:
    """What the pipeline can draw from this world (and what it is made of); files are counted by _summary."""
    hist, results = world.hist, voxels.results
    eligible = {op.operation_id for op in hist.ops if op.operation_id in world.in_history}
    with_points = eligible - set(no_points)
    adjacent_controls = sum(
        min(3, len(results[op.site]["adjacent"][op.plan_index]))
        for op in hist.ops
        if op.is_merge and op.operation_id in with_points
    )
    return {
        "sites": len(world.plans),
        "neurons": len(world.neurons),
        "supervoxels": sum(p.n_labels for p in world.plans),
        "roots": len(hist.roots),
        "operations": len(hist.ops),
        "merge_operations": sum(op.is_merge for op in hist.ops),
        "split_operations": sum(not op.is_merge for op in hist.ops),
        "operation_rows": tables.operation_rows,
        "merge_operations_with_points_in_proofread_history": sum(
            op.is_merge and op.operation_id in with_points for op in hist.ops
        ),
        "split_operations_with_points_in_proofread_history": sum(
            not op.is_merge and op.operation_id in with_points for op in hist.ops
        ),
        "adjacent_controls_max3_per_merge": adjacent_controls,
        "proofread_neurons": tables.proofread_neurons,
        "proofread_junctions_deg3": _proofread_junctions(world),
        "synapses": tables.synapses,
        "synapses_between_proofread_neurons": tables.synapses_between_proofread - len(tables.null_synapses),
        "edit_points_exact_moved_unresolved": np.sum([r["point_status"] for r in results], axis=0).tolist(),
        "adjacent_cutout_nm": ADJACENT_CUTOUT_NM,
        "foreground_voxels": sum(r["foreground_voxels"] for r in results) + voxels.fg_outside,
        "long_neurons": len(voxels.long_summary),
        "resin_chunks": voxels.n_resin,
    }


def _summary(
    tmp: Path, parameters: dict, world: _Simulated, defects: Defects, voxels: _Voxels, tables: TableCounts
) -> dict:
    """world.json: parameters, geometry, times, counts (files and bytes as written so far), defects, long neurons."""
    final_root = {n.neuron_id: n.root for n in world.neurons}
    long_summary = [{**item, "root_id": final_root[item["neuron_id"]]} for item in voxels.long_summary]
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    counts = _counts(world, defects.no_points, voxels, tables)
    counts["files"] = len(files)
    counts["bytes_on_disk"] = sum(p.stat().st_size for p in files)
    return {
        "format": FORMAT,
        "parameters": parameters,
        "geometry": _geometry(world.starts),
        "time": {"world_start": WORLD_START, "ops_start": OPS_START, "as_of": AS_OF},
        "counts": counts,
        "defects": {
            "operations_without_points": defects.no_points,
            "duplicated_operation_rows": defects.duplicated,
            "synapses_with_null_root": tables.null_synapses,
            "roots_without_mesh": defects.no_mesh,
        },
        "long_neurons": long_summary,
        "tables": {name: f"tables/{name}.parquet" for name in TABLES},
    }
