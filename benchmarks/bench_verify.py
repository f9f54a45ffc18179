"""verify beside `openssl dgst -sha256` over the same shard files with the same parallelism, in the same run;
then verify --deep on the dask scheduler and on one core.

.venv/bin/python -m benchmarks.bench_verify [--out out] [--workers 2]

Shallow: N threads of verify against N `openssl dgst -sha256` processes, each given a share of the files
balanced by size; both timed warm (the files are read once first), best of REPEATS runs. The ratio is verify's
MB/s over openssl's. Deep: rows per second of wall time with N local worker processes, and rows per CPU second
of the workers (per core), which the machine's other load changes less than wall time.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import time
from pathlib import Path

from shard.verify import hash_files, verify_release

REPEATS = 7
ROUNDS = 4  # the files hashed this many times in one call, so that openssl's process start weighs less


def _warm(paths: list[Path]) -> None:
    for p in paths:
        with open(p, "rb") as fh:
            while fh.read(16 << 20):
                pass


def _balanced(paths: list[Path], n: int) -> list[list[Path]]:
    """Files in n groups of about equal bytes (largest first, each to the lightest group)."""
    groups: list[list[Path]] = [[] for _ in range(n)]
    load = [0] * n
    for p in sorted(paths, key=lambda p: -p.stat().st_size):
        k = load.index(min(load))
        groups[k].append(p)
        load[k] += p.stat().st_size
    return [g for g in groups if g]


def _openssl(paths: list[Path], n: int) -> None:
    procs = [
        subprocess.Popen(["openssl", "dgst", "-sha256", *map(str, g)], stdout=subprocess.DEVNULL)
        for g in _balanced(paths, n)
    ]
    for p in procs:
        if p.wait() != 0:
            raise RuntimeError("openssl dgst failed")


def _best(fn, repeats: int = REPEATS) -> float:  # noqa: ANN001
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(out: Path, workers: int | None = None) -> dict | None:
    if not (out / "shards.csv").exists():
        print(f"verify: no release at {out} (run `make build` first); skipped")
        return None
    n = workers or os.cpu_count() or 1
    paths = [out / row["path"] for row in csv.DictReader((out / "shards.csv").open())]
    total_mb = sum(p.stat().st_size for p in paths) / 1e6
    _warm(paths)
    report = verify_release(out, workers=n)
    verify_s = _best(lambda: verify_release(out, workers=n))
    result = {"verify_mb_s": total_mb / verify_s, "ok": report.ok, "workers": n}
    line = (
        f"verify: {len(paths)} shards, {total_mb:.1f} MB, {n} threads: {verify_s:.3f} s = "
        f"{total_mb / verify_s:.0f} MB/s (whole shallow verify, best of {REPEATS})"
    )
    if shutil.which("openssl"):
        ssl_s = _best(lambda: _openssl(paths, n))
        result["openssl_mb_s"] = total_mb / ssl_s
        result["ratio"] = ssl_s / verify_s
        line += (
            f"\nopenssl dgst -sha256, {n} processes on the same files: {ssl_s:.3f} s = {total_mb / ssl_s:.0f} MB/s; "
            f"ratio verify / openssl {ssl_s / verify_s:.2f}"
        )
        many = paths * ROUNDS
        hash_s = _best(lambda: hash_files(many, n))
        ssl_many_s = _best(lambda: _openssl(many, n))
        result["hash_ratio"] = ssl_many_s / hash_s
        line += (
            f"\nthe same files {ROUNDS} times over ({ROUNDS * total_mb:.0f} MB): verify's hashing "
            f"{ROUNDS * total_mb / hash_s:.0f} MB/s, openssl {ROUNDS * total_mb / ssl_many_s:.0f} MB/s; "
            f"ratio {ssl_many_s / hash_s:.2f}"
        )
    else:
        line += "\nopenssl not found: no baseline"
    deep = verify_release(out, deep=True, workers=n, scheduler="processes")
    one = verify_release(out, deep=True, scheduler="sync")
    result.update(
        deep_rows_s=deep.rows_checked / deep.deep_seconds,
        deep_rows_per_cpu_s=deep.rows_per_cpu_s,
        deep_one_core_rows_s=one.rows_checked / one.deep_seconds,
    )
    line += (
        f"\nverify --deep, {n} worker processes: {deep.rows_checked} rows in {deep.deep_seconds:.1f} s = "
        f"{deep.rows_checked / deep.deep_seconds:.0f} rows/s (with the workers' start), "
        f"{deep.rows_per_cpu_s:.0f} rows per worker CPU second (per core)"
        f"\nverify --deep on one core (sync scheduler): {one.rows_checked / one.deep_seconds:.0f} rows/s, "
        f"{one.rows_per_cpu_s:.0f} rows per CPU second; ok={deep.ok and one.ok}"
    )
    print(line)
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("out"))
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()
    run(args.out, args.workers)


if __name__ == "__main__":
    main()
