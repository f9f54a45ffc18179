"""The synthetic demo world: a small connectome generated from a seed (see world.py for the layout)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sim.demo_world.world import FORMAT, TABLES, generate_world, world_is_complete

if TYPE_CHECKING:
    from pipeline.context import BuildContext

__all__ = ["FORMAT", "TABLES", "ensure_world", "generate_world", "world_is_complete"]


def ensure_world(ctx: BuildContext, force: bool = False) -> dict | None:
    """Generate the demo world when it is missing (demo species only): what the commands that build or serve
    the demo species call first. Returns the world's summary (None for a real species)."""
    if ctx.cfg.source != "demo":
        return None
    if world_is_complete(ctx.world_dir) and not force:
        return json.loads((ctx.world_dir / "world.json").read_text())
    params = ctx.cfg.demo_world
    return generate_world(ctx.world_dir, params.n_sites, params.neurons_per_site, params.seed)
