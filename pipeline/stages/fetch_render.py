"""Fetch and render a partition in one task, so that network waits overlap compute.

Within a worker, the partition's fetch runs on its I/O threads (`fetch_threads`) in a background thread while
the task's own thread renders each sample as soon as its fetch has settled; dask stays the engine between
workers. Each stage keeps its own files, markers and summary line, exactly as when they run one after the
other: the fetch partition is sealed first, and the render partition's fingerprint is computed from the
fetch outputs it then records.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dask
from tqdm.auto import tqdm

from pipeline.context import BuildContext
from pipeline.core.compute import compute
from pipeline.core.errors import UserError
from pipeline.core.ledger import merge_ledger
from pipeline.reuse import load_prior
from pipeline.runner import (
    Partition,
    PartResult,
    StageSummary,
    attempt,
    drop_previous,
    execute_partition,
    is_done,
    relayout,
    seal,
    stage_failed,
    summarize,
)
from pipeline.stages.fetch import FetchStage
from pipeline.stages.render import RenderStage


class LiveFetch:
    """The samples of a running fetch partition, each (path, sha256) or None, as they are settled."""

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
                raise UserError(f"the fetch of sample {sample_hash} did not finish (its partition stopped)")
            return self._got[sample_hash]


def fetch_then_render(ctx: BuildContext, fetch_part: Partition, force: bool) -> tuple[PartResult, PartResult | None]:
    """One task: the fetch partition (unless done) with the render of its samples alongside, then both sealed."""
    fetch, render = FetchStage(), RenderStage()
    if not force and is_done(ctx, fetch_part):
        done = PartResult(fetch_part.index, 0, skipped=True)
        render_part = render.partition_of(ctx, fetch_part)
        if is_done(ctx, render_part):
            return done, None
        return done, execute_partition(render, ctx, render_part, force)
    live = LiveFetch()
    box: dict[str, PartResult] = {}

    def fetch_job() -> None:
        try:
            box["fetch"] = execute_partition(fetch, ctx, fetch_part, force, on_sample=live.put)
        finally:
            live.close()

    thread = threading.Thread(target=fetch_job, name=f"fetch-{fetch_part.name}", daemon=True)
    thread.start()
    rprior = None if force else load_prior(ctx, render.name, fetch_part.index, fetch_part.level)
    provisional = Partition(render.name, fetch_part.index, fetch_part.n_samples, "", fetch_part.level,
                            fetch_part.members)  # fmt: skip
    outcome = attempt(render, ctx, provisional, rprior, fetched=live.get)
    thread.join()
    fetched = box["fetch"]
    if fetched.error:  # the render stopped with it: its own log would only repeat the fetch's
        provisional.log_path(ctx).unlink(missing_ok=True)
        return fetched, None
    if isinstance(outcome, PartResult):
        return fetched, outcome
    return fetched, seal(ctx, render.partition_of(ctx, fetch_part), outcome, rprior)


def run_fetch_render(
    ctx: BuildContext, *, scheduler: str, workers: int | None, force: bool, progress: bool
) -> list[StageSummary]:
    """The fetch and render stages together, one task per partition; their two summary lines."""
    start = time.perf_counter()
    fetch, render = FetchStage(), RenderStage()
    parts = fetch.partitions(ctx)
    missing = fetch.missing_upstream(ctx, parts)
    if missing:
        raise UserError(f"species {ctx.species}, stage {fetch.name}: {missing}")
    relayout(ctx, fetch.name, parts)
    relayout(ctx, render.name, parts)
    render_parts = render.partitions(ctx)
    todo = [f for f, r in zip(parts, render_parts, strict=True) if force or not (is_done(ctx, f) and is_done(ctx, r))]
    bar = tqdm(total=sum(p.n_samples for p in todo), desc=f"{ctx.species} fetch+render", unit="sample",
               disable=not progress or not todo, leave=True)  # fmt: skip

    def on_result(result: object) -> None:
        if isinstance(result, tuple):
            bar.update(max(r.n_planned for r in result if r is not None))

    tasks = [dask.delayed(fetch_then_render, pure=False)(ctx, p, force) for p in todo]
    try:
        results = compute(tasks, scheduler, workers, on_result) if tasks else []
    finally:
        bar.close()
    fetched = [f for f, _ in results]
    rendered = [r for _, r in results if r is not None]
    for stage, stage_results in ((fetch, fetched), (render, rendered)):
        errors = [r for r in stage_results if r.error]
        if errors:
            merge_ledger(ctx)
            raise stage_failed(ctx.species, stage.name, errors)
    seconds = time.perf_counter() - start
    summaries = [summarize(fetch.name, parts, fetched), summarize(render.name, render_parts, rendered)]
    for s in summaries:
        s.seconds = seconds
    note = fetch.finish(ctx, parts, force)
    if note:
        summaries[0].notes.append(note)
    merge_ledger(ctx)
    drop_previous(ctx, fetch.name)
    drop_previous(ctx, render.name)
    return summaries
