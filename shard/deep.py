"""verify --deep: decode every row of every shard and check it against the contract, and compare the metadata
sidecars with the shards. One dask task per shard (local worker processes by default, or a dask.distributed
scheduler's address, as for the build), with a progress bar counting rows.

A task reads its shard in batches, checks identity, labels, routing, slots and flags of every row
(shard.rules.row_problems), decodes its geometry and images and checks them (shard.rules.decoded_problems), and
compares the shard's non-image columns with the sidecar rows that name it (read with a filter on shard_path: the
sidecar's row-group statistics skip the rest). The main process checks what spans shards: each sidecar's schema,
order and row counts per shard, and that combined_sample_hash is unique across the splits.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import dask
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset  # noqa: F401 - read_table(filters=...) needs it: imported with the module, not in a task
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from core.compute import compute
from core.release_schema import (
    IMAGE_COLUMNS,
    METADATA_SIDECAR_SCHEMA,
    NON_IMAGE_COLUMNS,
    RELEASE_SCHEMA,
    SPLIT_DIRS,
    SPLITS,
    same_schema,
)
from shard.rules import decoded_problems, row_problems, table_rows

BATCH_ROWS = 64
MAX_ROW_PROBLEMS_PER_FILE = 20


@dataclass
class FileResult:
    """What one task found in one parquet file."""

    name: str
    rows: int = 0
    problems: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0


def check_file(out_dir: str, name: str, split: str | None, n_samples: int | None, sidecar_ok: bool) -> FileResult:
    """Check every row of the shard `name` (or demo.parquet, split None) and, for a shard, its sidecar rows."""
    cpu0 = time.process_time()
    res = FileResult(name)
    try:
        pf = pq.ParquetFile(Path(out_dir) / name)
    except (OSError, pa.ArrowException) as exc:
        res.problems.append(f"{name}: unreadable: {exc}")
        return res
    if not same_schema(pf.schema_arrow, RELEASE_SCHEMA):
        res.problems.append(f"{name}: schema differs from RELEASE_SCHEMA")
        return res
    bad = 0
    prev: str | None = None
    ours: list[pa.Table] = []
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, use_threads=False):  # one core per task
        t = pa.Table.from_batches([batch], schema=RELEASE_SCHEMA)
        if split is not None:
            for h in t.column("combined_sample_hash").to_pylist():
                if prev is not None and h <= prev:
                    res.problems.append(f"{name}: {h} out of hash order or duplicated")
                prev = h
        for r, full in zip(table_rows(t), _payloads(t), strict=True):
            problems = row_problems(r, split=split) + decoded_problems(full)
            if problems:
                bad += 1
                if bad <= MAX_ROW_PROBLEMS_PER_FILE:
                    res.problems.append(f"{name}: row {r['combined_sample_hash']}: " + "; ".join(problems))
        if split is not None:
            ours.append(t.select(list(NON_IMAGE_COLUMNS)).append_column("shard_path", pa.array([name] * t.num_rows)))
        res.rows += t.num_rows
    if n_samples is not None and res.rows != n_samples:
        res.problems.append(f"{name}: {res.rows} rows, shards.csv says {n_samples}")
    if split is not None and sidecar_ok:
        res.problems += _compare_sidecar(Path(out_dir), name, split, ours)
    res.cpu_seconds = time.process_time() - cpu0
    return res


def _payloads(t: pa.Table) -> list[dict]:
    """Per row, what decoded_problems reads: sample_type, the geometry bytes and each image as {"bytes": ...}
    (column by column: no dicts of the other columns)."""
    cols = {"sample_type": t.column("sample_type").to_pylist(), "geometry": t.column("geometry").to_pylist()}
    for name in IMAGE_COLUMNS:
        cols[name] = [None if b is None else {"bytes": b} for b in pc.struct_field(t.column(name), "bytes").to_pylist()]
    return [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)]


def _compare_sidecar(out_dir: Path, name: str, split: str, ours: list[pa.Table]) -> list[str]:
    sidecar = f"metadata/{SPLIT_DIRS[split]}.parquet"
    try:
        side = pq.read_table(out_dir / sidecar, filters=pc.field("shard_path") == name)
    except (OSError, pa.ArrowException) as exc:
        return [f"{sidecar}: unreadable: {exc}"]
    mine = pa.concat_tables(ours).cast(METADATA_SIDECAR_SCHEMA) if ours else METADATA_SIDECAR_SCHEMA.empty_table()
    if side.num_rows != mine.num_rows or not side.cast(METADATA_SIDECAR_SCHEMA).equals(mine):
        return [f"{sidecar}: disagrees with the {split} shard {name} ({side.num_rows} rows vs {mine.num_rows})"]
    return []


def _check_sidecars(out_dir: Path, listed: list[dict], report) -> dict[str, bool]:  # noqa: ANN001 - VerifyReport
    """Schema, order and per-shard counts of each sidecar, hashes unique across splits. Returns, per split,
    whether its sidecar can be compared row by row with the shards."""
    ok: dict[str, bool] = {}
    all_hashes: list[pa.Array] = []
    for split in SPLITS:
        ok[split] = False
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
        ok[split] = True
        t = pf.read(columns=["combined_sample_hash", "shard_path"])
        hashes = t.column("combined_sample_hash").combine_chunks()
        all_hashes.append(hashes)
        if len(hashes) > 1:
            h = hashes.cast(pa.large_string())
            not_increasing = pc.less_equal(h.slice(1), h.slice(0, len(h) - 1))
            for i in pc.indices_nonzero(not_increasing).to_pylist()[:MAX_ROW_PROBLEMS_PER_FILE]:
                report.problems.append(f"metadata/{sidecar.name}: {hashes[i + 1].as_py()} out of order or duplicated")
        counts = {c["values"]: c["counts"] for c in pc.value_counts(t.column("shard_path")).to_pylist()}
        mine = {r["path"]: r["n_samples"] for r in listed if r["split"] == split}
        for path, n in sorted(mine.items()):
            if counts.get(path, 0) != n:
                report.problems.append(
                    f"metadata/{sidecar.name}: disagrees with the {split} shards: {counts.get(path, 0)} rows name "
                    f"{path}, shards.csv says {n}"
                )
        for path in sorted(set(counts) - set(mine), key=str):
            report.problems.append(f"metadata/{sidecar.name}: {counts[path]} rows name {path}, not a {split} shard")
    if all_hashes:
        allh = pa.chunked_array(all_hashes)
        if len(pc.unique(allh)) != len(allh):
            dups = [c["values"] for c in pc.value_counts(allh).to_pylist() if c["counts"] > 1]
            report.problems.append(f"combined_sample_hash not unique across splits: {sorted(dups)[:5]}")
    return ok


def deep_check(
    out_dir: Path,
    listed: list[dict],
    intact: list[dict],
    report,  # noqa: ANN001 - shard.verify.VerifyReport
    scheduler: str = "processes",
    workers: int | None = None,
    progress: bool = False,
) -> None:
    """Add the deep checks' problems, rows and CPU time to `report`. `intact`: the shards whose sha256 matched
    (only they are decoded); `listed`: every shard in shards.csv (for the sidecars' counts)."""
    out_dir = Path(out_dir)
    sidecar_ok = _check_sidecars(out_dir, listed, report)
    jobs = [(r["path"], r["split"], r["n_samples"], sidecar_ok.get(r["split"], False)) for r in intact]
    demo = out_dir / "demo.parquet"
    if demo.exists():
        jobs.append(("demo.parquet", None, None, False))
    total = sum(r["n_samples"] for r in intact)
    if demo.exists():
        with contextlib.suppress(OSError, pa.ArrowException):  # an unreadable demo.parquet is its task's problem
            total += pq.read_metadata(demo).num_rows
    bar = tqdm(total=total, desc="verify --deep", unit="row", disable=not progress or not jobs)

    def on_result(res: object) -> None:
        if isinstance(res, FileResult):
            bar.update(res.rows)

    tasks = [dask.delayed(check_file, pure=False)(str(out_dir), *job) for job in jobs]
    try:
        results = compute(tasks, scheduler, workers, on_result) if tasks else []
    finally:
        bar.close()
    for res in sorted(results, key=lambda r: r.name):
        report.problems += res.problems
        report.rows_checked += res.rows
        report.deep_cpu_seconds += res.cpu_seconds
