"""Requests per endpoint through the hostile twin against the kind twin, on the same demo build, at 0 and 200 ms
added latency (issue 24): a slow or faulty server must cost few extra requests.

Each build is `python -m pipeline build --source twin` as a user runs it (its own work dir, the default processes
scheduler): first through the kind twin, then through the hostile one (every fault of `--hostile SEED`: hidden
limits, 502s, resets, slow tails, the engine's wrapped rate limit, item faults, overload), each with
`--twin-latency-ms` added to every answer. The build's closing line `requests per endpoint: ...` is the twin's own
count. For every endpoint with at least 100 requests in the kind build, the ratio hostile / kind is printed beside
the target (<= 1.3); an item the hostile twin never answers is ledgered, so its requests are few and bounded.

    .venv/bin/python -m benchmarks.bench_hostile [--seed 29] [--flavor v1] [--latencies 0 200]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import BENCH_WORK

TARGET = 1.3
MIN_REQUESTS = 100
WORLD = BENCH_WORK / "hostile" / "work" / "demo" / "world"  # the default demo world, generated once here


def _build(work: Path, flavor: str, latency_ms: float, hostile: int | None) -> tuple[dict[str, int], str, float]:
    """(requests per endpoint, the build's closing lines, wall seconds) of one build through the twin."""
    shutil.rmtree(work, ignore_errors=True)
    cmd = [sys.executable, "-m", "pipeline", "build", "--work", str(work), "--out", str(work / "out"), "--no-progress",
           "--source", "twin", "--twin-flavor", flavor, "--twin-port", "0", "--twin-latency-ms", str(latency_ms),
           "--twin-world", str(WORLD)]  # fmt: skip
    if hostile is not None:
        cmd += ["--twin-hostile", str(hostile)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the build failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
    line = re.search(r"^requests per endpoint: (.*)$", proc.stdout, re.M)
    counts = {k: int(v) for k, v in (item.rsplit(" ", 1) for item in line.group(1).split(", "))} if line else {}
    return counts, proc.stdout, wall


def run(seed: int = 29, flavor: str = "v1", latencies: tuple[float, ...] = (0.0, 200.0)) -> list[tuple]:
    from benchmarks.common import demo_context
    from sim.demo_world import ensure_world

    ensure_world(demo_context("hostile"))
    results = []
    for latency in latencies:
        kind, _, kind_wall = _build(BENCH_WORK / "hostile" / f"kind-{latency:g}", flavor, latency, None)
        hostile, text, hostile_wall = _build(BENCH_WORK / "hostile" / f"seed{seed}-{latency:g}", flavor, latency, seed)
        print(f"  {flavor}, +{latency:g} ms per answer: kind {sum(kind.values()):,} requests in {kind_wall:.0f} s, "
              f"hostile (seed {seed}) {sum(hostile.values()):,} in {hostile_wall:.0f} s "
              f"({sum(hostile.values()) / max(1, sum(kind.values())):.2f}x)")  # fmt: skip
        for endpoint in sorted(kind, key=lambda e: -kind[e]):
            if kind[endpoint] < MIN_REQUESTS:
                continue
            ratio = hostile.get(endpoint, 0) / kind[endpoint]
            verdict = "ok" if ratio <= TARGET else f"OVER {TARGET}"
            print(f"    {endpoint:<22} kind {kind[endpoint]:>6,}  hostile {hostile.get(endpoint, 0):>6,}  "
                  f"{ratio:.2f}x  {verdict}")  # fmt: skip
            results.append((latency, endpoint, kind[endpoint], hostile.get(endpoint, 0), ratio))
        for line in text.splitlines():
            if line.startswith(("requests met:", "budget of", "hidden limits:", "item faults:", "bank:", "fetch:")):
                print(f"    | {line}")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.bench_hostile")
    ap.add_argument("--seed", type=int, default=29)
    ap.add_argument("--flavor", choices=("v1", "v2"), default="v1")
    ap.add_argument("--latencies", type=float, nargs="+", default=[0.0, 200.0])
    args = ap.parse_args()
    run(args.seed, args.flavor, tuple(args.latencies))


if __name__ == "__main__":
    main()
