"""The CAVE source: CAVE (caveclient) and CloudVolume behind the `Source` protocol (pipeline/sources/base.py)."""

from __future__ import annotations

from pipeline.sources.cave.source import CaveSource

__all__ = ["CaveSource"]
