"""What every stage needs to know about one species' build: its config and where things live."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from config import SpeciesConfig


@dataclass(frozen=True)
class BuildContext:
    species: str
    cfg: SpeciesConfig
    work_dir: Path
    out_dir: Path

    @property
    def species_dir(self) -> Path:
        return self.work_dir / self.species

    @property
    def world_dir(self) -> Path:
        """The demo world's layers and tables (demo species only)."""
        return self.species_dir / "world"

    @property
    def bank_path(self) -> Path:
        return self.species_dir / "bank.parquet"

    @property
    def ledger_path(self) -> Path:
        return self.species_dir / "failures.parquet"

    def stage_dir(self, stage: str) -> Path:
        return self.species_dir / stage
