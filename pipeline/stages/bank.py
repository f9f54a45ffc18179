"""The bank stage as a runner stage: one partition, output `work/<species>/bank.parquet`."""

from __future__ import annotations

from pathlib import Path

from pipeline.atomic import write_parquet
from pipeline.bank import STAGE, bank_table, build_bank
from pipeline.context import BuildContext
from pipeline.ledger import Failure
from pipeline.runner import Partition
from pipeline.sources import open_source
from pipeline.stages.common import config_fingerprint


class BankStage:
    name = STAGE

    def plan(self, ctx: BuildContext) -> list[Partition]:
        return [Partition(STAGE, 0, 1, config_fingerprint(ctx, STAGE))]

    def outputs(self, ctx: BuildContext, part: Partition) -> list[Path]:
        return [ctx.bank_path]

    def run(self, ctx: BuildContext, part: Partition) -> tuple[int, list[Failure]]:
        result = build_bank(open_source(ctx), ctx.cfg)
        write_parquet(ctx.bank_path, bank_table(result.rows))
        return len(result.rows), result.failures
