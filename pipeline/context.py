"""What every stage needs to know about one species' build: its config and where things live
(pipeline.core.layout)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from config import SpeciesConfig
from pipeline.core.layout import PREVIOUS, SpeciesPaths, release_lock_path, release_marker_path

__all__ = ["PREVIOUS", "BuildContext", "release_lock_path", "release_marker_path"]


@dataclass(frozen=True)
class BuildContext(SpeciesPaths):
    species: str
    cfg: SpeciesConfig
    work_dir: Path
    out_dir: Path
