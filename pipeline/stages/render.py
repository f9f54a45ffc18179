"""The render stage: fetched arrays -> one parquet part of encoded release rows per partition.

Rows are in RENDER_PART_SCHEMA (the release columns minus `split`), sorted by
combined_sample_hash, so the shard stage can merge the parts of every species as sorted streams. Under
`keep_fetched: false` a sealed partition drops its fetched files, and a sample it must build whose file was
dropped is fetched again first (pipeline/stages/fetched_disk.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from core.atomic import write_parquet
from core.fetched import FetchedSample
from core.layout import MARKER
from core.release_schema import RENDER_PART_SCHEMA
from pipeline.context import BuildContext
from pipeline.graph import StageGraph
from pipeline.markers import outputs_digest, read_marker
from pipeline.reuse import PriorRun
from pipeline.stage import Outcome, Partition, StageBase, is_done
from pipeline.stages.common import (
    bank_partition,
    bank_partitions,
    requests_met,
    rows_of_partition,
    run_samples,
    sample_key,
)
from pipeline.stages.fetch import fetched_files
from pipeline.stages.fetch_sample import STAGE as FETCH_STAGE
from pipeline.stages.fetched_disk import drop_fetched, ensure_fetched, refetch_dropped, say_refetched
from render import OUTPUT_VERSION
from render.row import render_row

STAGE = "render"


class RenderStage(StageBase):
    name = STAGE
    output_version = OUTPUT_VERSION
    reads = ("extent_nm", "center_jitter_nm", "seed", "em_window_nm", "max_missing_fraction")
    consumes = (FETCH_STAGE,)
    streams_from = FETCH_STAGE  # renders each sample as soon as its fetch has settled, in the same task
    unit = "rows"
    keys_samples = True

    def partitions(self, ctx: BuildContext, graph: StageGraph) -> list[Partition]:
        fetch = {p.index: p for p in graph.partitions(FETCH_STAGE)}
        return bank_partitions(ctx, graph, self, upstream=lambda index: self._upstream(ctx, fetch[index]))

    def _upstream(self, ctx: BuildContext, fetch_part: Partition) -> str:
        done = is_done(ctx, fetch_part)
        return outputs_digest(read_marker(fetch_part.marker_path(ctx))) if done else "fetch-not-done"

    def partition_of(self, ctx: BuildContext, fetch_part: Partition) -> Partition:
        """The render partition over the same rows as `fetch_part`, fingerprinted by that fetch's outputs now."""
        rows = rows_of_partition(ctx, fetch_part)
        hashes, digests = [r["combined_sample_hash"] for r in rows], [r["row_digest"] for r in rows]
        return bank_partition(ctx, self, fetch_part.index, fetch_part.level, hashes, digests,
                              self._upstream(ctx, fetch_part))  # fmt: skip

    def run(
        self,
        ctx: BuildContext,
        part: Partition,
        prior: PriorRun | None,
        upstream: Callable[[str], tuple[Path, str] | None] | None = None,
    ) -> Outcome:
        """Render the partition's fetched samples, keeping the rows whose key is unchanged. `upstream(hash)` gives
        a sample's fetched file and its sha256 (None: its fetch failed, and the ledger says why); by default
        from the fetch partition's marker, or, streaming from a running fetch, as each sample is fetched."""
        fetched = upstream
        rows = rows_of_partition(ctx, part)
        refetched: dict[str, str | Exception] = {}  # samples whose dropped file was fetched again: sha256 or error
        if fetched is None:
            files = fetched_files(ctx, read_marker(ctx.part_file(FETCH_STAGE, part.index, MARKER)))
            keys = {r["combined_sample_hash"]: r["row_digest"] for r in rows}
            refetched = refetch_dropped(ctx, part.index, rows, files, lambda h, sha: prior is None or not
                                        prior.reusable(h, sample_key(ctx, self, keys[h], sha)))  # fmt: skip
            fetched = files.get
        found: dict[str, tuple[Path, str]] = {}
        old: dict[str, object] = {}  # the earlier rows, read on the first sample that can keep its row

        def key_of_row(row: dict) -> str | None:
            got = fetched(row["combined_sample_hash"])
            if got is None:
                return None
            found[row["combined_sample_hash"]] = got
            return sample_key(ctx, self, row["row_digest"], got[1])

        kept: list[int] = []
        built: list[dict] = []

        def reuse(row: dict, key: str) -> bool:
            h = row["combined_sample_hash"]
            if prior is None or not prior.reusable(h, key):
                return False
            if not old:
                table = prior.rows(ctx, {m for m in part.members if m in prior.keys})
                old["table"] = table
                hashes = table.column("combined_sample_hash").to_pylist() if table is not None else []
                old["index"] = {x: i for i, x in enumerate(hashes)}
            i = old["index"].get(h)
            if i is None:
                return False
            kept.append(i)
            return True

        def build(row: dict, key: str) -> None:
            h = row["combined_sample_hash"]
            path, sha256 = found[h]
            ensure_fetched(ctx, part.name, row, path, sha256, refetched)
            built.append(render_row(row, FetchedSample.load(path, sha256), ctx.cfg))

        outcome = run_samples(ctx, part, rows, key_of_row, reuse, build, prior)
        if refetched:
            say_refetched(ctx, part.name, len(refetched))
            outcome.stats = requests_met()  # what fetching them again met
        table = pa.Table.from_pylist(built, schema=RENDER_PART_SCHEMA)
        if kept:
            table = pa.concat_tables([old["table"].take(pa.array(kept, pa.int64())).cast(RENDER_PART_SCHEMA), table])
        table = table.sort_by("combined_sample_hash").combine_chunks()
        out = part.output_file(ctx)
        write_parquet(out, table)
        outcome.outputs = [out]
        return outcome

    def sealed(self, ctx: BuildContext, part: Partition) -> None:
        """Under `keep_fetched: false`, the partition's fetched files go once it is sealed."""
        if not ctx.cfg.keep_fetched:
            drop_fetched(ctx, part.index)
