"""The work-dir layout, spelled out here and nowhere else:

work/<species>/.lock                 the species' build lock (pipeline.locks)
work/<species>/world/                the demo world (demo species only)
work/<species>/<stage>/part-NNNNN.*  a partition's outputs, failures, log and marker (.done, written last): every
                                     unit of work, the proofread roots (roots/) and the bank selection (select/) too
work/<species>/<stage>/previous/     partitions of an older layout, kept for reuse until the stage completes
work/<species>/roots/part-00000.parquet   proofread roots at the pinned time
work/<species>/bank.parquet          the selected bank rows (the output of select/part-00000)
work/<species>/fetch/samples/HH/<hash>-<key>.npz   one fetched sample, named by its inputs' key
work/<species>/split.parquet, split/manifest.json
work/<species>/failures.parquet      the ledger: union of every partition's failures
work/<species>/twin-requests.jsonl   the twin's request log (`python -m pipeline twin`)
work/release/shard/part-00000.done   the release's unit (the shard stage's marker; `release` is no species name)
work/.twin/config/demo.yaml          the species config of a build through the twin (SOURCE=twin)
"""

from __future__ import annotations

from pathlib import Path

PREVIOUS = "previous"
RELEASE = "release"  # the release's scope: its unit's files are under work/release/ (no species is named so)
MARKER, FAILURES, LOG = ".done", ".failures.parquet", ".log"  # a partition's marker, failures file, crash log
CHANGES = ".changes.parquet"  # a bank partition's change-log rows (what a retry of one root's change log merges into)


class SpeciesPaths:
    """Where everything of one species lives, from `self.work_dir` and `self.species` (a mixin of BuildContext)."""

    species: str
    work_dir: Path

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
    def scope(self) -> str:
        """What the work of these paths is of, in one line's words."""
        return f"species {self.species}"

    @property
    def ledger_path(self) -> Path:
        return self.species_dir / "failures.parquet"

    def failure_files(self) -> list[Path]:
        """Every current failures file of every stage (an older layout's, in previous/, are not current)."""
        return sorted(self.species_dir.glob(f"*/part-*{FAILURES}"))

    @property
    def twin_requests_path(self) -> Path:
        return self.species_dir / "twin-requests.jsonl"

    @property
    def split_path(self) -> Path:
        return self.species_dir / "split.parquet"

    @property
    def manifest_path(self) -> Path:
        return self.species_dir / "split" / "manifest.json"

    def stage_dir(self, stage: str) -> Path:
        return self.species_dir / stage

    def part_file(self, stage: str, index: int, suffix: str, previous: bool = False) -> Path:
        """A file of partition `index` of `stage`: its output (".parquet"), MARKER, FAILURES or LOG."""
        folder = self.stage_dir(stage) / PREVIOUS if previous else self.stage_dir(stage)
        return folder / f"part-{index:05d}{suffix}"

    @property
    def fetched_dir(self) -> Path:
        return self.stage_dir("fetch") / "samples"

    def fetched_path(self, sample_hash: str, key: str) -> Path:
        """One fetched sample; the name carries the key of its inputs, so a changed input is a new file."""
        return self.fetched_dir / sample_hash[:2] / f"{sample_hash}-{key}.npz"


def sibling(marker_path: Path, suffix: str) -> Path:
    """Another file of the partition whose marker is `marker_path` (wherever that partition now lies)."""
    return Path(str(marker_path)[: -len(MARKER)] + suffix)


def twin_config_dir(work_dir: Path) -> Path:
    return Path(work_dir) / ".twin" / "config"


def release_lock_path(out_dir: Path) -> Path:
    """The release's lock sits beside it (the release dir itself is swapped whole)."""
    out_dir = Path(out_dir).resolve()
    return out_dir.parent / f".{out_dir.name}.lock"
