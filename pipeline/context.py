"""What every stage needs to know about one species' build: its config and where things live
(core.layout)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from config import SpeciesConfig, load_config
from core.layout import PREVIOUS, SpeciesPaths, release_lock_path, release_marker_path, twin_config_dir

__all__ = ["PREVIOUS", "BuildContext", "make_context", "release_lock_path", "release_marker_path"]


@dataclass(frozen=True)
class BuildContext(SpeciesPaths):
    species: str
    cfg: SpeciesConfig
    work_dir: Path
    out_dir: Path
    # the CAVE token for this build's sources, handed to every worker with the context (None: the source's own
    # lookup, CAVE_TOKEN or caveclient's secrets); never an input of anything, never printed
    cave_token: str | None = field(default=None, repr=False, compare=False)
    # where this build's one request budget per host lives (pipeline/sources/budget.py BudgetHandle), handed to every
    # worker with the context; None: each process its own. Never an input of anything.
    request_budget: object | None = field(default=None, repr=False, compare=False)


def make_context(species: str, work: Path, out: Path, cave_token: str | None = None) -> BuildContext:
    """The context of `species` in `work`. Its config is the work dir's own when it has one (a work dir built
    against a twin keeps the config that points at it, `WORK/.twin/config/<species>.yaml`, so every command on
    that work dir reads the same), else the config dir's (CB2_CONFIG_DIR, or config/)."""
    own = twin_config_dir(work)
    cfg = load_config(species, own) if (own / f"{species}.yaml").exists() else load_config(species)
    return BuildContext(species, cfg, Path(work).resolve(), Path(out).resolve(), cave_token)
