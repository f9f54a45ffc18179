"""One release row by its combined_sample_hash, without scanning: the sidecars are read with a filter (pyarrow
skips row groups whose statistics exclude the hash), then the row's shard at the one row group whose hash range
holds it (shards are sorted by hash and carry statistics). `show` and the report use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.errors import UserError
from core.release_schema import SPLIT_DIRS, SPLITS


@dataclass
class FoundRow:
    sidecar: dict  # the sidecar's columns of the row (identity, labels, metadata JSON, shard_path)
    row: dict  # the full release row, images included


def find_row(out: Path, combined_hash: str) -> FoundRow:
    """The release row with this combined_sample_hash; UserError if no sidecar lists it."""
    out = Path(out)
    hit = None
    for split in SPLITS:
        sidecar = out / "metadata" / f"{SPLIT_DIRS[split]}.parquet"
        if not sidecar.exists():
            continue
        t = pq.read_table(sidecar, filters=pc.field("combined_sample_hash") == combined_hash)
        if t.num_rows:
            hit = t.slice(0, 1).to_pylist()[0]
            break
    if hit is None:
        raise UserError(f"no row {combined_hash} in the metadata sidecars of {out}")
    return FoundRow(hit, read_shard_row(out / hit["shard_path"], combined_hash))


def read_shard_row(path: Path, combined_hash: str) -> dict:
    """The row from the one row group of the shard whose combined_sample_hash statistics hold the hash."""
    if not path.exists():
        raise UserError(f"row {combined_hash}: its shard {path} is missing")
    pf = pq.ParquetFile(path)
    col = pf.schema_arrow.get_field_index("combined_sample_hash")
    for i in range(pf.metadata.num_row_groups):
        stats = pf.metadata.row_group(i).column(col).statistics
        if stats is not None and stats.has_min_max and not stats.min <= combined_hash <= stats.max:
            continue
        group = pf.read_row_group(i)
        match = group.filter(pc.equal(group.column("combined_sample_hash"), pa.scalar(combined_hash)))
        if match.num_rows:
            return match.slice(0, 1).to_pylist()[0]
    raise UserError(f"row {combined_hash}: the sidecar names {path}, which does not hold it")
