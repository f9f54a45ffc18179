"""The bank stage: candidates per batch of proofread roots (partitions on dask), between two units of their own.

1. `roots` (pipeline/stages/roots.py): the proofread roots at the pinned time, one unit this stage consumes.
2. Partitions: buckets of a hash of the root id, about `bank_roots_per_partition` roots each. Each writes the
   candidate rows its roots give (`bank/part-NNNNN.parquet`): a failed batch is retried or ledgered alone.
3. `select` (pipeline/stages/select.py): every batch's candidates, deduplicated, budgets applied -> `bank.parquet`.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from core.atomic import write_parquet
from core.layout import CHANGES, FAILURES
from core.ledger import read_failures
from pipeline.context import BuildContext
from pipeline.graph import StageGraph
from pipeline.markers import outputs_digest, read_marker
from pipeline.partitions import buckets, level_for, root_digest
from pipeline.reuse import PriorRun
from pipeline.runner import fingerprint
from pipeline.sources import open_source
from pipeline.stage import Outcome, Partition, StageBase, is_done, to_retry
from pipeline.stages.bank_candidates import STAGE, bank_candidates, candidate_table, retry_candidates
from pipeline.stages.common import requests_met, source_identity
from pipeline.stages.roots import ROOTS_KEYS, read_roots
from pipeline.stages.roots import STAGE as ROOTS


class BankStage(StageBase):
    name = STAGE
    reads = (
        *ROOTS_KEYS, "seg_cloudpath", "seg_mip", "synapse_table", "synapse_score_above", "junctions_per_neuron",
        "adjacent_per_op",
    )  # fmt: skip
    consumes = (ROOTS,)
    unit = "roots"  # what a partition's members are: proofread roots (their candidates become bank rows)
    # 2: junction controls at branch points of skeletons built from level-2 graphs (pipeline/sources/l2skeleton.py),
    # as for a real species, not at the demo world's own skeleton's: a bank built before is redone, not reused
    output_version = 2

    # -- partitions -------------------------------------------------------------------------------------
    def partitions(self, ctx: BuildContext, graph: StageGraph) -> list[Partition]:
        """Batches of the proofread roots (none before the roots are done), each fingerprinted by the whole
        proofread set too: synapse rows depend on it."""
        (roots_part,) = graph.partitions(ROOTS)
        if not is_done(ctx, roots_part):
            return []
        roots = read_roots(ctx)
        keyed = sorted((root_digest(r), r) for r in roots)
        level = level_for(len(keyed), ctx.cfg.bank_roots_per_partition)
        everyone = outputs_digest(read_marker(roots_part.marker_path(ctx)))
        parts = []
        for index, (start, stop) in enumerate(buckets([d for d, _ in keyed], level)):
            members = tuple(str(r) for r in sorted(r for _, r in keyed[start:stop]))
            fp = fingerprint(ctx, self, source_identity(ctx), everyone, index, level, *members)
            parts.append(Partition(STAGE, index, len(members), fp, level, members))
        return parts

    def run(self, ctx: BuildContext, part: Partition, prior: PriorRun | None) -> Outcome:
        """The batch's candidates (`part-NNNNN.parquet`) and change-log rows (`part-NNNNN.changes.parquet`). A
        partition done under the same inputs whose failures are retryable asks again only for those
        (`retry_candidates`): the rows it had are kept."""
        proofread = read_roots(ctx)
        members = [int(m) for m in part.members]
        source = open_source(ctx)
        earlier = self._earlier(ctx, part) if prior is not None else None
        if earlier is not None:
            found = retry_candidates(source, ctx.cfg, members, proofread, *earlier)
        else:
            found = bank_candidates(source, ctx.cfg, members, proofread)
        out, changes = part.output_file(ctx), part.output_file(ctx, CHANGES)
        table = candidate_table(found.rows)
        if earlier is None or not _same(out, table) or not _same(changes, found.log):
            write_parquet(out, table)
            write_parquet(changes, found.log)
        # else: retries that brought nothing new keep the files as they are, byte for byte (a rebuild with nothing
        # changed must not reseal the selection and the release over the same rows written again)
        before = set(earlier[2]) if earlier is not None else set()
        new = sum(1 for f in found.failures if f not in before)
        return Outcome(built=len(found.rows) - found.kept, reused=found.kept, failures=found.failures,
                       new_failures=new, outputs=[out, changes], stats=requests_met())  # fmt: skip

    def _earlier(self, ctx: BuildContext, part: Partition) -> tuple | None:
        """(rows, change-log rows, failures) of this partition's run under the same inputs, when it is done, has
        failures to retry and kept its change-log rows; else None (the batch runs whole)."""
        changes = part.output_file(ctx, CHANGES)
        if not is_done(ctx, part) or not to_retry(ctx, part) or not changes.exists():
            return None
        rows = pq.read_table(part.output_file(ctx)).to_pylist()
        return rows, pq.read_table(changes), read_failures(part.output_file(ctx, FAILURES))


def _same(path: Path, table: pa.Table | None) -> bool:
    """Whether the parquet file at `path` holds exactly `table`'s rows (same schema, same values, same order)."""
    if table is None:
        return False
    try:
        return pq.read_table(path).equals(table.cast(pq.read_schema(path)))
    except (OSError, ValueError, pa.ArrowInvalid):
        return False
