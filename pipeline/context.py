"""What every stage needs to know about one species' build: its config and where things live.

The work-dir layout is spelled out here and nowhere else:

    work/<species>/.lock                 the species' build lock (pipeline.locks)
    work/<species>/world/                the demo world (demo species only)
    work/<species>/bank/roots.parquet    proofread roots at the pinned time (+ roots.done)
    work/<species>/<stage>/part-NNNNN.*  a partition's outputs, failures, log and marker (.done, written last)
    work/<species>/<stage>/previous/     partitions of an older layout, kept for reuse until the stage completes
    work/<species>/bank.parquet          the selected bank rows (+ bank.done)
    work/<species>/fetch/samples/HH/<hash>-<key>.npz   one fetched sample, named by its inputs' key
    work/<species>/split.parquet, split/manifest.json
    work/<species>/failures.parquet      the ledger: union of every partition's failures
    work/release.done                    the shard stage's marker
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from config import SpeciesConfig

PREVIOUS = "previous"


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
    def lock_path(self) -> Path:
        return self.species_dir / ".lock"

    @property
    def bank_path(self) -> Path:
        return self.species_dir / "bank.parquet"

    @property
    def bank_marker_path(self) -> Path:
        return self.species_dir / "bank.done"

    @property
    def roots_path(self) -> Path:
        return self.stage_dir("bank") / "roots.parquet"

    @property
    def ledger_path(self) -> Path:
        return self.species_dir / "failures.parquet"

    @property
    def split_path(self) -> Path:
        return self.species_dir / "split.parquet"

    @property
    def manifest_path(self) -> Path:
        return self.species_dir / "split" / "manifest.json"

    def stage_dir(self, stage: str) -> Path:
        return self.species_dir / stage

    def part_base(self, stage: str, index: int, previous: bool = False) -> Path:
        folder = self.stage_dir(stage) / PREVIOUS if previous else self.stage_dir(stage)
        return folder / f"part-{index:05d}"

    def fetched_path(self, sample_hash: str, key: str) -> Path:
        """One fetched sample; the name carries the key of its inputs, so a changed input is a new file."""
        return self.stage_dir("fetch") / "samples" / sample_hash[:2] / f"{sample_hash}-{key}.npz"


def release_marker_path(work_dir: Path) -> Path:
    return Path(work_dir) / "release.done"


def release_lock_path(out_dir: Path) -> Path:
    """The release's lock sits beside it (the release dir itself is swapped whole)."""
    out_dir = Path(out_dir).resolve()
    return out_dir.parent / f".{out_dir.name}.lock"
