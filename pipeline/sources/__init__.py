"""Sources: the outside world behind one protocol (see base.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.sources.base import Cutout, OperationDetails, Skeleton, Source
from pipeline.sources.retrying import RetryingSource

if TYPE_CHECKING:
    from pipeline.context import BuildContext

__all__ = ["Cutout", "OperationDetails", "Skeleton", "Source", "RetryingSource", "open_source"]

_OPEN: dict[tuple, RetryingSource] = {}


def open_source(ctx: BuildContext) -> RetryingSource:
    """The species' source, opened once per process (each dask worker keeps its own)."""
    from pipeline.sources import budget

    budget.install(ctx.request_budget)  # the build's one budget per host (this process's own when None)
    key = (ctx.species, str(ctx.work_dir), ctx.cfg.model_dump_json())
    if key not in _OPEN:
        if ctx.cfg.source == "demo":
            from pipeline.sources.demo import DemoSource

            inner = DemoSource(ctx.cfg, ctx.world_dir)
        else:
            from pipeline.sources.cave import CaveSource

            inner = CaveSource(ctx.cfg, token=ctx.cave_token)
        _OPEN[key] = RetryingSource(inner, ctx.cfg.faults)
    return _OPEN[key]
