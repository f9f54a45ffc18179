"""The bank stage: candidates per batch of proofread roots (partitions on dask), then one selection step.

1. `prepare`: the proofread roots at the pinned time, queried once and kept in `bank/roots.parquet` (re-queried
   only when the keys that define them change).
2. Partitions: buckets of a hash of the root id, about `bank_roots_per_partition` roots each. Each writes the
   candidate rows its roots give (`bank/part-NNNNN.parquet`): a failed batch is retried or ledgered alone.
3. `finish`: every batch's candidates, deduplicated, budgets applied -> `bank.parquet` (+ `bank.done`). A budget
   change reruns this step only.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from core.atomic import write_parquet
from core.hashing import key_of, md5_hex
from core.layout import CHANGES, FAILURES
from core.ledger import read_failures, write_failures
from pipeline.context import BuildContext
from pipeline.graph import StageGraph
from pipeline.markers import digests, marker_is_current, outputs_digest, read_marker, write_marker
from pipeline.partitions import buckets, level_for, root_digest
from pipeline.reuse import PriorRun
from pipeline.runner import Outcome, Partition, StageBase, config_values, fingerprint, is_done, to_retry
from pipeline.sources import open_source
from pipeline.stages.bank_candidates import (
    STAGE,
    bank_candidates,
    bank_table,
    candidate_table,
    retry_candidates,
    select_from_batches,
)
from pipeline.stages.common import SOURCE_KEYS, source_identity

# What defines the set of proofread roots.
ROOTS_KEYS = (*SOURCE_KEYS, "as_of", "materialization_version", "proofread_table", "proofread_from_delta_roots")
ROOTS_SCHEMA = pa.schema([("root_id", pa.uint64())])
BANK_ROW_GROUP = 4096  # small row groups: a fetch or render partition reads only the groups of its hash range


class BankStage(StageBase):
    name = STAGE
    reads = (
        *ROOTS_KEYS, "seg_cloudpath", "seg_mip", "synapse_table", "synapse_score_above", "junctions_per_neuron",
        "adjacent_per_op",
    )  # fmt: skip
    consumes = ()
    unit = "roots"  # what a partition's members are: proofread roots (their candidates become bank rows)
    select_reads = ("budgets",)  # read by the selection step alone (finish), not by the batches
    # 2: junction controls at branch points of skeletons built from level-2 graphs (pipeline/sources/l2skeleton.py),
    # as for a real species, not at the demo world's own skeleton's: a bank built before is redone, not reused
    output_version = 2

    # -- the proofread roots ----------------------------------------------------------------------------
    def _roots_fingerprint(self, ctx: BuildContext) -> str:
        return md5_hex(key_of("roots", sorted(config_values(ctx, ROOTS_KEYS).items()), source_identity(ctx)))

    def prepare(self, ctx: BuildContext, graph: StageGraph, force: bool) -> bool:
        """The proofread roots at the pinned time, queried when the keys that define them changed (True then)."""
        fp = self._roots_fingerprint(ctx)
        if not force and marker_is_current(ctx.work_dir, ctx.roots_marker_path, fp):
            return False
        roots = sorted({int(r) for r in open_source(ctx).proofread_roots()})
        write_parquet(ctx.roots_path, pa.table({"root_id": pa.array(roots, pa.uint64())}, schema=ROOTS_SCHEMA))
        write_marker(ctx.roots_marker_path, {"fingerprint": fp, "n_roots": len(roots),
                                               "outputs": digests(ctx.work_dir, [ctx.roots_path])})  # fmt: skip
        return True

    def roots(self, ctx: BuildContext) -> list[int] | None:
        """The proofread roots kept under the current config (None: not queried yet, or for another config)."""
        if not marker_is_current(ctx.work_dir, ctx.roots_marker_path, self._roots_fingerprint(ctx)):
            return None
        return [int(r) for r in pq.read_table(ctx.roots_path).column("root_id").to_pylist()]

    # -- partitions -------------------------------------------------------------------------------------
    def partitions(self, ctx: BuildContext, graph: StageGraph) -> list[Partition]:
        roots = self.roots(ctx)
        if roots is None:
            return []
        keyed = sorted((root_digest(r), r) for r in roots)
        level = level_for(len(keyed), ctx.cfg.bank_roots_per_partition)
        everyone = md5_hex(key_of(*roots))  # synapse rows depend on the whole proofread set
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
        proofread = self.roots(ctx)
        if proofread is None:
            raise RuntimeError(f"{ctx.roots_path} changed while the bank ran")
        members = [int(m) for m in part.members]
        source = open_source(ctx)
        earlier = self._earlier(ctx, part) if prior is not None else None
        if earlier is not None:
            found = retry_candidates(source, ctx.cfg, members, proofread, *earlier)
        else:
            found = bank_candidates(source, ctx.cfg, members, proofread)
        out, changes = part.output_file(ctx), part.output_file(ctx, CHANGES)
        write_parquet(out, candidate_table(found.rows))
        write_parquet(changes, found.log)
        before = set(earlier[2]) if earlier is not None else set()
        new = sum(1 for f in found.failures if f not in before)
        return Outcome(built=len(found.rows) - found.kept, reused=found.kept, failures=found.failures,
                       new_failures=new, outputs=[out, changes])  # fmt: skip

    def _earlier(self, ctx: BuildContext, part: Partition) -> tuple | None:
        """(rows, change-log rows, failures) of this partition's run under the same inputs, when it is done, has
        failures to retry and kept its change-log rows; else None (the batch runs whole)."""
        changes = part.output_file(ctx, CHANGES)
        if not is_done(ctx, part) or not to_retry(ctx, part) or not changes.exists():
            return None
        rows = pq.read_table(part.output_file(ctx)).to_pylist()
        return rows, pq.read_table(changes), read_failures(part.output_file(ctx, FAILURES))

    # -- selection --------------------------------------------------------------------------------------
    def _select_fingerprint(self, ctx: BuildContext, parts: list[Partition]) -> str:
        inputs = [outputs_digest(read_marker(p.marker_path(ctx))) for p in parts]
        return fingerprint(ctx, self, "select", sorted(config_values(ctx, self.select_reads).items()), *inputs)

    def finish(self, ctx: BuildContext, graph: StageGraph, parts: list[Partition], force: bool) -> str:
        fp = self._select_fingerprint(ctx, parts)
        if not force and marker_is_current(ctx.work_dir, ctx.bank_marker_path, fp):
            return f"{read_marker(ctx.bank_marker_path)['n_rows']} bank rows (unchanged)"
        files = [p.output_file(ctx) for p in parts]
        n_candidates = sum(pq.read_metadata(f).num_rows for f in files)
        # one batch's file at a time, read twice: the selection keeps only the chosen rows
        selected = select_from_batches(lambda: (pq.read_table(f).to_pylist() for f in files),
                                       ctx.cfg.budgets.model_dump(), ctx.species)  # fmt: skip
        write_parquet(ctx.bank_path, bank_table(selected.rows), row_group_size=BANK_ROW_GROUP)
        write_failures(ctx.select_failures_path, selected.failures)
        write_marker(ctx.bank_marker_path, {"fingerprint": fp, "n_rows": len(selected.rows),
                                            "outputs": digests(ctx.work_dir, [ctx.bank_path])})  # fmt: skip
        graph.changed(self.name)  # a new bank.parquet: what was listed downstream of it is stale
        return f"{len(selected.rows)} bank rows selected from {n_candidates} candidates"

    def incomplete(self, ctx: BuildContext, graph: StageGraph) -> str | None:
        """None when bank.parquet is the selection of the current partitions, else one line saying what to run."""
        run = f"run `make stage STAGE=bank SPECIES={ctx.species}` (or `make build SPECIES={ctx.species}`)"
        parts = graph.partitions(self.name)
        if not parts and self.roots(ctx) is None:
            return f"the bank has not run under the current config; {run}"
        pending = [p.name for p in parts if not is_done(ctx, p)]
        if pending:
            return f"{len(pending)} of {len(parts)} bank partitions are not done ({', '.join(pending[:5])}); {run}"
        if not marker_is_current(ctx.work_dir, ctx.bank_marker_path, self._select_fingerprint(ctx, parts)):
            return f"bank.parquet is not the selection of the current bank (budgets changed?); {run}"
        return None
