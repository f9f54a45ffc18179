"""Verify a release: every shard's sha256 and size against shards.csv (streamed), missing / unlisted /
truncated / altered shards; with deep=True also decode every row (batch-wise) and check it against
the contract, and check that the metadata sidecars agree with the shards."""

from __future__ import annotations

import csv
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.hashing import sha256_file
from shard.release import SHARDS_CSV_HEADER
from shard.rules import decoded_problems, row_problems, table_rows
from shard.schema import METADATA_SIDECAR_SCHEMA, NON_IMAGE_COLUMNS, RELEASE_SCHEMA, SPLIT_DIRS, SPLITS

BATCH_ROWS = 32


def same_schema(got: pa.Schema, want: pa.Schema) -> bool:
    """Names, types and the Hugging Face features equal. (Parquet names list items `element` on
    read-back, which pyarrow's equality ignores without metadata; the HF metadata must match exactly.)"""
    hf = b"huggingface"
    return got.equals(want, check_metadata=False) and (got.metadata or {}).get(hf) == want.metadata[hf]


MAX_ROW_PROBLEMS_PER_FILE = 20


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

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def mb_per_s(self) -> float:
        """Hashing throughput (time spent hashing only; deep decoding is not counted)."""
        return self.bytes_hashed / 1e6 / self.hash_seconds if self.hash_seconds > 0 else 0.0

    def text(self) -> str:
        head = (
            f"verify {'--deep ' if self.deep else ''}{self.out_dir}: {'OK' if self.ok else 'FAILED'}; "
            f"{self.shards_checked} shards, {self.bytes_hashed / 1e6:.1f} MB hashed in {self.hash_seconds:.2f} s "
            f"({self.mb_per_s:.1f} MB/s), {self.seconds:.2f} s in all"
            + (f", {self.rows_checked} rows decoded" if self.deep else "")
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


def verify_release(out_dir: Path, deep: bool = False) -> VerifyReport:
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
    intact: list[dict] = []
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
        t0 = time.perf_counter()
        digest = sha256_file(path)
        report.hash_seconds += time.perf_counter() - t0
        report.bytes_hashed += size
        if digest != r["sha256"]:
            report.problems.append(f"{r['path']}: sha256 {digest} differs from shards.csv {r['sha256']} (altered)")
            continue
        intact.append(r)
    if deep:
        damaged = {r["split"] for r in rows if r not in intact}  # sidecar comparison needs every shard
        _deep(out_dir, intact, damaged, report)
    report.seconds = time.perf_counter() - start
    return report


def _row_digest(h: Any, rows: list[dict]) -> None:
    for r in rows:
        h.update(json.dumps(r, sort_keys=True, default=repr).encode())
        h.update(b"\n")


def _deep(out_dir: Path, shards: list[dict], damaged: set[str], report: VerifyReport) -> None:
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for r in shards:
        if r["split"] in by_split:
            by_split[r["split"]].append(r)
    all_hashes: list[pa.Array] = []
    for split in SPLITS:
        digest = hashlib.sha256()
        n_rows = 0
        prev: str | None = None
        for r in sorted(by_split[split], key=lambda r: r["shard_id"]):
            n_rows += _deep_shard(out_dir, r, split, digest, report)
        sidecar = out_dir / "metadata" / f"{SPLIT_DIRS[split]}.parquet"
        if not sidecar.exists():
            continue
        try:
            pf = pq.ParquetFile(sidecar)
        except (OSError, pa.ArrowException) as exc:
            report.problems.append(f"metadata/{sidecar.name}: unreadable: {exc}")
            continue
        if not same_schema(pf.schema_arrow, METADATA_SIDECAR_SCHEMA):
            report.problems.append(f"metadata/{sidecar.name}: schema differs from METADATA_SIDECAR_SCHEMA")
            continue
        side = hashlib.sha256()
        n_side = 0
        for batch in pf.iter_batches(batch_size=4096):
            hashes = batch.column("combined_sample_hash")
            all_hashes.append(hashes)
            for h in hashes.to_pylist():
                if prev is not None and h <= prev:
                    report.problems.append(f"metadata/{sidecar.name}: {h} out of order or duplicated")
                prev = h
            _row_digest(side, pa.Table.from_batches([batch]).to_pylist())
            n_side += batch.num_rows
        if split not in damaged and (n_side != n_rows or side.hexdigest() != digest.hexdigest()):
            report.problems.append(
                f"metadata/{sidecar.name}: disagrees with the {split} shards ({n_side} rows vs {n_rows})"
            )
    if all_hashes:
        allh = pa.chunked_array(all_hashes)
        if len(pc.unique(allh)) != len(allh):
            counts = pc.value_counts(allh)
            dups = [c["values"] for c in counts.to_pylist() if c["counts"] > 1]
            report.problems.append(f"combined_sample_hash not unique across splits: {sorted(dups)[:5]}")
    demo = out_dir / "demo.parquet"
    if demo.exists():
        try:
            t = pq.read_table(demo)
            if not same_schema(t.schema, RELEASE_SCHEMA):
                report.problems.append("demo.parquet: schema differs from RELEASE_SCHEMA")
            else:
                _check_rows(t, "demo.parquet", None, report)
        except (OSError, pa.ArrowException) as exc:
            report.problems.append(f"demo.parquet: unreadable: {exc}")


def _check_rows(table: pa.Table, name: str, split: str | None, report: VerifyReport) -> list[dict]:
    rows = table_rows(table)
    full = table.to_pylist()
    bad = 0
    for r, f in zip(rows, full, strict=True):
        problems = row_problems(r, split=split) + decoded_problems(f)
        if problems:
            bad += 1
            if bad <= MAX_ROW_PROBLEMS_PER_FILE:
                report.problems.append(f"{name}: row {r['combined_sample_hash']}: " + "; ".join(problems))
    report.rows_checked += len(rows)
    return rows


def _deep_shard(out_dir: Path, r: dict, split: str, digest: Any, report: VerifyReport) -> int:
    name = r["path"]
    try:
        pf = pq.ParquetFile(out_dir / name)
    except (OSError, pa.ArrowException) as exc:
        report.problems.append(f"{name}: unreadable: {exc}")
        return 0
    if not same_schema(pf.schema_arrow, RELEASE_SCHEMA):
        report.problems.append(f"{name}: schema differs from RELEASE_SCHEMA")
        return 0
    n = 0
    prev: str | None = None
    for batch in pf.iter_batches(batch_size=BATCH_ROWS):
        t = pa.Table.from_batches([batch], schema=RELEASE_SCHEMA)
        for h in t.column("combined_sample_hash").to_pylist():
            if prev is not None and h <= prev:
                report.problems.append(f"{name}: {h} out of hash order or duplicated")
            prev = h
        _check_rows(t, name, split, report)
        side = t.select(list(NON_IMAGE_COLUMNS)).append_column("shard_path", pa.array([name] * t.num_rows))
        _row_digest(digest, side.to_pylist())
        n += t.num_rows
    if n != r["n_samples"]:
        report.problems.append(f"{name}: {n} rows, shards.csv says {r['n_samples']}")
    return n
