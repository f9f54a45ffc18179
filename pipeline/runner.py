"""The stage runner: a stage's partitions, executed on dask, resumable, reusing what did not change. Every unit
of work goes through it (a species' roots, bank batches, selection, fetch, render and split, and the release of
every species): its seal writes every marker there is (and `amend` alone changes one after, for `keep_fetched`).

Listing and executing are separate: the stage graph (pipeline/graph.py) lists a stage's partitions, each with a
fingerprint of its inputs; `run_stages()` checks that the upstream stages are complete (else it refuses, naming
what is missing), executes the partitions whose marker does not match, then runs the stage's `finish` step. A
stage and the one streaming from it (fetch and render) run as one task per partition, by the same function.
A partition that runs again reuses the samples whose own inputs did not change (pipeline.reuse), unless `force`.

A partition's outputs are written atomically, then its failures file, then its marker (last). A partition
that crashes writes no marker: its traceback and the samples it did not build go to `part-NNNNN.log`, and
`status --failed` lists it. A sample that fails on an unexpected exception is a ledger row whose exception
column keeps the traceback (and the partition's log lists it too). What a partition's run met (`Outcome.stats`,
the sources' request counters among them) comes back with its result and is merged into its stage's summary as
plain data (core.stats): the runner knows no source.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import dask
from tqdm.auto import tqdm

from core.atomic import remove_stale_temps, write_json, write_text
from core.checkpoints import checkpoint
from core.compute import compute
from core.errors import UserError, is_retryable
from core.hashing import key_of, md5_hex
from core.ledger import describe, merge_ledger, retry_counts, write_failures
from core.stats import merge_stats
from pipeline import __version__
from pipeline.context import PREVIOUS, Scope
from pipeline.graph import StageGraph, name_list
from pipeline.markers import digests, read_marker, write_marker
from pipeline.reuse import LEVEL_FILE, PriorRun, load_prior
from pipeline.stage import Outcome, Partition, Stage, is_done, to_retry


@dataclass
class PartResult:
    index: int
    n_planned: int = 0
    built: int = 0
    reused: int = 0
    failures: int = 0  # found in this run
    crashed: int = 0
    error: str | None = None
    log: str | None = None
    skipped: bool = False  # already done: nothing ran
    stats: dict = field(default_factory=dict)  # what the run met (Outcome.stats), carried back from its worker


@dataclass
class StageSummary:
    stage: str
    partitions: int
    ran: int
    skipped: int
    samples: int
    failures: int
    seconds: float
    reused: int = 0
    crashed_samples: int = 0
    notes: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)  # the partitions' stats (Outcome.stats), merged: numbers summed

    def line(self) -> str:
        text = (
            f"{self.stage}: {self.partitions} partitions ({self.ran} run, {self.skipped} already done), "
            f"{self.samples} samples, {self.failures} failures, {self.seconds:.1f} s"
        )
        if self.reused:
            text += f", {self.reused} reused"
        return text + "".join(f"; {n}" for n in self.notes)


SUMMARY_LINE = re.compile(
    r"^(?P<stage>\w+): (?P<parts>\d+) partitions \((?P<ran>\d+) run, (?P<done>\d+) already done\), "
    r"(?P<samples>\d+) samples, (?P<failures>\d+) failures, [\d.]+ s(?:, (?P<reused>\d+) reused)?",
    re.M,
)


def parse_summaries(text: str) -> dict[str, dict[str, int]]:
    """The figures of every `StageSummary.line()` in `text`, by stage (for scripts reading a build's output)."""
    keys = ("parts", "ran", "done", "samples", "failures", "reused")
    return {m["stage"]: {k: int(m[k] or 0) for k in keys} for m in SUMMARY_LINE.finditer(text)}


def config_values(ctx: Scope, keys: tuple[str, ...]) -> dict:
    """The scope's values of `keys` (a species' config; the release's, across species)."""
    return ctx.config(keys)


def code_version(stage: Stage) -> str:
    """The code version in a stage's keys: the pipeline's, and the stage's own `output_version` when it has one,
    so that a change of one stage's output bytes redoes that stage (and what consumes it), not the ones before."""
    own = stage.output_version
    return __version__ if own is None else f"{__version__}+{stage.name}.{own}"


def fingerprint(ctx: Scope, stage: Stage, *inputs: object) -> str:
    """The digest of a stage's declared config keys, the code version and the given inputs."""
    cfg = json.dumps(config_values(ctx, stage.reads), sort_keys=True)
    return md5_hex(key_of(code_version(stage), stage.name, cfg, *inputs))


# ------------------------------------------------------------------------------------------ one partition


def _log_text(ctx: Scope, part: Partition, head: str, not_built: list[str], body: str) -> str:
    lines = [f"{ctx.scope}, stage {part.stage}, {part.name}: {head}"]
    if not_built:
        lines.append(f"samples not built ({len(not_built)}): " + " ".join(not_built))
    return "\n".join(lines) + "\n\n" + body


def attempt(
    stage: Stage, ctx: Scope, part: Partition, prior: PriorRun | None, **kw: object
) -> Outcome | PartResult:
    """`stage.run` of one partition; a crash becomes a PartResult with the error, its traceback in the log."""
    log = part.log_path(ctx)
    result = PartResult(part.index, part.n_samples)
    start = time.perf_counter()
    try:
        outcome = stage.run(ctx, part, prior, **kw)
        outcome.seconds = time.perf_counter() - start
        return outcome
    except UserError as exc:
        write_text(log, _log_text(ctx, part, str(exc), list(part.members), ""))
        result.error, result.log = str(exc), str(log)
    except Exception as exc:  # a bug or an unexpected source error: keep its traceback, keep other partitions
        body = "".join(traceback.format_exception(exc))
        write_text(log, _log_text(ctx, part, describe(exc), list(part.members), body))
        result.error, result.log = f"{part.name}: {describe(exc)}", str(log)
    return result


def seal(ctx: Scope, part: Partition, outcome: Outcome, prior: PriorRun | None) -> PartResult:
    """Finish a partition that ran: its failures file, its log (or none), then its marker, last."""
    log = part.log_path(ctx)
    result = PartResult(part.index, part.n_samples)
    write_failures(part.failures_path(ctx), outcome.failures)
    if outcome.crashed:
        body = "\n".join(f"sample {sid}:\n{tb}" for sid, tb in sorted(outcome.crashed.items()))
        head = f"{len(outcome.crashed)} samples failed on unexpected exceptions (recorded in the ledger)"
        write_text(log, _log_text(ctx, part, head, sorted(outcome.crashed), body))
        result.log = str(log)
    else:
        log.unlink(missing_ok=True)
    outputs = digests(ctx.work_dir, outcome.outputs, prior.digests if prior is not None else {})
    marker = {
        "stage": part.stage,
        "index": part.index,
        "level": part.level,
        "n_samples": part.n_samples,
        "fingerprint": part.fingerprint,
        "n_built": outcome.built,
        "n_reused": outcome.reused,
        "n_failures": len(outcome.failures),
        "retry": sum(1 for f in outcome.failures if is_retryable(f.reason)),
        "outputs": outputs,
        **({"dropped": dict(sorted(outcome.dropped.items()))} if outcome.dropped else {}),
        "samples": dict(sorted(outcome.samples.items())),
        "seconds": round(outcome.seconds, 3),
        "finished_unix": int(time.time()),  # when, for the report: the marker is not an output of the build
    }
    write_marker(part.marker_path(ctx), marker)
    checkpoint(f"{part.stage}-sealed")
    result.built, result.reused, result.failures, result.crashed = (
        outcome.built, outcome.reused, outcome.new_failures, len(outcome.crashed)
    )  # fmt: skip
    return result


def amend(ctx: Scope, marker_path: Path, drop: dict[str, dict] | None = None, add: list[Path] = ()) -> None:
    """A sealed unit's record of its outputs amended after the fact, its fingerprint and the rest kept (the one other
    place a marker is written; `keep_fetched: false`, pipeline/stages/fetched_disk.py): `drop` (rel path -> its
    record) moves outputs to `dropped` (removed by choice: not looked for on disk, still in the digest downstream
    sees); `add` records files written again, with their own digests, as outputs (no longer dropped)."""
    marker = read_marker(marker_path)
    if marker is None:
        return
    outputs = {rel: rec for rel, rec in marker.get("outputs", {}).items() if rel not in (drop or {})}
    outputs.update(digests(ctx.work_dir, list(add)))
    dropped = {**marker.get("dropped", {}), **(drop or {})}
    for rel in outputs:
        dropped.pop(rel, None)
    write_marker(marker_path, {**marker, "outputs": dict(sorted(outputs.items())),
                               "dropped": dict(sorted(dropped.items()))})  # fmt: skip


def execute_partition(stage: Stage, ctx: Scope, part: Partition, force: bool, **kw: object) -> PartResult:
    """Run one partition in a worker: outputs, then failures file, then the marker, last."""
    prior = None if force else load_prior(ctx, part.stage, part.index, part.level)
    outcome = attempt(stage, ctx, part, prior, **kw)
    if isinstance(outcome, PartResult):
        return outcome
    result = seal(ctx, part, outcome, prior)
    stage.sealed(ctx, part)
    result.stats = outcome.stats  # carried back with the result: the figures were met in this worker
    return result


def execute_alone(stage: Stage, ctx: Scope, part: Partition, force: bool) -> tuple[PartResult]:
    """A task of one partition: its result as a 1-tuple (a streamed pair's task gives a 2-tuple)."""
    return (execute_partition(stage, ctx, part, force),)


# ------------------------------------------------------------------------------------------ layout changes


def relayout(ctx: Scope, stage: str, parts: list[Partition]) -> None:
    """When the partitions' level differs from the markers on disk, move the old layout's partition files into
    `<stage>/previous/` (kept for reuse until the stage completes). If `previous/` already holds an older
    layout (a relayout run was interrupted and the layout changed again), the middle layout is dropped."""
    folder = ctx.stage_dir(stage)
    if not parts or not folder.exists():
        return
    level = parts[0].level
    stale = []
    for marker_path in folder.glob("part-*.done"):
        marker = read_marker(marker_path) or {}
        if marker.get("level") != level or int(marker.get("index", -1)) >= len(parts):
            stale.append(marker_path)
    if not stale:
        return
    files = [p for p in folder.glob("part-*") if p.is_file()]
    previous = folder / PREVIOUS
    if previous.exists():
        stale_names = {m.name.split(".")[0] for m in stale}
        for p in files:
            name = p.name.split(".")[0]
            if name in stale_names or int(name[len("part-") :]) >= len(parts):
                p.unlink(missing_ok=True)
        return
    old_level = (read_marker(stale[0]) or {}).get("level")
    previous.mkdir()
    for p in files:
        p.rename(previous / p.name)
    if isinstance(old_level, int):
        write_json(previous / LEVEL_FILE, {"level": old_level})


def drop_previous(ctx: Scope, stage: str) -> None:
    shutil.rmtree(ctx.stage_dir(stage) / PREVIOUS, ignore_errors=True)


# ------------------------------------------------------------------------------------------ execution


def summarize(stage: str, parts: list[Partition], results: list[PartResult]) -> StageSummary:
    """A stage's summary from the results of the partitions that ran (the others were already done)."""
    ran = [r for r in results if not r.skipped]
    summary = StageSummary(
        stage=stage,
        partitions=len(parts),
        ran=len(ran),
        skipped=len(parts) - len(ran),
        samples=sum(r.built for r in ran),
        failures=sum(r.failures for r in ran),
        seconds=0.0,
        reused=sum(r.reused for r in ran),
        crashed_samples=sum(r.crashed for r in ran),
    )
    for r in results:
        summary.stats = merge_stats(summary.stats, r.stats)
    crashed = [r for r in ran if r.crashed]
    if crashed:
        summary.notes.append(
            f"{summary.crashed_samples} samples failed on unexpected exceptions, tracebacks in "
            + name_list([r.log or "" for r in crashed])
        )
    return summary


def stage_failed(scope: str, stage: str, errors: list[PartResult]) -> UserError:
    """One line for the partitions of a stage that crashed: the first, how many more, where its traceback is."""
    errors = sorted(errors, key=lambda r: r.index)
    more = f" (and {len(errors) - 1} more partitions)" if len(errors) > 1 else ""
    return UserError(
        f"{scope}, stage {stage}: {errors[0].error}{more}; traceback in {errors[0].log}; "
        "finished partitions are kept, rerun to resume (`python -m pipeline status --failed` lists what crashed)"
    )


def run_stage(graph: StageGraph, name: str, **kw: object) -> StageSummary:
    """One stage of the graph (see run_stages)."""
    return run_stages(graph, (name,), **kw)[0]  # type: ignore[arg-type]


def run_stages(
    graph: StageGraph,
    names: tuple[str, ...],
    *,
    scheduler: str = "processes",
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> list[StageSummary]:
    """Run one stage, or a stage and the one that streams from it (`Stage.streams_from`) in one task per
    partition, so that the second works on each sample as soon as the first has settled it (network waits
    overlap compute). Either way: the inputs are checked (a stage whose upstream is not complete refuses in one
    line), partitions relaid out, the ones not done executed on dask (outputs, failures file, marker last),
    errors raised in one line after the ledger is merged, each stage's `finish`, one summary per stage."""
    start = time.perf_counter()
    ctx = graph.ctx
    stages = [graph.stage(n) for n in names]
    if len(stages) > 2 or (len(stages) == 2 and stages[1].streams_from != stages[0].name):
        raise ValueError(f"stages {names}: one stage, or a stage and the one streaming from it")
    remove_stale_temps(ctx.species_dir)  # left by a killed run; never taken for a result
    missing = graph.missing(stages[0].name)
    if missing:
        raise UserError(f"{ctx.scope}, stage {stages[0].name}: {missing}")
    listed = [graph.partitions(stage.name) for stage in stages]
    for stage, parts in zip(stages, listed, strict=True):
        relayout(ctx, stage.name, parts)
    def due(p: Partition) -> bool:  # not done, or done with failures to retry once in this run
        return force or not is_done(ctx, p) or to_retry(ctx, p) > 0

    if len(stages) == 1:
        todo = [p for p in listed[0] if due(p)]
        tasks = [dask.delayed(execute_alone, pure=False)(stages[0], ctx, p, force) for p in todo]
    else:
        todo = [p for p, q in zip(*listed, strict=True) if due(p) or not is_done(ctx, q) or to_retry(ctx, q) > 0]
        tasks = [dask.delayed(execute_streamed, pure=False)(*stages, ctx, p, force) for p in todo]
    indices = {p.index for p in todo}
    retrying = [sum(to_retry(ctx, q) for q in parts if q.index in indices and is_done(ctx, q)) for parts in listed]
    bar = tqdm(total=sum(p.n_samples for p in todo), desc=f"{ctx.species} {'+'.join(names)}", unit="sample",
               disable=not progress or not todo, leave=True)  # fmt: skip
    n_failed = 0

    def on_result(result: object) -> None:
        nonlocal n_failed
        if isinstance(result, tuple):
            done = [r for r in result if r is not None]
            n_failed += sum(r.failures for r in done)
            bar.update(max(r.n_planned for r in done))
            bar.set_postfix(failures=n_failed, refresh=False)

    try:
        results = compute(tasks, scheduler, workers, on_result) if tasks else []
    finally:
        bar.close()
    per_stage = [[r[i] for r in results if r[i] is not None] for i in range(len(stages))]
    for stage, stage_results in zip(stages, per_stage, strict=True):
        errors = [r for r in stage_results if r.error]
        if errors:
            merge_ledger(ctx)
            raise stage_failed(ctx.scope, stage.name, errors)
    summaries = []
    for stage, parts, stage_results, retried in zip(stages, listed, per_stage, retrying, strict=True):
        summary = summarize(stage.name, parts, stage_results)
        if retried:
            summary.notes.append(f"{retried} failures of an earlier run retried")
        if summary.ran:
            graph.changed(stage.name)
        note = stage.finish(ctx, graph, parts, force)
        if note:
            summary.notes.append(note)
        summaries.append(summary)
    ledger = merge_ledger(ctx)
    for stage in stages:
        drop_previous(ctx, stage.name)
    for summary in summaries:
        summary.seconds = time.perf_counter() - start
    for stage, parts, summary in zip(stages, listed, summaries, strict=True):
        over_budget(ctx, stage, parts, ledger, summary)
    return summaries


def over_budget(ctx: Scope, stage: Stage, parts: list[Partition], ledger: object, summary: StageSummary) -> None:
    """The stage's failures for the servers' sake (retryable: unavailable, unexpected) against its items: noted in
    its summary, and past `max_failed_fraction` a UserError in one line naming the commonest reasons (the
    partitions are sealed: a rerun retries only those failures)."""
    items = sum(p.n_samples for p in parts)
    counts = retry_counts(ledger, stage.name)  # type: ignore[arg-type]
    failed = sum(counts.values())
    if not failed:
        return
    commonest = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3])
    summary.notes.append(f"{failed} to retry ({commonest})")
    if failed > ctx.cfg.max_failed_fraction * max(items, 1):
        raise UserError(
            f"{ctx.scope}, stage {stage.name}: {failed} of {items} {stage.unit} failed for the servers' sake "
            f"({100 * failed / max(items, 1):.1f}%, over max_failed_fraction {ctx.cfg.max_failed_fraction:g} of "
            f"config/{ctx.species}.yaml): {commonest}; `python -m pipeline status --failed` lists them, the next "
            "build retries them"
        )


# ------------------------------------------------------------------------------------------ streamed pairs


class LiveSamples:
    """The samples of a running partition, each (path, sha256) or None, as they are settled: what the stage
    streaming from it waits on, sample by sample."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._got: dict[str, tuple[Path, str] | None] = {}
        self._closed = False

    def put(self, sample_hash: str, value: tuple[Path, str] | None) -> None:
        with self._cond:
            self._got[sample_hash] = value
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def get(self, sample_hash: str) -> tuple[Path, str] | None:
        with self._cond:
            self._cond.wait_for(lambda: sample_hash in self._got or self._closed)
            if sample_hash not in self._got:
                raise UserError(f"the upstream of sample {sample_hash} did not finish (its partition stopped)")
            return self._got[sample_hash]


def _settled(ctx: Scope, part: Partition) -> bool:
    return is_done(ctx, part) and not to_retry(ctx, part)


def execute_streamed(
    first: Stage, second: Stage, ctx: Scope, part: Partition, force: bool
) -> tuple[PartResult, PartResult | None]:
    """One task: `first`'s partition (unless done) on a background thread, `second` working on each of its
    samples as soon as it is settled; `first` sealed first, then `second`, fingerprinted by what `first` wrote."""
    if not force and _settled(ctx, part):
        done = PartResult(part.index, 0, skipped=True)
        own = second.partition_of(ctx, part)
        if _settled(ctx, own):
            return done, None
        return done, execute_partition(second, ctx, own, force)
    if not force and is_done(ctx, part) and _settled(ctx, second.partition_of(ctx, part)):
        # `first` runs only to retry its failures, and `second` is done: `second` runs after it only if a retried
        # sample came this time (what `first` wrote changed). Retries that fail again leave both untouched: a
        # rebuild with nothing changed rewrites no render part (each one of them, at the release's scale).
        retried = execute_partition(first, ctx, part, force)
        own = second.partition_of(ctx, part)
        if retried.error or _settled(ctx, own):
            return retried, None
        return retried, execute_partition(second, ctx, own, force)
    live = LiveSamples()
    box: dict[str, PartResult] = {}

    def first_job() -> None:
        try:
            box["first"] = execute_partition(first, ctx, part, force, on_sample=live.put)
        finally:
            live.close()

    thread = threading.Thread(target=first_job, name=f"{first.name}-{part.name}", daemon=True)
    thread.start()
    prior = None if force else load_prior(ctx, second.name, part.index, part.level)
    provisional = Partition(second.name, part.index, part.n_samples, "", part.level, part.members)
    outcome = attempt(second, ctx, provisional, prior, upstream=live.get)
    thread.join()
    upstream = box["first"]
    if upstream.error:  # the second stopped with it: its own log would only repeat the first's
        provisional.log_path(ctx).unlink(missing_ok=True)
        return upstream, None
    if isinstance(outcome, PartResult):
        return upstream, outcome
    own = second.partition_of(ctx, part)
    result = seal(ctx, own, outcome, prior)
    second.sealed(ctx, own)  # after both markers: what it does may touch the first's outputs
    return upstream, result
