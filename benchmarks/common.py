"""Shared by the benchmarks: where they build, and a CPU-time accumulator."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from config import load_config
from pipeline.context import BuildContext

BENCH_WORK = Path("work") / "bench"


def demo_context(name: str, n_sites: int | None = None, **updates: object) -> BuildContext:
    """A demo build of its own under work/bench/<name>, optionally with another world size."""
    cfg = load_config("demo")
    if n_sites is not None:
        updates["demo_world"] = cfg.demo_world.model_copy(update={"n_sites": n_sites})
    cfg = cfg.model_copy(update=updates)
    root = (BENCH_WORK / name).resolve()
    return BuildContext("demo", cfg, root / "work", root / "out")


class CpuTimer:
    """Accumulates process CPU seconds per step (per core, whatever threads a library starts)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        start = time.process_time()
        try:
            yield
        finally:
            self.seconds[step] += time.process_time() - start


def descendants(pid: int) -> list[int]:
    """pid and every process below it. psutil reads each thread's children: a process started from another thread
    than the main one (a dask nanny's worker, a pool's) is not in /proc/PID/task/PID/children."""
    import psutil

    try:
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    except psutil.Error:
        return [pid]


def status_mb(pid: int, key: str) -> float:
    """A memory line of /proc/PID/status in MB (`VmRSS`: now, `VmHWM`: the peak); 0 for a process gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0
