"""The bank at real scale (issue 17): a generated world of 20,000 proofread neurons served by the hostile twin.

The bank stage runs in its own process (2 local workers) against `sim/twin/scale.py`'s world behind the hostile
twin (30 ms median latency, drawn limits, faults); it is killed with SIGKILL once about half of its partitions are
done and run again, which must redo none of them. Printed: roots, candidates per type, requests per root by
endpoint, bytes, peak RSS per process, wall time, and `plan`'s estimate for the same world beside it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.common import descendants, status_mb
from core.layout import MARKER
from pipeline.plan import bank_hours
from pipeline.twin_build import scale_twin
from sim.twin.hostile import endpoint_class
from sim.twin.scale import ScaleParams

WORKERS = 2
LATENCY_MS = 30.0
HOSTILE_SEED = 7
BANK_THREADS = 8


def _run_bank(work: Path, env: dict, kill_when_done: int | None, peaks: dict[int, float]) -> tuple[str, float, int]:
    """One bank run; SIGKILL of its process group once `kill_when_done` partitions are sealed. Returns (its output,
    wall seconds, partitions sealed when it ended)."""
    cmd = [sys.executable, "-m", "pipeline", "stage", "bank", "--species", "demo", "--work", str(work / "w"),
           "--out", str(work / "out"), "--workers", str(WORKERS), "--no-progress"]  # fmt: skip
    bank_dir = work / "w" / "demo" / "bank"
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        while proc.poll() is None:
            for p in descendants(proc.pid):
                peaks[p] = max(peaks.get(p, 0.0), status_mb(p, "VmHWM"))
            if kill_when_done is not None and len(list(bank_dir.glob(f"part-*{MARKER}"))) >= kill_when_done:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.5)
        log.seek(0)
        text = log.read()
    return text, time.perf_counter() - start, len(list(bank_dir.glob(f"part-*{MARKER}")))


def measure(neurons: int = 20_000, synapses: int = 1_000_000, kill: bool = True) -> dict:
    params = ScaleParams(neurons=neurons, synapses=synapses, other_roots=3 * neurons)
    work = Path(tempfile.mkdtemp(prefix="cb2-bank-scale-"))
    with scale_twin(work, params, LATENCY_MS, HOSTILE_SEED, bank_threads=BANK_THREADS) as (server, env):
        peaks: dict[int, float] = {}
        n_parts = 2 ** max(0, (neurons // 64 - 1).bit_length())  # pipeline.partitions.level_for
        first, wall_1, sealed = _run_bank(work, env, n_parts // 2 if kill else None, peaks)
        second, wall_2, _ = ("", 0.0, 0)
        if kill:
            second, wall_2, _ = _run_bank(work, env, None, peaks)
        records = server.log.records()
        world = server.world.summary["counts"]
    out = (second or first).strip().splitlines()
    line = next((x for x in out if x.startswith("bank:")), out[-1] if out else "")
    found = re.search(r"\((\d+) run, (\d+) already done\)", line)
    parts = sorted(p for p in (work / "w" / "demo" / "bank").glob("part-*.parquet") if p.name.count(".") == 1)
    types = Counter()
    for p in parts:
        types.update(pq.read_table(p, columns=["sample_type"]).column("sample_type").to_pylist())
    by_endpoint = Counter(endpoint_class(r.path) or r.path.strip("/").split("/")[0] for r in records)
    return {
        "world": world,
        "roots": neurons,
        "candidates": dict(sorted(types.items())),
        "requests": len(records),
        "requests_per_root": {k: round(v / neurons, 2) for k, v in by_endpoint.most_common()},
        "bytes": sum(r.bytes_sent for r in records),
        "peak_rss_mb": sorted(peaks.values(), reverse=True)[: WORKERS + 2],
        "wall_s": wall_1 + wall_2,
        "killed_after": sealed if kill else None,
        "second_run": line,
        "rerun_redid": None if found is None else int(found.group(1)),
        "rerun_reused": None if found is None else int(found.group(2)),
        "estimate_s": bank_hours(neurons, WORKERS) * 3600,  # the demo world's cost per root (pipeline/plan.py)
    }


def run(neurons: int = 20_000) -> dict:
    got = measure(neurons)
    w = got["world"]
    print(
        f"world: {got['roots']:,} proofread roots, {w['operations']:,} edits ({w['merges']:,} merges; per neuron "
        f"median {w['ops_per_neuron']['median']:g}, mean {w['ops_per_neuron']['mean']:.1f}, max "
        f"{w['ops_per_neuron']['max']}), {w['synapses']:,} synapse rows, {w['level2_nodes']:,} level-2 nodes"
    )
    print("candidates per type: " + ", ".join(f"{k} {v:,}" for k, v in got["candidates"].items()))
    print(
        f"requests: {got['requests']:,} ({got['requests'] / got['roots']:.1f} per root); per root by endpoint: "
        + ", ".join(f"{k} {v:g}" for k, v in got["requests_per_root"].items())
    )
    print(f"bytes sent by the twin: {got['bytes'] / 1e9:.2f} GB ({got['bytes'] / got['roots'] / 1e3:.0f} KB per root)")
    print(
        "peak RSS per process (MB, largest first: the bank's main process and its workers): "
        + ", ".join(f"{v:.0f}" for v in got["peak_rss_mb"])
    )
    print(
        f"wall time with {WORKERS} workers x {BANK_THREADS} threads, hostile twin at {LATENCY_MS:g} ms median: "
        f"{got['wall_s']:.0f} s (killed -9 after {got['killed_after']} sealed partitions, then rerun)"
    )
    print(f"rerun after kill -9: {got['second_run']}")
    ratio = got["wall_s"] / got["estimate_s"] if got["estimate_s"] else float("nan")
    print(f"plan's estimate for this world: {got['estimate_s']:.0f} s; measured / estimate = {ratio:.2f}")
    return got


if __name__ == "__main__":
    run(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
