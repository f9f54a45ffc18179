"""What the per-sample stages share: the bank, its partitions, and input fingerprints."""

from __future__ import annotations

import json
from collections.abc import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import __version__
from pipeline.context import BuildContext
from pipeline.errors import SampleError, TransientSourceError, UserError
from pipeline.hashing import key_of, md5_hex, sha256_file
from pipeline.ledger import Failure, describe
from pipeline.runner import Partition

# Keys that only change the split or the shards: they never invalidate bank, fetch or render.
RELEASE_ONLY_KEYS = frozenset({"shard_bytes", "split_salt", "cube_nm", "split_ratios"})


def source_fingerprint(ctx: BuildContext) -> str:
    """Identity of the data behind the source: the demo world's summary, or the pinned real endpoints."""
    if ctx.cfg.source == "demo":
        marker = ctx.world_dir / "world.json"
        return sha256_file(marker) if marker.exists() else "no-world"
    return ""


def config_fingerprint(ctx: BuildContext, *extra: object) -> str:
    cfg = {k: v for k, v in ctx.cfg.model_dump(mode="json").items() if k not in RELEASE_ONLY_KEYS}
    # the code's version too: a new release of cb2-build redoes what it may render differently
    return md5_hex(key_of(__version__, json.dumps(cfg, sort_keys=True), source_fingerprint(ctx), *extra))


def read_bank(ctx: BuildContext, columns: list[str] | None = None) -> pa.Table:
    if not ctx.bank_path.exists():
        raise UserError(
            f"species {ctx.species}: no bank at {ctx.bank_path}; "
            f"run `make stage STAGE=bank SPECIES={ctx.species}` first"
        )
    return pq.read_table(ctx.bank_path, columns=columns)


def bank_partitions(ctx: BuildContext, stage: str) -> list[Partition]:
    """Consecutive runs of `partition_rows` bank rows (the bank is sorted by combined_sample_hash)."""
    hashes = read_bank(ctx, ["combined_sample_hash"]).column(0).to_pylist()
    size = ctx.cfg.partition_rows
    base = config_fingerprint(ctx, stage)
    parts = []
    for index, start in enumerate(range(0, len(hashes), size)):
        chunk = hashes[start : start + size]
        parts.append(Partition(stage, index, len(chunk), md5_hex(key_of(base, *chunk))))
    return parts


def partition_rows(ctx: BuildContext, part: Partition) -> list[dict]:
    size = ctx.cfg.partition_rows
    return read_bank(ctx).slice(part.index * size, part.n_samples).to_pylist()


def run_samples(ctx: BuildContext, part: Partition, build: Callable[[dict], None]) -> tuple[int, list[Failure]]:
    """Call `build(row)` for every row of the partition; a sample that fails becomes a ledger row.

    Unreachable servers (UserError) and retries exhausted (TransientSourceError) stop the
    partition instead: they say nothing about the sample, and a rerun resumes.
    """
    failures: list[Failure] = []
    done = 0
    for row in partition_rows(ctx, part):
        sample_id = row["combined_sample_hash"]
        try:
            build(row)
        except (UserError, TransientSourceError):
            raise
        except Exception as exc:  # a sample the code cannot handle: record it, go on
            reason = exc.reason if isinstance(exc, SampleError) else f"unexpected_{type(exc).__name__}"
            failures.append(Failure(sample_id, ctx.species, row["sample_type"], part.stage, reason, describe(exc)))
        else:
            done += 1
    return done, failures
