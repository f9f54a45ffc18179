"""Fetch + render throughput of one worker through the twin at 0, 30 and 100 ms per request.

The twin runs in a process of its own (its handlers must not share the worker's CPU); the worker is this
process running the fused fetch+render of every partition on the sync scheduler (one task at a time, its I/O
threads fetching ahead while it renders). The bank is built first (not timed), in a work dir per latency (the
endpoints are inputs of the fingerprints). Throughput at each latency is rows rendered per wall second, beside
the 0 ms figure: with the fetches overlapping the renders, latency should cost little.

    .venv/bin/python -m benchmarks.bench_latency [--per-type 12] [--latencies 0 30 100]
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
from config.schema import Budgets
from pipeline.build import ensure_world
from pipeline.context import BuildContext
from pipeline.runner import run_stage
from pipeline.stages.bank import BankStage
from pipeline.stages.fetch_render import run_fetch_render
from pipeline.twin import TOKEN
from pipeline.twin.species import twin_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_twin(work: Path, latency_ms: float) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "pipeline", "twin", "--work", str(work), "--port", str(port),
           "--latency-ms", str(latency_ms), "--log", os.devnull]  # fmt: skip
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


def measure(latency_ms: float, per_type: int) -> dict:
    demo = demo_context("pipeline")  # the bench world: generated once, shared with bench_pipeline
    ensure_world(demo)
    proc, url = _start_twin(demo.work_dir, latency_ms)
    try:
        budgets = Budgets(**dict.fromkeys(Budgets.model_fields, per_type))
        cfg = twin_config(demo.cfg, url, budgets=budgets)
        root = (BENCH_WORK / f"latency-{latency_ms:g}").resolve()
        shutil.rmtree(root, ignore_errors=True)
        ctx = BuildContext("demo", cfg, root / "work", root / "out")
        os.environ["CAVE_TOKEN"] = TOKEN
        run_stage(BankStage(), ctx, scheduler="sync", progress=False)
        start = time.perf_counter()
        fetch, render = run_fetch_render(ctx, scheduler="sync", workers=1, force=True, progress=False)
        seconds = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait()
    return {"latency_ms": latency_ms, "rendered": render.samples, "seconds": seconds,
            "samples_per_s": render.samples / seconds, "fetch_failures": fetch.failures}  # fmt: skip


def run(per_type: int = 12, latencies: tuple[float, ...] = (0.0, 30.0, 100.0)) -> list[dict]:
    results = [measure(lat, per_type) for lat in latencies]
    base = results[0]["samples_per_s"]
    for r in results:
        print(f"  {r['latency_ms']:>5g} ms: {r['rendered']} rows fetched+rendered in {r['seconds']:.1f} s = "
              f"{r['samples_per_s']:.1f} samples/s per worker ({r['samples_per_s'] / base:.0%} of 0 ms)")  # fmt: skip
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-type", type=int, default=12)
    ap.add_argument("--latencies", type=float, nargs="+", default=[0.0, 30.0, 100.0])
    args = ap.parse_args()
    run(args.per_type, tuple(args.latencies))


if __name__ == "__main__":
    main()
