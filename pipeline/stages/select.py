"""The bank selection: one unit of work over every bank batch's candidates, deduplicated, budgets applied by
hashed priority -> `bank.parquet`, the rows fetch, render and split consume. It reads `budgets` alone: a budget
change redoes this unit only (and then what consumes the rows it changed)."""

from __future__ import annotations

import pyarrow.parquet as pq

from core.atomic import write_parquet
from pipeline.context import BuildContext
from pipeline.graph import StageGraph
from pipeline.markers import outputs_digest, read_marker
from pipeline.reuse import PriorRun
from pipeline.runner import fingerprint
from pipeline.stage import Outcome, Partition, StageBase, is_done
from pipeline.stages.bank import STAGE as BANK
from pipeline.stages.bank_candidates import bank_table, select_from_batches

STAGE = "select"
BANK_ROW_GROUP = 4096  # small row groups: a fetch or render partition reads only the groups of its hash range


class SelectStage(StageBase):
    name = STAGE
    reads = ("budgets",)
    consumes = (BANK,)
    unit = "candidates"  # its one partition chooses among every candidate of every bank batch
    command = "bank"  # `make stage STAGE=bank` selects last

    def partitions(self, ctx: BuildContext, graph: StageGraph) -> list[Partition]:
        """One partition over the bank's batches (its members: their outputs, relative to the work dir),
        fingerprinted by what they wrote."""
        batches = graph.partitions(BANK)
        inputs = [outputs_digest(read_marker(p.marker_path(ctx))) for p in batches]
        files = [p.output_file(ctx) for p in batches]
        n_candidates = sum(pq.read_metadata(f).num_rows for p, f in zip(batches, files, strict=True) if is_done(ctx, p))
        members = tuple(str(f.relative_to(ctx.work_dir)) for f in files)
        return [Partition(STAGE, 0, n_candidates, fingerprint(ctx, self, *inputs), members=members)]

    def run(self, ctx: BuildContext, part: Partition, prior: PriorRun | None) -> Outcome:
        files = [ctx.work_dir / m for m in part.members]
        # one batch's file at a time, read twice: the selection keeps only the chosen rows
        selected = select_from_batches(lambda: (pq.read_table(f).to_pylist() for f in files),
                                       ctx.cfg.budgets.model_dump(), ctx.species)  # fmt: skip
        write_parquet(ctx.bank_path, bank_table(selected.rows), row_group_size=BANK_ROW_GROUP)
        return Outcome(built=len(selected.rows), failures=selected.failures, new_failures=len(selected.failures),
                       outputs=[ctx.bank_path])  # fmt: skip

    def finish(self, ctx: BuildContext, graph: StageGraph, parts: list[Partition], force: bool) -> str | None:
        marker = read_marker(parts[0].marker_path(ctx)) or {}
        return f"{marker.get('n_built', 0)} bank rows selected from {parts[0].n_samples} candidates"


def bank_rows(ctx: BuildContext) -> int:
    """How many rows the selection wrote (0 before it ran)."""
    return pq.read_metadata(ctx.bank_path).num_rows if ctx.bank_path.exists() else 0
