"""Requests and bytes per sample through CaveSource against the twin (v1 and v2), by sample type, and
the mesh bytes a sample downloads against the bytes of the level-2 fragments that intersect its crop box
(on v1, edited neurons' manifests list stitched layer 3-4 fragments covering 8-64 level-2 chunks: the
samples that read one are counted and their ratio shown apart).

Counted from the twin's request log, in the same run, for the same bank rows on both flavours:
- per sample, fetched alone (fetch_sample with its own bounded mesh fetches);
- per sample, fetched by partitions of `partition_rows` (PartitionMeshes: each root once per partition);
- beside them, the baseline of the code before bounded fetches: every mesh whole (its fragments' bytes).

    .venv/bin/python -m benchmarks.bench_twin [--per-type 10]
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from urllib.parse import unquote

import numpy as np
import pyarrow.parquet as pq

from benchmarks.common import demo_context
from core.errors import SampleError
from pipeline.runner import run_stage
from pipeline.sources.cave import CaveSource
from pipeline.sources.retrying import RetryingSource
from pipeline.stages.fetch_meshes import PartitionMeshes, mesh_roots
from pipeline.stages.fetch_sample import crop_box_half_nm, fetch_sample
from pipeline.stages.species import species_graph
from sim.demo_world import ensure_world
from sim.twin import TOKEN, ids, serve_twin
from sim.twin.species import twin_config

MESH_PATHS = ("_meshes/",)  # the twin's mesh directories under the bucket (v1 and v2)


def pick(bank: list[dict], per_type: int, long_roots: set[int]) -> list[dict]:
    """`per_type` rows of each type (bank order: hashed), plus every row on a long neuron."""
    seen: dict[str, int] = defaultdict(int)
    rows = []
    for row in bank:
        on_long = bool(long_roots & set(mesh_roots(row)))
        if seen[row["sample_type"]] < per_type or on_long:
            seen[row["sample_type"]] += 1
            rows.append(row)
    return rows


def intersecting_bytes(world, row: dict, half: float) -> tuple[int, int]:  # noqa: ANN001 - a TwinWorld
    """(bytes of the fragments whose chunk meets the crop box, bytes of the whole meshes) of the row's roots."""
    center = np.asarray(row["coord_nm"], dtype=np.float64)
    res = np.asarray(world.summary["geometry"]["resolution_nm"], dtype=np.float64)
    lo, hi = np.floor((center - half) / res), np.ceil((center + half) / res)
    inside = whole = 0
    for root in set(mesh_roots(row)):
        for i in world.fragment_rows(root):
            c_lo, c_hi = ids.chunk_box_vx(world.frag_chunk[i])
            whole += world.frag_bytes[i]
            if (c_lo < hi).all() and (c_hi > lo).all():
                inside += world.frag_bytes[i]
    return inside, whole


def _layer(path: str) -> int:
    """The graph layer of a fragment file a request read (v1 legacy names start with the node id); 2 for
    shard files and anything else."""
    name = unquote(path).rsplit("/", 1)[-1]
    head = name.split(":", 1)[0]
    return ids.layer_of(int(head)) if ":" in name and head.isdigit() else 2


def _fetch(source, cfg, row, meshes=None) -> bool:  # noqa: ANN001
    try:
        fetch_sample(source, cfg, row, meshes)
    except SampleError:
        return False
    return True


def measure(world_dir, cfg, rows: list[dict], flavor: str, long_roots: set[int]) -> dict:  # noqa: ANN001
    out: dict = {"alone": [], "partition": {}}
    with serve_twin(world_dir, flavor=flavor) as twin:
        tcfg = twin_config(cfg, twin.url, flavor)
        half = crop_box_half_nm(tcfg)
        source = RetryingSource(CaveSource(tcfg, token=TOKEN))
        source.as_of(), source.base_resolution_nm(), source.em_cutout(np.asarray(rows[0]["coord_nm"]), 10.0)
        for row in rows:  # each sample alone
            n = len(twin.requests)
            ok = _fetch(source, tcfg, row)
            got = twin.requests[n:]
            inside, whole = intersecting_bytes(twin.world, row, half)
            mesh = sum(r.bytes_sent for r in got if any(p in r.path for p in MESH_PATHS))
            stitched = sum(_layer(r.path) >= 3 for r in got if any(p in r.path for p in MESH_PATHS))
            out["alone"].append(
                {
                    "type": row["sample_type"],
                    "long": bool(long_roots & set(mesh_roots(row))),
                    "ok": ok,
                    "requests": len(got),
                    "bytes": sum(r.bytes_sent for r in got),
                    "mesh_bytes": mesh,
                    "stitched": stitched,
                    "inside_bytes": inside,
                    "whole_bytes": whole,
                    "max_url": max((r.url_bytes for r in got), default=0),
                    "over_limit": sum(r.status in (414, 504) for r in got),
                }
            )
        size = tcfg.partition_rows
        n = len(twin.requests)
        fetched = 0
        for start in range(0, len(rows), size):  # by partitions
            part = rows[start : start + size]
            meshes = PartitionMeshes(source, tcfg, part)
            for row in part:
                try:
                    _fetch(source, tcfg, row, meshes)
                finally:
                    meshes.done(row)
            fetched += meshes.fetches
        got = twin.requests[n:]
        out["partition"] = {
            "requests": len(got),
            "bytes": sum(r.bytes_sent for r in got),
            "mesh_bytes": sum(r.bytes_sent for r in got if any(p in r.path for p in MESH_PATHS)),
            "mesh_fetches": fetched,
        }
        out["limits"] = twin.limits.describe()
    return out


def _kb(x: float) -> str:
    return f"{x / 1024:8.1f}"


def report(flavor: str, res: dict, n_rows: int) -> dict:
    alone = res["alone"]
    print(f"-- {flavor}: {n_rows} samples fetched alone (requests and bytes from the twin's log) --")
    print(f"  {'type':<18} {'n':>3} {'req/smp':>8} {'KB/smp':>8} {'meshKB':>8} {'insideKB':>8} {'wholeKB':>8}"
          f" {'mesh/inside':>11} {'max':>6}")  # fmt: skip
    by_type: dict[str, list[dict]] = defaultdict(list)
    for rec in alone:
        by_type[rec["type"]].append(rec)
    ratios_all = []
    on_long = [r for r in alone if r["long"]]
    for kind in [*sorted(by_type), "all", "on long neurons"]:
        recs = {"all": alone, "on long neurons": on_long}.get(kind) or by_type[kind]
        ratios = [r["mesh_bytes"] / r["inside_bytes"] for r in recs if r["inside_bytes"] > 0]
        if kind in by_type:
            ratios_all += ratios

        def mean(key: str, recs: list[dict] = recs) -> float:
            return statistics.fmean(r[key] for r in recs)

        print(
            f"  {kind:<18} {len(recs):>3} {mean('requests'):8.1f} {_kb(mean('bytes'))} {_kb(mean('mesh_bytes'))}"
            f" {_kb(mean('inside_bytes'))} {_kb(mean('whole_bytes'))} {statistics.median(ratios):11.2f}"
            f" {max(ratios):6.2f}"
        )
    stitched = [r for r in alone if r["stitched"] and r["inside_bytes"] > 0]
    if stitched:
        ratios = [r["mesh_bytes"] / r["inside_bytes"] for r in stitched]
        print(f"  samples that read stitched layer 3-4 fragments: {len(stitched)} of {len(alone)}, mesh/inside"
              f" median {statistics.median(ratios):.2f}, max {max(ratios):.2f}")  # fmt: skip
    else:
        print(f"  samples that read stitched layer 3-4 fragments: 0 of {len(alone)}")
    part = res["partition"]
    mesh_alone = sum(r["mesh_bytes"] for r in alone)
    whole = sum(r["whole_bytes"] for r in alone)
    print(f"  by partitions: {part['requests'] / n_rows:.1f} req/sample, {part['bytes'] / n_rows / 1024:.1f} KB/sample,"
          f" mesh {part['mesh_bytes'] / 1024:.0f} KB in {part['mesh_fetches']} root fetches"
          f" (alone: {mesh_alone / 1024:.0f} KB; every mesh whole, the old code: {whole / 1024:.0f} KB)")  # fmt: skip
    print(f"  limits: {res['limits']}; largest URL {max(r['max_url'] for r in alone)} bytes;"
          f" answers 414/504: {sum(r['over_limit'] for r in alone)}")  # fmt: skip
    return {
        "stitched_samples": len(stitched),
        "median_ratio": statistics.median(ratios_all),
        "max_ratio": max(ratios_all),
        "whole_over_alone": whole / mesh_alone,
    }


def run(per_type: int = 10) -> dict:
    ctx = demo_context("pipeline")  # the world and bank bench_pipeline builds: generated once
    summary = ensure_world(ctx)
    bank = species_graph(ctx)
    for unit in ("roots", "bank", "select"):  # the bank: its roots, batches, selection
        run_stage(bank, unit, scheduler="sync", progress=False)
    long_roots = {int(n["root_id"]) for n in summary["long_neurons"]}
    rows = pick(pq.read_table(ctx.bank_path).to_pylist(), per_type, long_roots)
    results = {}
    for flavor in ("v1", "v2"):
        results[flavor] = report(flavor, measure(ctx.world_dir, ctx.cfg, rows, flavor, long_roots), len(rows))
    for flavor, r in results.items():
        print(f"  {flavor}: mesh bytes / intersecting level-2 fragments' bytes per sample ({r['stitched_samples']} read"
              f" stitched layer 3-4 fragments): median {r['median_ratio']:.2f},"
              f" max {r['max_ratio']:.2f} (target <= 3); whole meshes: {r['whole_over_alone']:.1f}x")  # fmt: skip
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-type", type=int, default=10)
    run(ap.parse_args().per_type)


if __name__ == "__main__":
    main()
