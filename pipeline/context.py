"""What every stage needs to know about the scope of its work: one species' build (its config and where things
live, core.layout) or the release of every species built in a work dir."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from config import SpeciesConfig, load_config
from core.errors import UserError
from core.layout import PREVIOUS, RELEASE, SpeciesPaths, release_lock_path, twin_config_dir

__all__ = ["PREVIOUS", "RELEASE", "BuildContext", "ReleaseContext", "Scope", "make_context", "release_lock_path"]


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

    def config(self, keys: tuple[str, ...]) -> dict:
        """The species' config values of `keys` (JSON-ready): what a fingerprint covers."""
        dumped = self.cfg.model_dump(mode="json")
        return {k: dumped[k] for k in keys}


@dataclass(frozen=True)
class ReleaseContext(SpeciesPaths):
    """The release's scope: every species built in the work dir (`contexts`), written to `out_dir`. Its units live
    where a species' do, under `work/release/` (no species is named `release`)."""

    work_dir: Path
    out_dir: Path
    contexts: tuple[BuildContext, ...] = ()
    species: str = RELEASE

    @property
    def scope(self) -> str:
        return "the release"

    def config(self, keys: tuple[str, ...]) -> dict:
        """Each included species' value of each key (key -> species -> value): the release is written from every
        species' config (its card states each one's `max_missing_fraction`; its shard byte target is the smallest
        `shard_bytes` any asks for)."""
        return {k: {c.species: c.config((k,))[k] for c in self.contexts} for k in keys}


Scope = BuildContext | ReleaseContext  # what a unit of work is of


def make_context(species: str, work: Path, out: Path, cave_token: str | None = None) -> BuildContext:
    """The context of `species` in `work`. Its config is the work dir's own when it has one (a work dir built
    against a twin keeps the config that points at it, `WORK/.twin/config/<species>.yaml`, so every command on
    that work dir reads the same), else the config dir's (CB2_CONFIG_DIR, or config/)."""
    if species == RELEASE:
        raise UserError(f"`{RELEASE}` is the release's own folder in a work dir: name the species otherwise")
    own = twin_config_dir(work)
    cfg = load_config(species, own) if (own / f"{species}.yaml").exists() else load_config(species)
    return BuildContext(species, cfg, Path(work).resolve(), Path(out).resolve(), cave_token)
