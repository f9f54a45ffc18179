"""The stage runner: a plan of deterministic partitions, executed on dask, resumable.

Planning and executing are separate: `plan()` lists partitions (with a fingerprint of their
inputs); `run_stage()` executes the ones not yet done. A partition is done when its marker
exists and carries the same fingerprint; the marker is written last, after the outputs and
the partition's failures file have been renamed into place.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import dask
from dask.callbacks import Callback
from tqdm.auto import tqdm

from pipeline.atomic import remove_stale_temps, write_json
from pipeline.context import BuildContext
from pipeline.errors import UserError
from pipeline.hashing import sha256_file
from pipeline.ledger import Failure, describe, merge_ledger, write_failures

LOCAL_SCHEDULERS = ("processes", "threads", "sync")
CONNECT_TIMEOUT = "20s"  # to reach a dask.distributed scheduler


@dataclass(frozen=True)
class Partition:
    stage: str
    index: int
    n_samples: int
    fingerprint: str

    def base(self, ctx: BuildContext) -> Path:
        return ctx.stage_dir(self.stage) / f"part-{self.index:05d}"

    def marker_path(self, ctx: BuildContext) -> Path:
        return Path(f"{self.base(ctx)}.done")

    def failures_path(self, ctx: BuildContext) -> Path:
        return Path(f"{self.base(ctx)}.failures.parquet")

    def output_path(self, ctx: BuildContext, suffix: str = ".parquet") -> Path:
        return Path(f"{self.base(ctx)}{suffix}")


@dataclass
class PartResult:
    index: int
    n_planned: int = 0
    n_done: int = 0
    failures: list[Failure] = field(default_factory=list)
    error: str | None = None
    skipped: bool = False


class Stage(Protocol):
    name: str

    def plan(self, ctx: BuildContext) -> list[Partition]: ...

    def run(self, ctx: BuildContext, part: Partition) -> tuple[int, list[Failure]]:
        """Build one partition, writing its outputs atomically; return (samples built, failures)."""
        ...

    def outputs(self, ctx: BuildContext, part: Partition) -> list[Path]:
        """The files a finished partition leaves; the marker records their sizes."""
        ...


@dataclass
class StageSummary:
    stage: str
    partitions: int
    ran: int
    skipped: int
    samples: int
    failures: int
    seconds: float

    def line(self) -> str:
        return (
            f"{self.stage}: {self.partitions} partitions ({self.ran} run, {self.skipped} already done), "
            f"{self.samples} samples, {self.failures} failures, {self.seconds:.1f} s"
        )


def read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _digests(ctx: BuildContext, paths: list[Path]) -> dict[str, dict]:
    """Size and sha256 of each output, keyed by its path relative to the work dir (which may move)."""
    return {
        str(p.relative_to(ctx.work_dir)): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in paths
    }


def corrupt_outputs(ctx: BuildContext, part: Partition) -> list[str]:
    """Outputs of a finished partition whose bytes no longer match its marker (the full sha256 check)."""
    marker = read_marker(part.marker_path(ctx)) or {}
    bad = []
    for rel, recorded in marker.get("outputs", {}).items():
        path = ctx.work_dir / rel
        if not path.exists() or sha256_file(path) != recorded["sha256"]:
            bad.append(str(path))
    return bad


def is_done(ctx: BuildContext, part: Partition) -> bool:
    """Marker present, same inputs, and every recorded output still there at its recorded size (cheap;
    `corrupt_outputs` does the full hash check where a stage consumes another's outputs)."""
    marker = read_marker(part.marker_path(ctx))
    if marker is None or marker.get("fingerprint") != part.fingerprint:
        return False
    for rel, recorded in marker.get("outputs", {}).items():
        try:
            if (ctx.work_dir / rel).stat().st_size != recorded["size"]:
                return False
        except FileNotFoundError:
            return False
    return True


def execute_partition(stage: Stage, ctx: BuildContext, part: Partition) -> PartResult:
    """Run one partition in a worker: outputs, then failures file, then the marker, last."""
    try:
        n_done, failures = stage.run(ctx, part)
    except UserError as exc:
        return PartResult(part.index, part.n_samples, error=f"{exc}")
    except Exception as exc:  # a bug or an unexpected source error: report, keep other partitions
        return PartResult(part.index, part.n_samples, error=f"partition {part.index}: {describe(exc)}")
    write_failures(part.failures_path(ctx), failures)
    outputs = _digests(ctx, stage.outputs(ctx, part))
    marker = {**asdict(part), "n_done": n_done, "n_failures": len(failures), "outputs": outputs}
    write_json(part.marker_path(ctx), marker)
    return PartResult(part.index, part.n_samples, n_done=n_done, failures=failures)


class _Progress(Callback):
    """Feeds the local dask scheduler's finished tasks into one tqdm bar."""

    def __init__(self, on_result: Callable[[PartResult], None]) -> None:
        super().__init__()
        self._on_result = on_result

    def _posttask(self, key, result, dsk, state, worker_id) -> None:  # noqa: ANN001 - dask's signature
        if isinstance(result, PartResult):
            self._on_result(result)


def _compute(tasks: list, scheduler: str, workers: int | None, on_result: Callable[[PartResult], None]) -> list:
    if scheduler in LOCAL_SCHEDULERS:
        with _Progress(on_result):
            return list(dask.compute(*tasks, scheduler=scheduler, num_workers=workers))
    try:
        from distributed import Client, as_completed
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise UserError("dask.distributed is not installed: pip install 'dask[distributed]'") from exc
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise UserError(f"cannot reach dask scheduler at {scheduler}: {exc}") from None
    with client:
        futures = client.compute(tasks)
        results = []
        for future in as_completed(futures):
            result = future.result()
            on_result(result)
            results.append(result)
        return results


def run_stage(
    stage: Stage,
    ctx: BuildContext,
    *,
    scheduler: str = "processes",
    workers: int | None = None,
    force: bool = False,
    progress: bool = True,
) -> StageSummary:
    start = time.perf_counter()
    remove_stale_temps(ctx.species_dir)  # left by a killed run; never taken for a result
    parts = stage.plan(ctx)
    todo = [p for p in parts if force or not is_done(ctx, p)]
    skipped = len(parts) - len(todo)
    bar = tqdm(
        total=sum(p.n_samples for p in todo),
        desc=f"{ctx.species} {stage.name}",
        unit="sample",
        disable=not progress or not todo,
        leave=True,
    )
    n_failed = 0

    def on_result(result: PartResult) -> None:
        nonlocal n_failed
        n_failed += len(result.failures)
        bar.update(result.n_planned)
        bar.set_postfix(failures=n_failed, refresh=False)

    tasks = [dask.delayed(execute_partition, pure=False)(stage, ctx, p) for p in todo]
    try:
        results = _compute(tasks, scheduler, workers, on_result) if tasks else []
    finally:
        bar.close()
    merge_ledger(ctx.species_dir)
    errors = sorted((r for r in results if r.error), key=lambda r: r.index)
    if errors:
        more = f" (and {len(errors) - 1} more partitions)" if len(errors) > 1 else ""
        raise UserError(
            f"species {ctx.species}, stage {stage.name}: {errors[0].error}{more}; "
            "finished partitions are kept, rerun to resume"
        )
    return StageSummary(
        stage=stage.name,
        partitions=len(parts),
        ran=len(todo),
        skipped=skipped,
        samples=sum(r.n_done for r in results),
        failures=sum(len(r.failures) for r in results),
        seconds=time.perf_counter() - start,
    )
