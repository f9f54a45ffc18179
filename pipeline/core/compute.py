"""Where tasks run: the local dask scheduler (worker processes, threads, or in line) or a dask.distributed
cluster by address. One function for every caller (the stages, deep verify), so they choose alike."""

from __future__ import annotations

from collections.abc import Callable

import dask
from dask.callbacks import Callback

from pipeline.core.errors import UserError

LOCAL_SCHEDULERS = ("processes", "threads", "sync")
CONNECT_TIMEOUT = "20s"  # to reach a dask.distributed scheduler


class _Progress(Callback):
    """Feeds the local dask scheduler's finished tasks' results to a callback (which picks its own)."""

    def __init__(self, on_result: Callable[[object], None]) -> None:
        super().__init__()
        self._on_result = on_result

    def _posttask(self, key, result, dsk, state, worker_id) -> None:  # noqa: ANN001 - dask's signature
        self._on_result(result)


def compute(tasks: list, scheduler: str, workers: int | None, on_result: Callable[[object], None]) -> list:
    """Run dask delayed tasks on the local scheduler or a dask.distributed cluster, reporting each result."""
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
