"""The synthetic demo world: a small connectome generated from a seed (see world.py for the layout)."""

from pipeline.demo_world.world import FORMAT, TABLES, generate_world, world_is_complete

__all__ = ["FORMAT", "TABLES", "generate_world", "world_is_complete"]
