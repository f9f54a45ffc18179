"""What the per-sample stages share: the bank's partitions, sample keys, the source identity, the sample loop."""

from __future__ import annotations

import contextlib
import itertools
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pyarrow.compute as pc
import pyarrow.parquet as pq

from core.errors import UNEXPECTED, SampleError, TransientSourceError, UserError
from core.hashing import sha256_file
from core.ledger import Failure
from pipeline.context import BuildContext
from pipeline.graph import StageGraph
from pipeline.partitions import PREFIX_BITS, buckets, level_for
from pipeline.reuse import PriorRun
from pipeline.runner import fingerprint
from pipeline.sources.adaptive import take_counters
from pipeline.stage import Outcome, Partition, Stage

# The config keys naming where a species' data comes from (read by every stage that reads the source).
SOURCE_KEYS = ("source", "datastack", "server_address")


def source_identity(ctx: BuildContext) -> str:
    """Identity of the data behind the source beyond its config keys: the demo world's summary digest."""
    if ctx.cfg.source == "demo":
        marker = ctx.world_dir / "world.json"
        return sha256_file(marker) if marker.exists() else "no-world"
    return ""


def requests_met() -> dict:
    """A stage's stats of what this process's requests met since the last call (refusals, 500s, bisections, the
    sizes learned: pipeline/sources/adaptive.py), for its outcome: the runner merges them, knowing no source."""
    return {"requests": take_counters()}


def sample_key(ctx: BuildContext, stage: Stage, row_digest: str, *inputs: object) -> str:
    """The key of one sample's inputs for `stage`: its bank row, the stage's config keys, the code version and
    any upstream input (a partition's fingerprint over one row, shortened). Equal keys mean an earlier output
    of the sample can be kept as it is."""
    return fingerprint(ctx, stage, row_digest, *inputs)[:16]


# ------------------------------------------------------------------------------------------ the bank


def read_bank_index(ctx: BuildContext) -> tuple[list[str], list[str]]:
    """(combined_sample_hash, row_digest) of every bank row, sorted by hash."""
    if not ctx.bank_path.exists():
        return [], []
    t = pq.read_table(ctx.bank_path, columns=["combined_sample_hash", "row_digest"])
    return t.column(0).to_pylist(), t.column(1).to_pylist()


def bank_partitions(
    ctx: BuildContext,
    graph: StageGraph,
    stage: Stage,
    *inputs: object,
    upstream: Callable[[int], str] | None = None,
) -> list[Partition]:
    """Buckets of the bank's combined_sample_hash prefix, about `partition_rows` rows each: a row keeps its
    partition when others are added or removed. A fingerprint covers the stage's config keys, `inputs`, the
    upstream partition's output digest (`upstream(index)`) and the members' row digests. The bank index is read
    once per graph."""
    hashes, row_digests = graph.memo("bank_index", lambda: read_bank_index(ctx))
    level = level_for(len(hashes), ctx.cfg.partition_rows)
    parts = []
    for index, (start, stop) in enumerate(buckets(hashes, level)):
        up = upstream(index) if upstream is not None else ""
        parts.append(bank_partition(ctx, stage, index, level, hashes[start:stop], row_digests[start:stop], up, inputs))
    return parts


def bank_partition(
    ctx: BuildContext,
    stage: Stage,
    index: int,
    level: int,
    members: list[str],
    row_digests: list[str],
    upstream: str,
    inputs: tuple = (),
) -> Partition:
    """One partition of the bank's rows (see bank_partitions)."""
    rows = (f"{h}:{d}" for h, d in zip(members, row_digests, strict=True))
    fp = fingerprint(ctx, stage, *inputs, upstream, index, level, *rows)
    return Partition(stage.name, index, len(members), fp, level, tuple(members))


def rows_of_partition(ctx: BuildContext, part: Partition) -> list[dict]:
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


# ------------------------------------------------------------------------------------------ the sample loop


def run_samples(
    ctx: BuildContext,
    part: Partition,
    rows: list[dict],
    key_of_row: Callable[[dict], str | None],
    reuse: Callable[[dict, str], bool],
    build: Callable[[dict, str], object],
    prior: PriorRun | None,
    threads: int = 1,
    on_sample: Callable[[dict, object], None] | None = None,
) -> Outcome:
    """For each row: skip it when `key_of_row` is None (nothing to build from), keep its earlier result when
    `reuse(row, key)` says it is still there (or a failure recorded under the same key), else `build` it, on
    `threads` I/O threads when more than one (results are taken in row order). `on_sample(row, value)` hears of
    every row in order once it is settled: `value` is what `build` returned, True when kept, None otherwise.

    A SampleError is a ledger row with its reason (an `Unavailable` one, what a server could not give after bounded
    resends, is retried by the next run); an unexpected exception is a ledger row whose exception keeps the
    traceback, listed in the partition's log and never reused. A user's mistake or a server never reached
    (UserError) stops the partition instead: it says nothing about the sample, and a rerun resumes. (The sources
    turn exhausted retries into Unavailable: pipeline/sources/retrying.py.)"""
    out = Outcome()

    def decide(row: dict) -> tuple[dict, str | None, str]:
        key = key_of_row(row)
        if key is None:
            return row, key, "skip"
        if prior is not None and (failed := prior.failure(row["combined_sample_hash"], key)) is not None:
            out.failures.append(failed)
            return row, key, "kept"
        if prior is not None and reuse(row, key):
            return row, key, "kept"
        return row, key, "build"

    # with threads, every row is decided first so builds can run ahead; alone, each row when its turn comes
    # (a render fused with its fetch learns a row's key only once that row is fetched)
    todo = [decide(r) for r in rows] if threads > 1 else (decide(r) for r in rows)
    with ThreadPoolExecutor(max_workers=threads) if threads > 1 else contextlib.nullcontext() as pool:
        jobs = [(r, k) for r, k, what in todo if what == "build"] if pool is not None else None
        results = _in_order(jobs, build, pool, 2 * threads) if pool is not None else None
        for row, key, what in todo:
            sample_id = row["combined_sample_hash"]
            value = None
            if what == "kept":
                out.samples[sample_id] = key
                out.reused += 1
                value = True
            elif what == "build":
                try:
                    value = next(results)() if results is not None else build(row, key)
                except (UserError, TransientSourceError):
                    if pool is not None:
                        pool.shutdown(wait=True, cancel_futures=True)
                    raise
                except SampleError as exc:
                    out.failures.append(
                        Failure(sample_id, ctx.species, row["sample_type"], part.stage, exc.reason, str(exc))
                    )
                    out.samples[sample_id] = key
                    out.new_failures += 1
                except Exception as exc:  # a bug or a library error: not the sample's reason, keep the traceback
                    tb = "".join(traceback.format_exception(exc))
                    reason = f"{UNEXPECTED}{type(exc).__name__}"
                    out.failures.append(Failure(sample_id, ctx.species, row["sample_type"], part.stage, reason, tb))
                    out.crashed[sample_id] = tb
                    out.new_failures += 1
                else:
                    out.samples[sample_id] = key
                    out.built += 1
            if on_sample is not None:
                on_sample(row, value)
    return out


def _in_order(jobs: list[tuple[dict, str]], build: Callable, pool: ThreadPoolExecutor, window: int) -> Iterator:
    """`build(row, key)` of each job on the pool, at most `window` ahead of the one taken; yields, in order, each
    future's `result` (call it to get the value or the exception)."""
    pending: deque = deque()
    it = iter(jobs)
    for row, key in itertools.islice(it, window):
        pending.append(pool.submit(build, row, key))
    while pending:
        future = pending.popleft()
        nxt = next(it, None)
        if nxt is not None:
            pending.append(pool.submit(build, *nxt))
        yield future.result
