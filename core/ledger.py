"""The failures ledger: every sample that could not be built, with its stage, reason and exception.

Each partition writes its own failures file atomically beside its output; the species ledger
`work/<species>/failures.parquet` is the sorted union of them, rebuilt after every stage, so a
rerun never duplicates or loses a row.
"""

from __future__ import annotations

import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core.atomic import write_parquet
from core.errors import UserError, is_retryable
from core.layout import SpeciesPaths

FAILURE_SCHEMA = pa.schema(
    [
        ("sample_id", pa.string()),
        ("species", pa.string()),
        ("sample_type", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("exception", pa.string()),
    ]
)


@dataclass(frozen=True)
class Failure:
    sample_id: str
    species: str
    sample_type: str
    stage: str
    reason: str
    exception: str


def describe(exc: BaseException) -> str:
    """One line: the exception type and message, plus where it was raised (no volatile addresses)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


def failures_table(failures: list[Failure]) -> pa.Table:
    rows = sorted(failures, key=lambda f: (f.stage, f.sample_id, f.reason, f.exception))
    return pa.Table.from_pylist([asdict(f) for f in rows], schema=FAILURE_SCHEMA)


def write_failures(path: Path, failures: list[Failure]) -> None:
    write_parquet(path, failures_table(failures))


def read_failures(path: Path, missing_ok: bool = True) -> list[Failure]:
    """The failures in one file (a partition's, or a species' ledger); none when it does not exist and
    `missing_ok`. A file without the ledger's columns is a UserError naming it."""
    path = Path(path)
    if not path.exists():
        if missing_ok:
            return []
        raise UserError(f"failures ledger {path} does not exist")
    table = pq.read_table(path)
    lacking = [c for c in FAILURE_SCHEMA.names if c not in table.column_names]
    if lacking:
        raise UserError(f"failures ledger {path} lacks columns {lacking}")
    return [Failure(**row) for row in table.select(FAILURE_SCHEMA.names).to_pylist()]


def merge_ledger(paths: SpeciesPaths) -> pa.Table:
    """Rebuild `failures.parquet` from the failures files of every stage's current partitions (an older layout's,
    in `<stage>/previous/`, are not read); the same failure found by two partitions (an operation in two roots'
    histories) is listed once. Returns the ledger."""
    failures: set[Failure] = set()
    for path in paths.failure_files():
        failures.update(read_failures(path))
    table = failures_table(list(failures))
    write_parquet(paths.ledger_path, table)
    return table


def retry_counts(ledger: pa.Table, stage: str) -> dict[str, int]:
    """Per reason, the distinct items of `stage` in the ledger that the next build retries (`is_retryable`)."""
    seen: dict[str, set[str]] = {}
    for row in ledger.select(["sample_id", "stage", "reason"]).to_pylist():
        if row["stage"] == stage and is_retryable(row["reason"]):
            seen.setdefault(row["reason"], set()).add(row["sample_id"])
    return {reason: len(ids) for reason, ids in sorted(seen.items())}
