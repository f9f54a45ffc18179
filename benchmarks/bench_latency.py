"""Fetch + render throughput of one worker through the twin at 0, 30 and 100 ms per request.

The twin runs in a process of its own (its handlers must not share the worker's CPU); the worker is this
process running the fused fetch+render of every partition on the sync scheduler (one task at a time, its I/O
threads fetching ahead while it renders). The bank is built first (not timed), in a work dir per latency (the
endpoints are inputs of the fingerprints). Throughput at each latency is rows rendered per wall second, beside
the 0 ms figure: with the fetches overlapping the renders, latency should cost little.

`--hostile SEED` runs only the hostile comparison (issue 16): the kind twin at 0 ms, then the hostile twin
(sim/twin/hostile.py: hidden limits, 2% 502s, 1% resets, heavy-tailed latency around a 30 ms median with
slow answers past the client's first timeout) with the client's short timeouts, measured in the same run; the
figure is the hostile throughput as a fraction of the kind one (target >= 60%).

    .venv/bin/python -m benchmarks.bench_latency [--per-type 12] [--latencies 0 30 100]
    .venv/bin/python -m benchmarks.bench_latency --hostile 7 [--per-type 12] [--median-ms 30]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import BENCH_WORK, demo_context
from config.schema import Budgets, CaveRequests
from core.stats import merge_stats
from pipeline.context import BuildContext
from pipeline.runner import run_stage, run_stages
from pipeline.stages.species import species_graph
from sim.demo_world import ensure_world
from sim.twin import TOKEN
from sim.twin.hostile import CLIENT_FIRST_TIMEOUT_S
from sim.twin.species import twin_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_twin(work: Path, latency_ms: float, hostile: int | None = None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "pipeline", "twin", "--work", str(work), "--port", str(port),
           "--latency-ms", str(latency_ms), "--log", os.devnull]  # fmt: skip
    if hostile is not None:
        cmd += ["--hostile", str(hostile)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300  # the first start builds the twin's cache
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the twin did not start: {proc.stderr.read().decode()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("the twin did not start within 300 s")


def measure(latency_ms: float, per_type: int, hostile: int | None = None) -> dict:
    demo = demo_context("pipeline")  # the bench world: generated once, shared with bench_pipeline
    ensure_world(demo)
    proc, url = _start_twin(demo.work_dir, latency_ms, hostile)
    try:
        budgets = Budgets(**dict.fromkeys(Budgets.model_fields, per_type))
        extra = {}
        if hostile is not None:  # the twin build's short client timeouts (the drawn slow answers cost seconds)
            extra["cave_requests"] = CaveRequests(read_timeout_s={"default": CLIENT_FIRST_TIMEOUT_S})
        cfg = twin_config(demo.cfg, url, budgets=budgets, **extra)
        name = f"latency-{latency_ms:g}" + (f"-hostile{hostile}" if hostile is not None else "")
        root = (BENCH_WORK / name).resolve()
        shutil.rmtree(root, ignore_errors=True)
        # the twin's token travels with the context to the stages' sources, as the twin build hands it: never set in
        # this process's environment, where it would outlive the measurement and reach every later client
        ctx = BuildContext("demo", cfg, root / "work", root / "out", cave_token=TOKEN)
        bank = species_graph(ctx)
        for unit in ("roots", "bank", "select"):  # the bank: its roots, batches, selection
            run_stage(bank, unit, scheduler="sync", progress=False)
        start = time.perf_counter()
        fetch, render = run_stages(species_graph(ctx), ("fetch", "render"), scheduler="sync", workers=1, force=True,
                                   progress=False)  # fmt: skip
        seconds = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait()
    return {"latency_ms": latency_ms, "rendered": render.samples, "seconds": seconds,
            "samples_per_s": render.samples / seconds, "fetch_failures": fetch.failures,
            "requests": merge_stats(fetch.stats, render.stats).get("requests", {})}  # fmt: skip


def run(per_type: int = 12, latencies: tuple[float, ...] = (0.0, 30.0, 100.0)) -> list[dict]:
    results = [measure(lat, per_type) for lat in latencies]
    base = results[0]["samples_per_s"]
    for r in results:
        print(f"  {r['latency_ms']:>5g} ms: {r['rendered']} rows fetched+rendered in {r['seconds']:.1f} s = "
              f"{r['samples_per_s']:.1f} samples/s per worker ({r['samples_per_s'] / base:.0%} of 0 ms)")  # fmt: skip
    return results


def run_hostile(per_type: int = 12, seed: int = 7, median_ms: float = 30.0) -> dict:
    """Fetch+render per worker through the hostile twin at `median_ms`, as a fraction of the kind twin's at 0 ms."""
    kind = measure(0.0, per_type)
    mean = measure(median_ms, per_type, hostile=seed)
    ratio = mean["samples_per_s"] / kind["samples_per_s"]
    met = mean["requests"]
    k, h = kind, mean
    print(f"  kind twin, 0 ms: {k['rendered']} rows in {k['seconds']:.1f} s = {k['samples_per_s']:.1f} samples/s")
    print(f"  hostile twin (seed {seed}), {median_ms:g} ms median: {h['rendered']} rows in {h['seconds']:.1f} s = "
          f"{h['samples_per_s']:.1f} samples/s, {h['fetch_failures']} fetch failures")  # fmt: skip
    counts = {key: met.get(key, 0) for key in ("refused", "rate_limited", "resets", "timeouts", "bisections")}
    print("    met: {refused} refused, {rate_limited} 429s, {resets} resets, {timeouts} timeouts, "
          "{bisections} bisections".format(**counts))  # fmt: skip
    print(f"  hostile / kind: {ratio:.0%} (target >= 60%)")
    return {"kind": kind, "hostile": mean, "ratio": ratio}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-type", type=int, default=12)
    ap.add_argument("--latencies", type=float, nargs="+", default=[0.0, 30.0, 100.0])
    ap.add_argument("--hostile", type=int, default=None, metavar="SEED", help="only the hostile comparison")
    ap.add_argument("--median-ms", type=float, default=30.0, help="the hostile twin's median latency")
    args = ap.parse_args()
    if args.hostile is not None:
        run_hostile(args.per_type, args.hostile, args.median_ms)
    else:
        run(args.per_type, tuple(args.latencies))


if __name__ == "__main__":
    main()
