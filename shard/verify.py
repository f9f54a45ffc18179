"""Verify a release: every shard's sha256 and size against shards.csv, missing / unlisted / truncated / altered
shards; with deep=True also decode every row and check it against the contract, and check that the metadata
sidecars agree with the shards (shard.deep, one dask task per shard).

Hashing runs in threads, one file per thread (a stdlib ThreadPoolExecutor): hashlib is OpenSSL and releases the
GIL while it hashes a large buffer, so N threads hash N files at once, as `openssl dgst -sha256` run N times in
parallel would (benchmarks/bench_verify.py measures the two on the same files).
"""

from __future__ import annotations

import csv
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from core.hashing import sha256_file
from core.release_schema import SPLIT_DIRS, SPLITS
from shard.release import SHARDS_CSV_HEADER


@dataclass
class VerifyReport:
    out_dir: str
    deep: bool
    problems: list[str] = field(default_factory=list)
    shards_checked: int = 0
    bytes_hashed: int = 0
    rows_checked: int = 0
    seconds: float = 0.0
    hash_seconds: float = 0.0
    hash_workers: int = 1
    deep_seconds: float = 0.0
    deep_cpu_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def mb_per_s(self) -> float:
        """Hashing throughput (wall time of the hashing, all threads together; deep decoding is not counted)."""
        return self.bytes_hashed / 1e6 / self.hash_seconds if self.hash_seconds > 0 else 0.0

    @property
    def rows_per_cpu_s(self) -> float:
        """Deep checking throughput per core: rows per CPU second of the workers."""
        return self.rows_checked / self.deep_cpu_seconds if self.deep_cpu_seconds > 0 else 0.0

    def text(self) -> str:
        head = (
            f"verify {'--deep ' if self.deep else ''}{self.out_dir}: {'OK' if self.ok else 'FAILED'}; "
            f"{self.shards_checked} shards, {self.bytes_hashed / 1e6:.1f} MB hashed in {self.hash_seconds:.2f} s "
            f"({self.mb_per_s:.1f} MB/s, {self.hash_workers} threads), {self.seconds:.2f} s in all"
            + (
                f", {self.rows_checked} rows decoded in {self.deep_seconds:.1f} s "
                f"({self.rows_per_cpu_s:.0f} rows per CPU second)"
                if self.deep
                else ""
            )
        )
        lines = [head] + [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines) + "\n"


def _read_shards_csv(path: Path, report: VerifyReport) -> list[dict] | None:
    if not path.exists():
        report.problems.append("shards.csv is missing")
        return None
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if tuple(header or ()) != SHARDS_CSV_HEADER:
            report.problems.append(f"shards.csv header is {header}, expected {list(SHARDS_CSV_HEADER)}")
            return None
        rows = []
        for n, rec in enumerate(reader, start=2):
            if len(rec) != len(SHARDS_CSV_HEADER):
                report.problems.append(f"shards.csv line {n} has {len(rec)} fields")
                continue
            row = dict(zip(SHARDS_CSV_HEADER, rec, strict=True))
            try:
                row["n_samples"], row["size"], row["shard_id"] = (
                    int(row["n_samples"]),
                    int(row["size"]),
                    int(row["shard_id"]),
                )
            except ValueError:
                report.problems.append(f"shards.csv line {n}: non-integer n_samples/size/shard_id")
                continue
            rows.append(row)
    paths = [r["path"] for r in rows]
    if len(set(paths)) != len(paths):
        report.problems.append("shards.csv lists a shard more than once")
    return rows


def hash_files(paths: list[Path], workers: int | None = None) -> list[str]:
    """sha256 of each file, `workers` files at a time (default: one thread per core)."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(paths) or 1))
    if workers == 1:
        return [sha256_file(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sha256") as pool:
        return list(pool.map(sha256_file, paths))


def verify_release(
    out_dir: Path,
    deep: bool = False,
    workers: int | None = None,
    scheduler: str = "processes",
    progress: bool = False,
) -> VerifyReport:
    """Check the release in `out_dir`. `workers`: hashing threads (and local deep workers), default one per
    core; `scheduler`: where deep checks run (processes, threads, sync or a dask.distributed address)."""
    out_dir = Path(out_dir)
    start = time.perf_counter()
    report = VerifyReport(str(out_dir), deep)
    rows = _read_shards_csv(out_dir / "shards.csv", report)
    for name in ("README.md", "demo.parquet", *(f"metadata/{SPLIT_DIRS[s]}.parquet" for s in SPLITS)):
        if not (out_dir / name).exists():
            report.problems.append(f"{name} is missing")
    if rows is None:
        report.seconds = time.perf_counter() - start
        return report
    listed = {r["path"] for r in rows}
    for s in SPLITS:
        d = out_dir / SPLIT_DIRS[s]
        for f in sorted(d.glob("**/*.parquet")) if d.exists() else []:
            rel = f.relative_to(out_dir).as_posix()
            if rel not in listed:
                report.problems.append(f"{rel}: shard not listed in shards.csv")
    to_hash: list[dict] = []
    for r in sorted(rows, key=lambda r: r["path"]):
        path = out_dir / r["path"]
        expected_dir = SPLIT_DIRS.get(r["split"])
        if expected_dir is None or not r["path"].startswith(expected_dir + "/"):
            report.problems.append(f"{r['path']}: split {r['split']!r} does not match its folder")
        if not path.exists():
            report.problems.append(f"{r['path']}: shard missing")
            continue
        size = path.stat().st_size
        report.shards_checked += 1
        if size != r["size"]:
            what = "truncated" if size < r["size"] else "size changed"
            report.problems.append(f"{r['path']}: {what} ({size} bytes, shards.csv says {r['size']})")
            continue
        to_hash.append(r)
    report.hash_workers = max(1, min(workers or os.cpu_count() or 1, len(to_hash) or 1))
    t0 = time.perf_counter()
    digests = hash_files([out_dir / r["path"] for r in to_hash], workers)
    report.hash_seconds = time.perf_counter() - t0
    intact: list[dict] = []
    for r, digest in zip(to_hash, digests, strict=True):
        report.bytes_hashed += r["size"]
        if digest != r["sha256"]:
            report.problems.append(f"{r['path']}: sha256 {digest} differs from shards.csv {r['sha256']} (altered)")
            continue
        intact.append(r)
    if deep:
        from shard.deep import deep_check

        t0 = time.perf_counter()
        deep_check(out_dir, rows, intact, report, scheduler=scheduler, workers=workers, progress=progress)
        report.deep_seconds = time.perf_counter() - t0
    report.seconds = time.perf_counter() - start
    return report
