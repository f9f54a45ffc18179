"""What the per-sample stages share: the bank's partitions, sample keys, the source identity, the sample loop."""

from __future__ import annotations

import traceback
from collections.abc import Callable

import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline import __version__
from pipeline.context import BuildContext
from pipeline.errors import SampleError, TransientSourceError, UserError
from pipeline.hashing import key_of, md5_hex, sha256_file
from pipeline.ledger import Failure
from pipeline.markers import marker_is_current
from pipeline.partitions import PREFIX_BITS, buckets, level_for
from pipeline.reuse import PriorRun
from pipeline.runner import Outcome, Partition, Stage, config_values, fingerprint

# The config keys naming where a species' data comes from (read by every stage that reads the source).
SOURCE_KEYS = ("source", "datastack", "server_address")


def source_identity(ctx: BuildContext) -> str:
    """Identity of the data behind the source beyond its config keys: the demo world's summary digest."""
    if ctx.cfg.source == "demo":
        marker = ctx.world_dir / "world.json"
        return sha256_file(marker) if marker.exists() else "no-world"
    return ""


def sample_key(ctx: BuildContext, stage: Stage, row_digest: str, *inputs: object) -> str:
    """The key of one sample's inputs for `stage`: its bank row, the stage's config keys, the code version and
    any upstream input. Equal keys mean an earlier output of the sample can be kept as it is."""
    import json

    cfg = json.dumps(config_values(ctx, stage.reads), sort_keys=True)
    return md5_hex(key_of(__version__, stage.name, cfg, row_digest, *inputs))[:16]


# ------------------------------------------------------------------------------------------ the bank


def bank_complete(ctx: BuildContext) -> str | None:
    """None when bank.parquet is the selection of the current bank plan, else why not (one line)."""
    from pipeline.stages.bank import BankStage

    return BankStage().incomplete(ctx)


def read_bank_index(ctx: BuildContext) -> tuple[list[str], list[str]]:
    """(combined_sample_hash, row_digest) of every bank row, sorted by hash."""
    if not ctx.bank_path.exists():
        return [], []
    t = pq.read_table(ctx.bank_path, columns=["combined_sample_hash", "row_digest"])
    return t.column(0).to_pylist(), t.column(1).to_pylist()


def bank_partitions(
    ctx: BuildContext, stage: Stage, *inputs: object, upstream: Callable[[int], str] | None = None
) -> list[Partition]:
    """Buckets of the bank's combined_sample_hash prefix, about `partition_rows` rows each: a row keeps its
    partition when others are added or removed. A fingerprint covers the stage's config keys, `inputs`, the
    upstream partition's output digest (`upstream(index)`) and the members' row digests."""
    hashes, row_digests = read_bank_index(ctx)
    level = level_for(len(hashes), ctx.cfg.partition_rows)
    parts = []
    for index, (start, stop) in enumerate(buckets(hashes, level)):
        members = tuple(hashes[start:stop])
        up = upstream(index) if upstream is not None else ""
        rows = (f"{h}:{d}" for h, d in zip(members, row_digests[start:stop], strict=True))
        fp = fingerprint(ctx, stage, *inputs, up, index, level, *rows)
        parts.append(Partition(stage.name, index, len(members), fp, level, members))
    return parts


def partition_rows(ctx: BuildContext, part: Partition) -> list[dict]:
    """The bank rows of a partition, read from the row groups that hold its hash range only."""
    lo, hi = part.hash_range
    col = pc.field("combined_sample_hash")
    cond = col >= f"{lo:08x}"
    if hi < 1 << PREFIX_BITS:
        cond = cond & (col < f"{hi:08x}")
    rows = pq.read_table(ctx.bank_path, filters=cond).to_pylist()
    rows.sort(key=lambda r: r["combined_sample_hash"])
    if [r["combined_sample_hash"] for r in rows] != list(part.members):
        raise UserError(f"species {ctx.species}: {ctx.bank_path} changed while {part.stage} ran; rerun the build")
    return rows


def upstream_not_done(ctx: BuildContext, upstream: str, parts: list[Partition]) -> str | None:
    """One line naming the upstream partitions (same layout) that are not done, and what to run."""
    missing = [p.name for p in parts if not marker_is_current(ctx.work_dir, p.marker_path(ctx), p.fingerprint)]
    if not missing:
        return None
    shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return (
        f"{len(missing)} of {len(parts)} {upstream} partitions are not done ({shown}); run "
        f"`make stage STAGE={upstream} SPECIES={ctx.species}` first, or `make build SPECIES={ctx.species}`"
    )


# ------------------------------------------------------------------------------------------ the sample loop


def run_samples(
    ctx: BuildContext,
    part: Partition,
    rows: list[dict],
    key_of_row: Callable[[dict], str | None],
    reuse: Callable[[dict, str], bool],
    build: Callable[[dict, str], None],
    prior: PriorRun | None,
) -> Outcome:
    """For each row: skip it when `key_of_row` is None (nothing to build from), keep its earlier result when
    `reuse(row, key)` says it is still there (or a failure recorded under the same key), else `build` it.

    A SampleError is a ledger row with its reason; an unexpected exception is a ledger row whose exception
    keeps the traceback, listed in the partition's log and never reused. Unreachable servers (UserError) and
    exhausted retries (TransientSourceError) stop the partition instead: they say nothing about the sample,
    and a rerun resumes."""
    out = Outcome()
    for row in rows:
        sample_id = row["combined_sample_hash"]
        key = key_of_row(row)
        if key is None:
            continue
        failed = prior.failure(sample_id, key) if prior is not None else None
        if failed is not None:
            out.failures.append(failed)
            out.samples[sample_id] = key
            out.reused += 1
            continue
        if prior is not None and reuse(row, key):
            out.samples[sample_id] = key
            out.reused += 1
            continue
        try:
            build(row, key)
        except (UserError, TransientSourceError):
            raise
        except SampleError as exc:
            out.failures.append(Failure(sample_id, ctx.species, row["sample_type"], part.stage, exc.reason, str(exc)))
            out.samples[sample_id] = key
            out.new_failures += 1
        except Exception as exc:  # a bug or a library error: not the sample's reason, keep the traceback
            tb = "".join(traceback.format_exception(exc))
            out.failures.append(
                Failure(sample_id, ctx.species, row["sample_type"], part.stage, f"unexpected_{type(exc).__name__}", tb)
            )
            out.crashed[sample_id] = tb
            out.new_failures += 1
        else:
            out.samples[sample_id] = key
            out.built += 1
    return out

