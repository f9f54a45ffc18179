"""Where tasks run: the local dask scheduler (worker processes, threads, or in line) or a dask.distributed
cluster by address. One function for every caller (the stages, deep verify), so they choose alike."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import dask
from dask.callbacks import Callback

from core.errors import UserError

LOCAL_SCHEDULERS = ("processes", "threads", "sync")
CONNECT_TIMEOUT = "20s"  # to reach a dask.distributed scheduler


class _Progress(Callback):
    """Feeds the local dask scheduler's finished tasks' results to a callback (which picks its own)."""

    def __init__(self, on_result: Callable[[object], None]) -> None:
        super().__init__()
        self._on_result = on_result

    def _posttask(self, key, result, dsk, state, worker_id) -> None:  # noqa: ANN001 - dask's signature
        self._on_result(result)


_SESSIONS: dict[str, Any] = {}  # scheduler address -> the dask.distributed client of a running command


PROFILER_OFF = "cb2-sampling-profiler-off"  # the worker plugin's name (one per cluster: registering it again replaces)


def _profiler_off(worker: Any) -> None:
    """Stop a dask worker's sampling profiler. Every 10 ms it calls `sys._current_frames()`, which on CPython 3.11
    can deadlock the whole process (python/cpython#106883: the frames are gathered under the runtime's lock, a
    garbage collection there runs finalizers that wait on a thread that needs that lock to start or end). Our
    tasks start and end threads all the time (cloud-files makes a pool per read): a fetch on a cluster froze with
    every thread waiting on the GIL and the main thread in `gc_collect_main` under `_PyThread_CurrentFrames`."""
    for name in ("profile", "profile-cycle"):  # out of the dict: a worker joining starts its callbacks after this
        callback = worker.periodic_callbacks.pop(name, None)
        if callback is not None:
            callback.stop()


def _connect(scheduler: str) -> Any:
    try:
        from distributed import Client
        from distributed.diagnostics.plugin import WorkerPlugin
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise UserError("dask.distributed is not installed: pip install 'dask[distributed]'") from exc
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except OSError as exc:
        raise UserError(f"cannot reach dask scheduler at {scheduler}: {exc}") from None

    class ProfilerOff(WorkerPlugin):
        name = PROFILER_OFF

        def setup(self, worker: Any) -> None:
            _profiler_off(worker)

    client.register_plugin(ProfilerOff())  # every worker of the cluster, and each that joins it later
    return client


@contextmanager
def session(scheduler: str) -> Iterator[Any]:
    """One dask.distributed client for a whole command on `scheduler` (None for the local schedulers): what lives on
    the cluster for the command lives as long as it."""
    if scheduler in LOCAL_SCHEDULERS or scheduler in _SESSIONS:
        yield _SESSIONS.get(scheduler)
        return
    client = _SESSIONS[scheduler] = _connect(scheduler)
    try:
        yield client
    finally:
        _SESSIONS.pop(scheduler, None)
        client.close()


def compute(tasks: list, scheduler: str, workers: int | None, on_result: Callable[[object], None]) -> list:
    """Run dask delayed tasks on the local scheduler or a dask.distributed cluster, reporting each result."""
    if scheduler in LOCAL_SCHEDULERS:
        with _Progress(on_result):
            return list(dask.compute(*tasks, scheduler=scheduler, num_workers=workers))
    from distributed import as_completed

    with session(scheduler) as client:
        futures = client.compute(tasks)
        results = []
        for future in as_completed(futures):
            result = future.result()
            on_result(result)
            results.append(result)
        return results
