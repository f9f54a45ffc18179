"""Scaling: render throughput with 1 and 2 local workers, peak RSS per worker at two demo sizes, and a
projection of the full 716,485-row release from the measured per-sample cost.

Each measured run is a child process, so its workers' peak RSS (RUSAGE_CHILDREN) is its own.

    .venv/bin/python -m benchmarks.bench_scaling [--sizes 9 36]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from benchmarks.common import demo_context
from pipeline.runner import run_stage
from pipeline.stages.species import species_graph
from sim.demo_world import ensure_world

FULL_RELEASE_ROWS = 716_485


def _child(n_sites: int, workers: int) -> None:
    """Run the render stage (forced) once and print samples, seconds and the workers' peak RSS."""
    ctx = demo_context(f"scale-{n_sites}", n_sites=n_sites, budgets=_unbounded())
    start = time.perf_counter()
    summary = run_stage(species_graph(ctx), "render", scheduler="processes", workers=workers, force=True,
                        progress=False)  # fmt: skip
    seconds = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"samples": summary.samples, "seconds": seconds, "worker_peak_rss_mb": rss_mb}))


def _unbounded():  # noqa: ANN202 - Budgets
    from config.schema import Budgets

    return Budgets()  # every candidate: the bank grows with the world


def _prepare(n_sites: int) -> int:
    ctx = demo_context(f"scale-{n_sites}", n_sites=n_sites, budgets=_unbounded())
    ensure_world(ctx)
    bank = species_graph(ctx)
    for unit in ("roots", "bank", "select"):  # the bank: its roots, batches, selection
        run_stage(bank, unit, scheduler="sync", progress=False)
    run_stage(species_graph(ctx), "fetch", scheduler="processes", workers=2, progress=False)
    return sum(p.n_samples for p in species_graph(ctx).partitions("fetch"))


def _measure(n_sites: int, workers: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_scaling", "--child", str(n_sites), str(workers)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(sizes: tuple[int, ...] = (9, 36), per_sample_cpu_ms: float | None = None) -> dict:
    results = {}
    for n_sites in sizes:
        bank_rows = _prepare(n_sites)
        one, two = _measure(n_sites, 1), _measure(n_sites, 2)
        results[n_sites] = (bank_rows, one, two)
        r1, r2 = one["samples"] / one["seconds"], two["samples"] / two["seconds"]
        print(
            f"render, demo world of {n_sites} sites ({bank_rows} bank rows): 1 worker {r1:.1f} samples/s, "
            f"2 workers {r2:.1f} samples/s, ratio {r2 / r1:.2f}; worker peak RSS "
            f"{one['worker_peak_rss_mb']:.0f} MB (1 worker), {two['worker_peak_rss_mb']:.0f} MB (2 workers)"
        )
    small, large = min(sizes), max(sizes)
    rss_small, rss_large = results[small][2]["worker_peak_rss_mb"], results[large][2]["worker_peak_rss_mb"]
    print(
        f"memory vs dataset size: {results[large][0] / results[small][0]:.1f}x the rows -> "
        f"{rss_large / rss_small:.2f}x the worker peak RSS"
    )
    one = results[large][1]
    cost_s = per_sample_cpu_ms / 1000 if per_sample_cpu_ms else one["seconds"] / one["samples"]
    efficiency = (results[large][2]["samples"] / results[large][2]["seconds"]) / (2 * one["samples"] / one["seconds"])
    print(
        f"projection of the full release ({FULL_RELEASE_ROWS:,} rows) at {1000 * cost_s:.0f} ms/sample/core "
        f"and {efficiency:.0%} parallel efficiency (measured 1 -> 2 workers):"
    )
    for cores in (2, 32, 128, 512):
        hours = FULL_RELEASE_ROWS * cost_s / (cores * (efficiency if cores > 1 else 1.0)) / 3600
        print(f"  {cores:>4} cores: {hours:8.2f} h = {60 * hours:7.1f} min (CPU only; real fetches add network time)")
    return results


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        _child(int(sys.argv[2]), int(sys.argv[3]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs=2, default=(9, 36))
    run(tuple(ap.parse_args().sizes))


if __name__ == "__main__":
    main()
