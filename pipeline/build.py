"""Orchestration: a species' build under its lock (its stage graph, pipeline/graph.py), the release (its own graph,
fed by every species'), status. Every unit of work runs through the one runner (pipeline/runner.py).

Stage order is safe: a stage whose upstream is not complete under the current config refuses in one line,
naming what is missing and the command to run (`make build` runs every stage in order, so it never refuses).
Locks: a species' stages hold `work/<species>/.lock`; the shard stage holds the release's lock and shared locks
on every species it reads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from core.checkpoints import checkpoint
from core.compute import session
from core.errors import UserError, is_retryable
from core.ledger import Failure, read_failures
from pipeline.context import BuildContext, make_context, release_lock_path
from pipeline.graph import StageGraph
from pipeline.locks import LockSet
from pipeline.runner import StageSummary, run_stages
from pipeline.sources.budget import current, install, keep_stats, serve_budget
from pipeline.stage import is_done
from pipeline.stages.shard import SHARD, release_graph, species_in
from pipeline.stages.species import SPECIES_STAGES, species_graph

# the stages a command names (`make stage STAGE=...`): each species stage's own, or the one it runs with (the bank's
# roots and selection run with the bank), then the release's
STAGE_NAMES = (*dict.fromkeys(s.command or n for n, s in SPECIES_STAGES.items()), SHARD.name)
__all__ = ["STAGE_NAMES", "SPECIES_STAGES", "RunOptions", "build", "species_in", "status"]


@dataclass(frozen=True)
class RunOptions:
    scheduler: str = "processes"
    workers: int | None = None
    force: bool = False
    progress: bool = True


def _lock_species(locks: LockSet, ctx: BuildContext, shared: bool = False) -> None:
    locks.take(ctx.lock_path, f"the work dir of species {ctx.species} ({ctx.species_dir})", shared)
    checkpoint("species-locked")


def run_species(
    graph: StageGraph, opts: RunOptions, stages: tuple[str, ...] | None = None, locks: LockSet | None = None
) -> list[StageSummary]:
    """Run `stages` (default: all; a command's names, STAGE_NAMES) of one species in build order, under its lock; a
    stage streaming from the one before it runs with it, one task per partition (fetches overlap renders)."""
    wanted = [n for n in graph.order if stages is None or (graph.stage(n).command or n) in stages]
    with LockSet() as own, session(opts.scheduler), serve_budget(opts.scheduler) as budget:
        graph.ctx = ctx = dataclasses.replace(graph.ctx, request_budget=budget)  # to every worker, with the context
        install(budget)  # this process's requests too (the bank's roots, the split's bbox)
        _lock_species(locks or own, ctx)
        kw = {"scheduler": opts.scheduler, "workers": opts.workers, "force": opts.force, "progress": opts.progress}
        summaries: list[StageSummary] = []
        try:
            while wanted:
                group = [wanted.pop(0)]
                if wanted and graph.stage(wanted[0]).streams_from == group[0]:
                    group.append(wanted.pop(0))
                summaries += run_stages(graph, tuple(group), **kw)
        finally:
            keep_stats(current().stats())
            # the handle lives as long as this session: a graph used after it (the release) must not carry it
            # (its manager is shut down: a worker would wait on a closed address)
            graph.ctx = dataclasses.replace(graph.ctx, request_budget=None)
        return summaries


def write_release_all(
    work: Path, out: Path, opts: RunOptions, locks: LockSet | None = None, graphs: dict[str, StageGraph] | None = None
) -> dict:
    """The shard stage: the release from every species built in `work` (ARCHITECTURE.md, contract §6), run in this
    process (its outputs are this machine's release dir); `graphs`: the species' graphs a build has listed already."""
    with LockSet() as own:
        held = locks or own
        held.take(release_lock_path(out), f"the release {out}")
        graph = release_graph(work, out, graphs)
        for ctx in graph.ctx.contexts:
            _lock_species(held, ctx, shared=True)
        (summary,) = run_stages(graph, (SHARD.name,), scheduler="sync", force=opts.force, progress=False)
        return {"species": [c.species for c in graph.ctx.contexts], "skipped": not summary.ran}


def build(
    species: str, work: Path, out: Path, opts: RunOptions, cave_token: str | None = None
) -> tuple[list[StageSummary], dict]:
    """`make build`: every stage of `species`, then the release of every species in `work`. `cave_token` goes to
    the species' sources in every worker with the context (a twin's token; by default the source finds its own)."""
    graph = species_graph(make_context(species, work, out, cave_token))
    with LockSet() as locks:
        summaries = run_species(graph, opts, locks=locks)
        return summaries, write_release_all(work, out, opts, locks, {species: graph})


def regenerate_splits(work: Path, out: Path, opts: RunOptions) -> tuple[list[tuple[str, StageSummary]], dict]:
    """`make split`: the split of every species in `work` again, then the release."""
    with LockSet() as locks:
        done = []
        graphs = {}
        for species in species_in(work):
            graphs[species] = species_graph(make_context(species, work, out))
            done += [(species, s) for s in run_species(graphs[species], opts, ("split",), locks)]
        return done, write_release_all(work, out, opts, locks, graphs)


def _ledger(ctx: BuildContext) -> list[Failure]:
    return read_failures(ctx.ledger_path)


def species_dirs(work: Path) -> list[str]:
    """The species whose work has begun in `work` (their proofread roots or bank batches exist)."""
    if not Path(work).exists():
        return []
    return sorted(p.name for p in Path(work).iterdir() if (p / "roots").is_dir() or (p / "bank").is_dir())


def status(work: Path, out: Path) -> list[dict]:
    """Per species and stage, then the release: partitions done / pending, what the done partitions cover
    (`covered` of `unit`: the proofread roots of roots and bank, the candidates of the selection, the bank rows of
    fetch, render and split, the rows the release ships), failures recorded."""
    graphs = {sp: species_graph(make_context(sp, work, out)) for sp in species_dirs(work)}
    rows = [row for sp, graph in graphs.items() for row in _stage_rows(graph, sp, _ledger(graph.ctx))]
    if rows:
        release = release_graph(work, out, graphs)
        (row,) = _stage_rows(release, "release", [])
        done = row["partitions_done"] and not row["partitions_pending"]
        rows.append({**row, "species_in": ",".join(c.species for c in release.ctx.contexts) if done else ""})
    return rows


def _stage_rows(graph: StageGraph, scope: str, ledger: list[Failure]) -> list[dict]:
    rows = []
    for name in graph.order:
        try:
            parts = graph.partitions(name)
        except UserError:
            parts = []
        done = [p for p in parts if is_done(graph.ctx, p)]
        rows.append(
            {
                "species": scope,
                "stage": name,
                "partitions_done": len(done),
                "partitions_pending": len(parts) - len(done),
                "covered": sum(p.n_samples for p in done),
                "unit": graph.stage(name).unit,
                "failed": sum(1 for f in ledger if f.stage == name),
            }
        )
    return rows


def ledgered(work: Path, out: Path) -> list[dict]:
    """Every ledgered failure of every species in `work`, grouped by species, stage and reason: how many, the sample
    ids, and whether the next build retries them (a server could not give them, or an unexpected exception stopped
    them) or keeps them (the data's own reason: kept until the sample's inputs change)."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for species in species_dirs(work):
        for f in _ledger(make_context(species, work, out)):
            groups.setdefault((species, f.stage, f.reason), []).append(f.sample_id)
    order = {name: i for i, name in enumerate((*SPECIES_STAGES, SHARD.name))}
    return [
        {"species": sp, "stage": stage, "reason": reason, "samples": sorted(ids), "retried": is_retryable(reason)}
        for (sp, stage, reason), ids in sorted(groups.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99),
                                                                               -len(kv[1]), kv[0][2]))
    ]  # fmt: skip


def crashed(work: Path, out: Path) -> list[dict]:
    """Partitions whose last run crashed (a log and no current marker), and samples that failed on unexpected
    exceptions: what `status --failed` lists."""
    found = []
    if not Path(work).exists():
        return found
    for species_dir in sorted(p for p in Path(work).iterdir() if p.is_dir()):
        for log in sorted(species_dir.glob("*/part-*.log")):
            head = log.read_text().splitlines()
            found.append(
                {
                    "species": species_dir.name,
                    "stage": log.parent.name,
                    "partition": log.name.split(".")[0],
                    "what": head[0].split(": ", 1)[-1] if head else "",
                    "not_built": head[1].split(": ", 1)[-1].split() if len(head) > 1 and ": " in head[1] else [],
                    "log": str(log),
                }
            )
    return found
