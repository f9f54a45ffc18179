"""The split stage: every bank row's cube and split, from the canonical bbox and the salt."""

from __future__ import annotations

import pyarrow as pa

from pipeline.context import BuildContext
from pipeline.graph import StageGraph
from pipeline.markers import outputs_digest, read_marker
from pipeline.reuse import PriorRun
from pipeline.runner import fingerprint
from pipeline.sources import open_source
from pipeline.stage import Outcome, Partition, StageBase
from pipeline.stages.common import SOURCE_KEYS, requests_met, source_identity
from pipeline.stages.select import STAGE as SELECT
from pipeline.stages.select import bank_rows
from split_assign import assign, manifest, write_assignment, write_manifest

STAGE = "split"


class SplitStage(StageBase):
    name = STAGE
    reads = (*SOURCE_KEYS, "seg_cloudpath", "split_salt", "cube_nm", "split_ratios")
    consumes = (SELECT,)
    unit = "rows"  # its one partition assigns every bank row

    def partitions(self, ctx: BuildContext, graph: StageGraph) -> list[Partition]:
        """One partition over the whole bank, fingerprinted by what the selection wrote."""
        (selection,) = graph.partitions(SELECT)
        digest = outputs_digest(read_marker(selection.marker_path(ctx)))
        return [Partition(STAGE, 0, bank_rows(ctx), fingerprint(ctx, self, source_identity(ctx), digest))]

    def run(self, ctx: BuildContext, part: Partition, prior: PriorRun | None) -> Outcome:
        import pyarrow.parquet as pq

        cfg = ctx.cfg
        points = pq.read_table(ctx.bank_path, columns=["combined_sample_hash", "species", "coord_nm"])
        lo, hi = open_source(ctx).canonical_bbox_nm()
        kwargs = {"cube_nm": cfg.cube_nm, "ratios": tuple(cfg.split_ratios)}
        table = assign(pa.table(points), lo, hi, ctx.species, cfg.split_salt, **kwargs)
        write_assignment(ctx.split_path, table)
        doc = manifest(table, lo, hi, ctx.species, cfg.split_salt, **kwargs)
        doc["sample_counts"] = "bank rows, including samples that later fail fetch or render (see failures.parquet)"
        write_manifest(ctx.manifest_path, doc)
        return Outcome(built=table.num_rows, outputs=[ctx.split_path, ctx.manifest_path], stats=requests_met())
