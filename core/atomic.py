"""The one writer of files: write to a temp file in the same directory, fsync, rename.

A reader never sees a partial file: either the old content, or the complete new one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success rename it over `path`, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; a release is meant to be read
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


TEMP_GLOB = ".*.tmp"


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete temp files a killed writer left under `folder` (no writer may be running there)."""
    removed = 0
    for tmp in Path(folder).rglob(TEMP_GLOB):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Deterministic JSON: sorted keys, fixed separators, trailing newline."""
    write_text(path, json.dumps(obj, sort_keys=True, indent=2) + "\n")


PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "write_statistics": True}


def write_parquet(path: str | os.PathLike, table: pa.Table, **options: Any) -> None:
    """Write a parquet file atomically. Deterministic bytes for the same table."""
    opts = {**PARQUET_OPTIONS, **options}
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **opts)
