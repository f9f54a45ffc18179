"""`python -m pipeline plan`: what a build of a species would make and cost, before fetching or rendering anything.

Like igneous' `design`: it asks the sources only what is cheap (the proofread roots, the volumes' info) and
says which figures are measured and which are estimates.

- Roots: the proofread roots at the pinned time (queried once, kept as the bank stage keeps them).
- Candidates per type: exact when the bank has been built; otherwise estimated from the candidates of a few
  roots (the bank's own code on `sample_roots` roots chosen by hash) scaled to every root, budgets applied.
- Partitions: from the counts and the layout rules (pipeline.partitions).
- Requests, bytes and hours: from the per-sample costs measured through the twin on the demo world
  (TWIN_COSTS), bytes scaled by the species' cutout voxels, hours for N workers at an assumed latency and
  bandwidth. Estimates, to size a cluster; the first partitions' markers give the real figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow.parquet as pq

from core.samples import SAMPLE_TYPES
from pipeline.context import BuildContext
from pipeline.partitions import level_for, root_digest
from pipeline.sources.fetch_sample import EM_FACTOR

# Per-sample costs measured through the twin on the demo world by `make bench` on 2026-11-29 (bench_twin:
# fetched by partitions, v1 and v2 alike; bench_pipeline: CPU per sample, fetch and render + encode), and
# the demo's cutout size they go with.
TWIN_COSTS = {
    "requests_per_sample": 26.2,
    "kb_per_sample": 671.0,
    "cutout_voxels": 56 * 56 * 40,  # 1.5 x 1200 nm at 32 x 32 x 45 nm
    "fetch_cpu_ms": 23.7,
    "render_cpu_ms": 61.6,
}
# The bank's cost per proofread root, measured by `make bench` on 2026-12-05 ("bank at scale": 20,000 roots of
# sim/twin/scale.py behind the hostile twin at 30 ms median, 2 workers x 8 bank threads, killed -9 at half and
# rerun; 1,550 s wall): 11.2 requests per root (a segmentation chunk and its roots per merge, level-2 graph and
# cache, change logs, details, synapse queries), and the rest of the measured wall time per root and worker (CPU of
# client and twin on the same 2 cores, per-partition start-up, the rerun's planning, the selection step) as one
# figure: 1,550 s x 2 workers / 20,000 roots = 155 ms, minus 11.2 x 30 ms / 8 threads = 42 ms of waiting.
BANK_COSTS = {
    "requests_per_root": 11.2,
    "cpu_ms_per_root": 113.0,
}
ASSUMED_LATENCY_MS = 30.0  # per request, from a cluster to the cloud
ASSUMED_MB_PER_S = 100.0  # per worker


@dataclass
class Plan:
    species: str
    roots: int
    candidates: dict[str, int]
    selected: dict[str, int]
    candidates_measured: bool  # False: estimated from `sampled_roots` roots
    sampled_roots: int
    bank_partitions: int
    sample_partitions: int
    cutout_voxels: int
    requests: float
    gigabytes: float
    hours: dict[str, float]
    workers: int

    def text(self) -> str:
        how = "measured (the bank is built)" if self.candidates_measured else (
            f"ESTIMATED from {self.sampled_roots} of {self.roots} roots")  # fmt: skip
        lines = [f"plan for {self.species}: {self.roots} proofread roots (measured)", f"candidates per type, {how}:"]
        for t in SAMPLE_TYPES:
            lines.append(f"  {t:<18} {self.candidates[t]:>10,} candidates -> {self.selected[t]:>10,} after budgets")
        total = sum(self.selected.values())
        lines += [
            f"rows: {total:,}{'' if self.candidates_measured else ' (estimated)'}; partitions: bank "
            f"{self.bank_partitions}, fetch/render {self.sample_partitions}",
            f"ESTIMATES (per-sample costs measured through the twin, bytes scaled to {self.cutout_voxels:,} "
            f"cutout voxels; {ASSUMED_LATENCY_MS:g} ms per request and {ASSUMED_MB_PER_S:g} MB/s per worker assumed):",
            f"  bank: {self.roots * BANK_COSTS['requests_per_root']:,.0f} requests, "
            f"{self.hours['bank']:.2f} hours with {self.workers} workers",
            f"  fetch: {self.requests:,.0f} requests, {self.gigabytes:,.2f} GB",
            "  hours with {} workers: fetch+render {:.2f} (fetch I/O {:.2f}, CPU {:.2f})".format(
                self.workers, self.hours["fetch_render"], self.hours["fetch_io"], self.hours["cpu"]),
        ]  # fmt: skip
        return "\n".join(lines)


def _counts(rows: list[dict]) -> dict[str, int]:
    out = dict.fromkeys(SAMPLE_TYPES, 0)
    for r in rows:
        out[r["sample_type"]] += 1
    return out


def _budgeted(counts: dict[str, int], budgets: dict[str, int | None]) -> dict[str, int]:
    return {t: n if budgets[t] is None else min(n, budgets[t]) for t, n in counts.items()}


def make_plan(ctx: BuildContext, workers: int, sample_roots: int = 8) -> Plan:
    from pipeline.candidates import bank_candidates, select_bank
    from pipeline.runner import run_stage
    from pipeline.sources import open_source
    from pipeline.stages.roots import read_roots
    from pipeline.stages.species import species_graph

    graph = species_graph(ctx)
    run_stage(graph, "roots", scheduler="sync", progress=False)  # the proofread roots, queried once
    roots = read_roots(ctx)
    budgets = ctx.cfg.budgets.model_dump()
    if graph.ready("select"):  # the bank's batches and selection are done under the current config
        cols = ["combined_sample_hash", "sample_type"]
        found = {r["combined_sample_hash"]: r for p in graph.partitions("bank")
                 for r in pq.read_table(p.output_file(ctx), columns=cols).to_pylist()}  # fmt: skip
        candidates = _counts(list(found.values()))
        selected = _counts(pq.read_table(ctx.bank_path, columns=["sample_type"]).to_pylist())
        measured, sampled = True, 0
    else:
        chosen = sorted(roots, key=root_digest)[:sample_roots]
        found = bank_candidates(open_source(ctx), ctx.cfg, chosen, roots)
        unique = select_bank(found.rows, dict.fromkeys(SAMPLE_TYPES), ctx.cfg.species).rows
        scale = len(roots) / max(len(chosen), 1)
        candidates = {t: round(n * scale) for t, n in _counts(unique).items()}
        selected = _budgeted(candidates, budgets)
        measured, sampled = False, len(chosen)
    rows = sum(selected.values())
    voxels = _cutout_voxels(ctx)
    requests, gigabytes, hours = estimate_cost(rows, voxels, workers, ctx.cfg.fetch_threads)
    hours["bank"] = bank_hours(len(roots), workers, ctx.cfg.bank_threads)
    return Plan(
        species=ctx.species,
        roots=len(roots),
        candidates=candidates,
        selected=selected,
        candidates_measured=measured,
        sampled_roots=sampled,
        bank_partitions=2 ** level_for(len(roots), ctx.cfg.bank_roots_per_partition),
        sample_partitions=2 ** level_for(rows, ctx.cfg.partition_rows),
        cutout_voxels=voxels,
        requests=requests,
        gigabytes=gigabytes,
        hours=hours,
        workers=workers,
    )


def estimate_cost(rows: int, cutout_voxels: int, workers: int, fetch_threads: int) -> tuple[float, float, dict]:
    """(requests, gigabytes, hours) of fetching and rendering `rows` samples (the figures `plan` prints;
    preflight sets a version's expiry against the same hours)."""
    requests = rows * TWIN_COSTS["requests_per_sample"]
    gigabytes = rows * TWIN_COSTS["kb_per_sample"] * cutout_voxels / TWIN_COSTS["cutout_voxels"] / 1e6
    io_s = requests * ASSUMED_LATENCY_MS / 1000 / fetch_threads + gigabytes * 1000 / ASSUMED_MB_PER_S
    cpu_s = rows * (TWIN_COSTS["fetch_cpu_ms"] + TWIN_COSTS["render_cpu_ms"]) / 1000
    hours = {
        "fetch_io": io_s / workers / 3600,
        "cpu": cpu_s / workers / 3600,
        "fetch_render": max(io_s, cpu_s) / workers / 3600,  # fused: fetches overlap renders
    }
    return requests, gigabytes, hours


def bank_hours(roots: int, workers: int, bank_threads: int) -> float:
    """Hours of the bank stage for `roots` proofread roots: each root's requests at the assumed latency on the
    batch's I/O threads, plus its CPU, over the workers (an estimate from BANK_COSTS)."""
    per_root_ms = BANK_COSTS["requests_per_root"] * ASSUMED_LATENCY_MS / bank_threads + BANK_COSTS["cpu_ms_per_root"]
    return roots * per_root_ms / max(workers, 1) / 1000.0 / 3600.0


def _cutout_voxels(ctx: BuildContext) -> int:
    """Voxels of one sample's EM cutout at the configured mip (the volume's info, one small read)."""
    from pipeline.sources import open_source

    source = open_source(ctx)
    lo, hi = source.canonical_bbox_nm()
    probe = source.em_cutout((np.asarray(lo) + np.asarray(hi)) / 2.0, 1.0)
    size = EM_FACTOR * ctx.cfg.em_window_nm
    return int(math.prod(max(1, round(size / v)) for v in probe.voxel_nm))
