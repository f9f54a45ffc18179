"""What earlier runs left for a partition that runs again: per-sample keys, failures and outputs to reuse.

A sample is reused when the key of its inputs (its bank row, the config keys its stage reads, its upstream
output, the code version) equals the key recorded by the run that built it. The earlier run is the
partition's own previous marker, or, after a change of layout, the markers in `<stage>/previous/` whose hash
range overlaps this partition's (see runner.relayout).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core.errors import is_retryable
from core.hashing import sha256_file
from core.layout import FAILURES, MARKER, sibling
from core.ledger import Failure, read_failures
from pipeline.context import PREVIOUS, BuildContext
from pipeline.markers import read_marker
from pipeline.partitions import PREFIX_BITS, bucket_range, ranges_overlap

LEVEL_FILE = "level.json"


def previous_level(stage_dir: Path) -> int | None:
    try:
        return int(json.loads((stage_dir / PREVIOUS / LEVEL_FILE).read_text())["level"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


@dataclass
class PriorRun:
    """Keys, failures and output records of the earlier runs that covered a partition's hash range."""

    keys: dict[str, str] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)
    digests: dict[str, dict] = field(default_factory=dict)
    dropped: dict[str, dict] = field(default_factory=dict)  # outputs recorded but dropped by choice (fetched files)
    parts: list[Path] = field(default_factory=list)  # marker paths whose outputs may hold reusable rows
    hash_range: tuple[int, int] = (0, 1 << PREFIX_BITS)

    def reusable(self, sample_id: str, key: str) -> bool:
        return self.keys.get(sample_id) == key

    def failure(self, sample_id: str, key: str) -> Failure | None:
        """The failure recorded for the sample under the same key, to keep; none for a retryable one (a server
        could not give it: the sample is tried again)."""
        found = self.failures.get(sample_id) if self.reusable(sample_id, key) else None
        return None if found is None or is_retryable(found.reason) else found

    def rows(self, ctx: BuildContext, wanted: set[str], output_suffix: str = ".parquet") -> pa.Table | None:
        """The earlier rows of `wanted` sample hashes from the parts' parquet outputs, where those parts still
        hash as their markers say (a part corrupted on disk is never reused)."""
        tables = []
        for marker_path in self.parts:
            out = sibling(marker_path, output_suffix)
            # by file name: a part of an older layout was moved into previous/ after its marker was written
            recorded = {Path(rel).name: rec for rel, rec in (read_marker(marker_path) or {}).get("outputs", {}).items()}
            if not out.exists() or recorded.get(out.name, {}).get("sha256") != sha256_file(out):
                continue
            table = pq.read_table(out)
            hashes = table.column("combined_sample_hash").to_pylist()
            keep = [i for i, h in enumerate(hashes) if h in wanted]
            if keep:
                tables.append(table.take(pa.array(keep, pa.int64())))
        return pa.concat_tables(tables) if tables else None


def _prior_markers(ctx: BuildContext, stage: str, index: int, level: int) -> list[Path]:
    paths = []
    same = ctx.part_file(stage, index, MARKER)
    marker = read_marker(same)
    if marker is not None and marker.get("level") == level:
        paths.append(same)
    old = previous_level(ctx.stage_dir(stage))
    if old is not None:
        lo, hi = bucket_range(index, level)
        first, last = (lo >> (PREFIX_BITS - old)) if old else 0, ((hi - 1) >> (PREFIX_BITS - old)) if old else 0
        for i in range(first, last + 1):
            p = ctx.part_file(stage, i, MARKER, previous=True)
            if p.exists() and ranges_overlap(bucket_range(i, old), (lo, hi)):
                paths.append(p)
    return paths


def load_prior(ctx: BuildContext, stage: str, index: int, level: int) -> PriorRun:
    """Everything earlier runs recorded for the range of partition `index` at `level`."""
    prior = PriorRun(hash_range=bucket_range(index, level))
    for path in _prior_markers(ctx, stage, index, level):
        marker = read_marker(path) or {}
        prior.keys.update(marker.get("samples", {}))
        prior.digests.update(marker.get("outputs", {}))
        prior.dropped.update(marker.get("dropped", {}))
        prior.parts.append(path)
        for f in read_failures(sibling(path, FAILURES)):
            prior.failures[f.sample_id] = f
    return prior
