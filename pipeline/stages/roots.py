"""The bank's proofread roots: one unit of work, the roots at the pinned time, queried once and kept in
`roots/part-00000.parquet` (queried again only when the keys that define them, or the source, change). The bank's
batches are cut from them and consume them: a set of roots that came back the same redoes no batch by itself."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from core.atomic import write_parquet
from pipeline.context import BuildContext
from pipeline.graph import StageGraph
from pipeline.markers import read_marker
from pipeline.reuse import PriorRun
from pipeline.runner import fingerprint
from pipeline.sources import open_source
from pipeline.stage import Outcome, Partition, StageBase, is_done
from pipeline.stages.common import SOURCE_KEYS, requests_met, source_identity

STAGE = "roots"
# What defines the set of proofread roots.
ROOTS_KEYS = (*SOURCE_KEYS, "as_of", "materialization_version", "proofread_table", "proofread_from_delta_roots")
ROOTS_SCHEMA = pa.schema([("root_id", pa.uint64())])


class RootsStage(StageBase):
    name = STAGE
    reads = ROOTS_KEYS
    consumes = ()
    unit = "roots"  # its one partition covers every proofread root (counted once they are queried)
    command = "bank"  # `make stage STAGE=bank` queries them first

    def partitions(self, ctx: BuildContext, graph: StageGraph) -> list[Partition]:
        part = Partition(STAGE, 0, 0, fingerprint(ctx, self, source_identity(ctx)))
        if not is_done(ctx, part):
            return [part]
        n_roots = int((read_marker(part.marker_path(ctx)) or {}).get("n_built", 0))
        return [Partition(STAGE, 0, n_roots, part.fingerprint)]

    def incomplete(self, ctx: BuildContext, graph: StageGraph) -> str | None:
        """The graph's answer, said as the bank's: the roots are the bank's first step."""
        if graph.pending(self.name) is None:
            return None
        sp = ctx.species
        return (
            "the bank has not run under the current config (its proofread roots are not queried); run "
            f"`make stage STAGE=bank SPECIES={sp}` (or `make build SPECIES={sp}`)"
        )

    def run(self, ctx: BuildContext, part: Partition, prior: PriorRun | None) -> Outcome:
        roots = sorted({int(r) for r in open_source(ctx).proofread_roots()})
        out = part.output_file(ctx)
        write_parquet(out, pa.table({"root_id": pa.array(roots, pa.uint64())}, schema=ROOTS_SCHEMA))
        return Outcome(built=len(roots), outputs=[out], stats=requests_met())


def read_roots(ctx: BuildContext) -> list[int]:
    """The proofread roots the roots stage kept (what the bank's batches are cut from)."""
    path = ctx.part_file(STAGE, 0, ".parquet")
    return [int(r) for r in pq.read_table(path).column("root_id").to_pylist()]
