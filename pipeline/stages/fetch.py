"""The fetch stage as a runner stage: one `fetch/part-NNNNN/<hash>.npz` per sample."""

from __future__ import annotations

from pathlib import Path

from pipeline.context import BuildContext
from pipeline.fetch import STAGE, fetch_sample, save_fetched
from pipeline.ledger import Failure
from pipeline.partition_meshes import PartitionMeshes
from pipeline.runner import Partition
from pipeline.sources import open_source
from pipeline.stages.common import bank_partitions, partition_rows, run_samples


class FetchStage:
    name = STAGE

    def plan(self, ctx: BuildContext) -> list[Partition]:
        return bank_partitions(ctx, STAGE)

    def outputs(self, ctx: BuildContext, part: Partition) -> list[Path]:
        return sorted(part.output_path(ctx, "").glob("*.npz"))

    def run(self, ctx: BuildContext, part: Partition) -> tuple[int, list[Failure]]:
        source = open_source(ctx)
        folder = part.output_path(ctx, "")
        meshes = PartitionMeshes(source, ctx.cfg, partition_rows(ctx, part))  # each root fetched once

        def build(row: dict) -> None:
            h = row["combined_sample_hash"]
            (folder / f"{h}.npz").unlink(missing_ok=True)
            try:
                with source.sample(h):
                    arrays = fetch_sample(source, ctx.cfg, row, meshes)
            finally:
                meshes.done(row)
            save_fetched(folder / f"{h}.npz", arrays)

        return run_samples(ctx, part, build)
