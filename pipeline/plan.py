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
- The whole build (`estimate_build`): bank, fetch, render and shard hours, requests, bytes fetched, and the disk of
  the release and of the work dir both ways (`keep_fetched` true, the default, and false), from per-sample figures
  measured by `make bench` (WORKER_MS, BANK_COSTS, TWIN_COSTS, DISK_COSTS, SHARD_COSTS: each says which bench and
  when); the bank's from the built bank's markers once it is built.
  `--rows N` projects N rows at the demo's cutout size without asking any source (the README's projection of the
  716,485-row release).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow.parquet as pq

from core.samples import SAMPLE_TYPES
from pipeline.context import BuildContext
from pipeline.markers import read_marker
from pipeline.partitions import level_for, root_digest
from pipeline.stages.fetch_sample import EM_FACTOR

# Per-sample costs of fetch and render as a cluster build meets them, measured by the pipeline-at-scale bench
# (`python -m benchmarks.bench_pipeline_scale`, 2,066 samples of the demo world on a dask cluster of two worker
# processes through the hostile twin at 30 ms, 2026-12-08): requests and KB per sample of the fetch stage, and the
# workers' CPU per sample of each stage (through the real clients: HTTP, graphene meshes, Draco decoding, the request
# budget's calls; on the demo source's local files fetch costs 23.7 ms, bench_pipeline), and the demo's cutout size
# they go with.
TWIN_COSTS = {
    "requests_per_sample": 24.5,
    "kb_per_sample": 661.0,
    "cutout_voxels": 56 * 56 * 40,  # 1.5 x 1200 nm at 32 x 32 x 45 nm
    "fetch_cpu_ms": 177.1,
    "render_cpu_ms": 73.4,
}
# The time one worker spends per unit of each stage, as a build meets it: the stage's wall time x its workers / its
# units, measured by the same bench at 2,066 samples (2026-12-08): bank 108 ms wall per sample x 2 workers x 2,066
# samples / 522 proofread roots; fetch 164 ms and render 40 ms wall per sample x 2 workers. It holds what CPU alone
# misses: the waits the hostile server imposes (its 429s' Retry-After, 503s, resends), the last partitions' tail, and,
# on those 2 cores, the CPU of the twin and of the budget's manager beside the workers' (~60 ms a sample). Workers on
# cores of their own, the servers elsewhere, spend less: the hours are an upper estimate there, the CPU line the lower.
# The bank's cost per root follows the dataset (neither its candidates nor its edits per root predict it across the
# two worlds measured): `sim/twin/scale.py`'s world cost 155 ms per root (bench_bank_scale, 2026-12-05: 1,550 s x 2
# workers / 20,000 roots, 11.2 requests and 22 candidates per root), the demo world's 5.5x that with 4 candidates per
# root; `plan` takes the dearer and prints the range.
WORKER_MS = {
    "bank_per_root": 855.0,
    "bank_per_root_low": 155.0,
    "fetch_per_sample": 328.0,
    "render_per_sample": 80.0,
}
# What a stage costs whatever its size (measured at 2,066 and 6,223 samples by the same bench): a `python -m
# pipeline stage` process starting, joining the cluster, listing its partitions and meeting the servers first.
STAGE_START_S = 5.0
# The bank's requests per proofread root (bench_bank_scale above, the cheaper world: the count printed, not the hours).
BANK_COSTS = {"requests_per_root": 11.2}
# Disk per sample, measured by `make bench` on the demo build (`python -m benchmarks.bench_disk`, 2026-12-07): the
# fetched npz per sample (meshes cropped, EM and A/B labels at the demo's cutout, TWIN_COSTS' cutout_voxels: it
# scales with the cutout's voxels, most of it being the EM and label volumes), the render parts per rendered row and
# the release's shards per row (224 px images and the geometry: the same for every species), the bank's files per
# bank row.
DISK_COSTS = {
    "fetched_kb_per_sample": 345.0,
    "render_kb_per_row": 250.0,
    "release_kb_per_row": 270.0,
    "bank_kb_per_row": 1.0,
}
# The shard stage: one process merges every species' render parts into the release (shard/release.py). Its rate and
# its fixed cost as the pipeline-at-scale bench meets them (the stage run again after a kill -9, 2,066 rows in 8 s
# and 6,223 in 17 s, 2026-12-08: 462 rows/s beyond 3.5 s); `write_release` alone writes 1,694 rows/s of the demo's
# rows (bench_disk, 2026-12-07): the stage also reads every render part, checks the rows and hashes the shards.
SHARD_COSTS = {"rows_per_s": 462.0, "start_s": 3.5}
ASSUMED_LATENCY_MS = 30.0  # per request, from a cluster to the cloud
ASSUMED_MB_PER_S = 100.0  # per worker


@dataclass
class BuildEstimate:
    """The whole build of `rows` samples with `workers` workers: hours per stage, requests, bytes, disk (GB)."""

    rows: int
    workers: int
    cutout_voxels: int
    roots: int | None  # None: the bank's cost is not estimated (a projection without a source)
    in_flight_per_host: int
    bank_basis: str  # where the bank's hours come from (the built bank's markers, or WORKER_MS)
    requests: float
    fetched_gb: float  # bytes fetched from the servers
    hours: dict[str, float]
    disk_gb: dict[str, float]

    def lines(self) -> list[str]:
        h, d = self.hours, self.disk_gb
        out = [f"ESTIMATES for {self.rows:,} rows with {self.workers} workers (per-sample costs measured through the "
               f"twin and on the demo by `make bench`, bytes scaled to {self.cutout_voxels:,} cutout voxels; "
               f"{ASSUMED_LATENCY_MS:g} ms per request and {ASSUMED_MB_PER_S:g} MB/s per worker assumed):"]  # fmt: skip
        if self.roots is not None:
            out.append(f"  bank: {self.roots * BANK_COSTS['requests_per_root']:,.0f} requests, {h['bank']:.2f} hours "
                       f"({self.bank_basis})")  # fmt: skip
        out += [
            f"  fetch: {self.requests:,.0f} requests, {self.fetched_gb:,.1f} GB fetched, I/O {h['fetch_io']:.2f} h; "
            f"the build's request budget ({self.in_flight_per_host} in flight per host) makes it at least "
            f"{h['one_host']:.2f} hours if every request goes to one host",
            f"  render: CPU {h['cpu']:.2f} hours (fetch and render CPU alone: workers on cores of their own, the "
            "servers elsewhere, answering at once)",
            f"  fetch+render, one task per partition (fetches overlap renders): {h['fetch_render']:.2f} hours (the "
            "time a worker spent per sample at scale through the hostile twin, waits included; at least the "
            "request budget's bound)",
            f"  shard: {h['shard']:.2f} hours (one process, {SHARD_COSTS['rows_per_s']:,.0f} rows/s)",
            f"  whole build: {h['total']:.2f} hours" + ("" if self.roots is not None else " (the bank not included)"),
            f"  release: {d['release']:,.1f} GB",
            f"  work dir, keep_fetched: true (default): {d['work_keep']:,.1f} GB (fetched {d['fetched']:,.1f} GB, "
            f"render parts {d['render']:,.1f} GB, bank {d['bank']:,.1f} GB)",
            f"  work dir, keep_fetched: false: {d['work_drop']:,.1f} GB at most (render parts, bank, and the fetched "
            f"files of the {self.workers} partitions in flight, {d['in_flight']:,.1f} GB); a re-render (another "
            f"camera) then fetches again what it renders: {self.fetched_gb:,.1f} GB, {self.requests:,.0f} requests",
        ]
        return out


def estimate_build(
    rows: int, cutout_voxels: int, workers: int, fetch_threads: int, partition_rows: int,
    roots: int | None = None, in_flight_per_host: int = 16, bank_s_per_root: float | None = None,
    bank_basis: str = "",
) -> BuildEstimate:  # fmt: skip
    """The whole build of `rows` samples on `workers` workers, from the measured per-sample figures: the bank (when
    `roots` is given; `bank_s_per_root`: a worker's seconds per root found for this dataset, else WORKER_MS'), fetch
    and render fused (estimate_cost), the shard stage in one process, and the disk: the release, the work dir keeping
    every fetched file, and the work dir dropping them once rendered (the render parts, the bank, and at most one
    partition of fetched files per worker in flight)."""
    requests, fetched_gb, hours = estimate_cost(rows, cutout_voxels, workers, fetch_threads, in_flight_per_host)
    hours["bank"] = bank_hours(roots, workers, bank_s_per_root) if roots is not None else 0.0
    hours["shard"] = (SHARD_COSTS["start_s"] + rows / SHARD_COSTS["rows_per_s"]) / 3600.0
    hours["total"] = hours["bank"] + hours["fetch_render"] + hours["shard"]
    fetched_kb = DISK_COSTS["fetched_kb_per_sample"] * cutout_voxels / TWIN_COSTS["cutout_voxels"]
    disk = {
        "fetched": rows * fetched_kb / 1e6,
        "render": rows * DISK_COSTS["render_kb_per_row"] / 1e6,
        "release": rows * DISK_COSTS["release_kb_per_row"] / 1e6,
        "bank": rows * DISK_COSTS["bank_kb_per_row"] / 1e6,
        "in_flight": min(rows, workers * partition_rows) * fetched_kb / 1e6,
    }
    disk["work_keep"] = disk["fetched"] + disk["render"] + disk["bank"]
    disk["work_drop"] = disk["render"] + disk["bank"] + disk["in_flight"]
    low_ms = WORKER_MS["bank_per_root_low"]
    low = bank_hours(roots, workers, low_ms / 1000) if roots is not None else 0.0
    basis = bank_basis or (f"{WORKER_MS['bank_per_root']:g} ms per root and worker, the demo world's; "
                           f"{low:.2f} hours at the other world measured, {low_ms:g} ms")  # fmt: skip
    return BuildEstimate(rows, workers, cutout_voxels, roots, in_flight_per_host, basis, requests, fetched_gb, hours,
                         disk)  # fmt: skip


def project(
    rows: int, workers: int, fetch_threads: int = 8, partition_rows: int = 64, in_flight_per_host: int = 16
) -> str:
    """`plan --rows N`: the whole build of N rows at the demo's cutout size, without asking any source."""
    est = estimate_build(rows, TWIN_COSTS["cutout_voxels"], workers, fetch_threads, partition_rows,
                         in_flight_per_host=in_flight_per_host)  # fmt: skip
    return "\n".join([f"projection of {rows:,} rows at the demo's cutout ({TWIN_COSTS['cutout_voxels']:,} voxels); "
                      "nothing asked of any source:", *est.lines()])  # fmt: skip


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
    build: BuildEstimate | None = None

    def figures(self) -> dict:
        """Every figure of the plan as plain data (`plan --json`: what a script or the scale bench reads)."""
        return asdict(self)

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
        if self.build is not None:
            lines += ["the whole build:", *self.build.lines()]
        return "\n".join(lines)


def _counts(rows: list[dict]) -> dict[str, int]:
    out = dict.fromkeys(SAMPLE_TYPES, 0)
    for r in rows:
        out[r["sample_type"]] += 1
    return out


def _budgeted(counts: dict[str, int], budgets: dict[str, int | None]) -> dict[str, int]:
    return {t: n if budgets[t] is None else min(n, budgets[t]) for t, n in counts.items()}


def make_plan(ctx: BuildContext, workers: int, sample_roots: int = 8) -> Plan:
    from pipeline.runner import run_stage
    from pipeline.sources import open_source
    from pipeline.stages.bank_candidates import bank_candidates, select_bank
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
        bank_s = sum(float((read_marker(p.marker_path(ctx)) or {}).get("seconds", 0)) for p in graph.partitions("bank"))
        per_root_s, basis = bank_s / max(len(roots), 1), f"the built bank's partitions took {bank_s:,.0f} worker-s"
    else:
        chosen = sorted(roots, key=root_digest)[:sample_roots]
        found = bank_candidates(open_source(ctx), ctx.cfg, chosen, roots)
        # not timed here: a few roots' seconds are mostly first contact and the servers' faults (8 roots through the
        # hostile twin took 0.4 to 2.8 s per root by batch, 2026-12-08): the measured cost per root is the estimate
        per_root_s, basis = None, ""
        unique = select_bank(found.rows, dict.fromkeys(SAMPLE_TYPES), ctx.cfg.species).rows
        scale = len(roots) / max(len(chosen), 1)
        candidates = {t: round(n * scale) for t, n in _counts(unique).items()}
        selected = _budgeted(candidates, budgets)
        measured, sampled = False, len(chosen)
    rows = sum(selected.values())
    voxels = _cutout_voxels(ctx)
    build = estimate_build(rows, voxels, workers, ctx.cfg.fetch_threads, ctx.cfg.partition_rows, len(roots),
                           ctx.cfg.cave_requests.max_in_flight_per_host, per_root_s, basis)  # fmt: skip
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
        requests=build.requests,
        gigabytes=build.fetched_gb,
        hours=build.hours,
        workers=workers,
        build=build,
    )


def estimate_cost(
    rows: int, cutout_voxels: int, workers: int, fetch_threads: int, in_flight_per_host: int = 16
) -> tuple[float, float, dict]:
    """(requests, gigabytes, hours) of fetching and rendering `rows` samples (the figures `plan` prints;
    preflight sets a version's expiry against the same hours). `fetch_render` is the time workers spent per sample
    at scale (WORKER_MS), at least the I/O's bound and the request budget's: every request of the build goes through
    one budget per host (pipeline/sources/budget.py), which lets a host answer at most in_flight_per_host requests
    per latency, whatever the workers (`one_host`: were every request to one host)."""
    requests = rows * TWIN_COSTS["requests_per_sample"]
    gigabytes = rows * TWIN_COSTS["kb_per_sample"] * cutout_voxels / TWIN_COSTS["cutout_voxels"] / 1e6
    io_s = requests * ASSUMED_LATENCY_MS / 1000 / fetch_threads + gigabytes * 1000 / ASSUMED_MB_PER_S
    cpu_s = rows * (TWIN_COSTS["fetch_cpu_ms"] + TWIN_COSTS["render_cpu_ms"]) / 1000
    worker_s = rows * (WORKER_MS["fetch_per_sample"] + WORKER_MS["render_per_sample"]) / 1000
    one_host_s = requests * ASSUMED_LATENCY_MS / 1000.0 / in_flight_per_host
    hours = {
        "fetch_io": io_s / workers / 3600,
        "cpu": cpu_s / workers / 3600,
        "one_host": one_host_s / 3600,
        # fused: fetches overlap renders
        "fetch_render": (STAGE_START_S + max(max(io_s, worker_s) / workers, one_host_s)) / 3600,
    }
    return requests, gigabytes, hours


def bank_hours(roots: int, workers: int, s_per_root: float | None = None) -> float:
    """Hours of the bank stage for `roots` proofread roots over the workers: `s_per_root` a worker's seconds per root
    (found for this dataset: measured by its built bank), else the demo world's (WORKER_MS).
    A dataset's cost per root follows its edits and synapses per root: nothing else here knows them."""
    per_root_s = WORKER_MS["bank_per_root"] / 1000.0 if s_per_root is None else s_per_root
    return (STAGE_START_S + roots * per_root_s / max(workers, 1)) / 3600.0


def _cutout_voxels(ctx: BuildContext) -> int:
    """Voxels of one sample's EM cutout at the configured mip (the volume's info, one small read)."""
    from pipeline.sources import open_source

    source = open_source(ctx)
    lo, hi = source.canonical_bbox_nm()
    probe = source.em_cutout((np.asarray(lo) + np.asarray(hi)) / 2.0, 1.0)
    size = EM_FACTOR * ctx.cfg.em_window_nm
    return int(math.prod(max(1, round(size / v)) for v in probe.voxel_nm))
