"""The Stage contract: what every stage declares and does, what one unit of work (a partition) is, what its run
gives back, and when it is done. Below the graph and the runner, which both speak it and import nothing of each
other's here: a stage sees its graph only through `Graph`, the few questions it may ask of it.

One unit of work has one answer to "is it done": its marker (written by the runner's seal, last) names the
partition's fingerprint and every output it left is still there at its recorded size (`is_done`). Every unit is
one: a species' proofread roots, a bank batch, the bank selection, a fetch or render partition, the split, the
release of every species.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from core.layout import FAILURES, LOG, MARKER
from core.ledger import Failure
from pipeline.context import Scope
from pipeline.markers import marker_is_current, read_marker
from pipeline.partitions import bucket_range

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipeline.reuse import PriorRun


@dataclass(frozen=True)
class Partition:
    """One unit of work of a stage: its members (sample hashes, root ids, render parts), planned size and the
    fingerprint of its declared inputs."""

    stage: str
    index: int
    n_samples: int
    fingerprint: str
    level: int = 0
    members: tuple[str, ...] = ()  # the sample hashes (or root ids) it covers, in order

    @property
    def name(self) -> str:
        return f"part-{self.index:05d}"

    @property
    def hash_range(self) -> tuple[int, int]:
        return bucket_range(self.index, self.level)

    def marker_path(self, ctx: Scope) -> Path:
        return ctx.part_file(self.stage, self.index, MARKER)

    def failures_path(self, ctx: Scope) -> Path:
        return ctx.part_file(self.stage, self.index, FAILURES)

    def log_path(self, ctx: Scope) -> Path:
        return ctx.part_file(self.stage, self.index, LOG)

    def output_file(self, ctx: Scope, suffix: str = ".parquet") -> Path:
        return ctx.part_file(self.stage, self.index, suffix)


@dataclass
class Outcome:
    """What one partition's run did, and what it met on the way (`stats`: counters of the stage's own kind, merged
    by the runner without knowing them: numbers summed, lists joined; the sources' request counters among them)."""

    built: int = 0  # samples built in this run
    reused: int = 0  # samples whose earlier output (or recorded failure) was kept
    failures: list[Failure] = field(default_factory=list)  # every failure of the partition, reused ones too
    new_failures: int = 0  # failures found in this run
    samples: dict[str, str] = field(default_factory=dict)  # sample id -> key of its inputs (for later reuse)
    crashed: dict[str, str] = field(default_factory=dict)  # sample id -> traceback of an unexpected exception
    outputs: list[Path] = field(default_factory=list)  # the files the partition leaves (recorded in its marker)
    # outputs recorded but no longer on disk by the user's choice (fetched files under `keep_fetched: false`): rel
    # path -> record; in the marker's `dropped`, covered by the digest downstream stages see, never checked on disk
    dropped: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the run (the report's stage timings; not an input of anything)
    stats: dict = field(default_factory=dict)  # what the run met, by kind ("requests": the sources' counters)


class Graph(Protocol):
    """What a stage may ask of the graph it is listed in (pipeline/graph.py: StageGraph)."""

    @property
    def feeds(self) -> dict[str, Graph]:
        """The graphs whose stages this one's consume across scopes (the release's: every species' graph)."""
        ...

    def partitions(self, name: str) -> list[Partition]: ...

    def pending(self, name: str) -> str | None: ...

    def memo(self, key: str, make: Callable[[], object]) -> object: ...


class Stage(Protocol):
    """What every stage declares and does (pipeline/stages/; StageBase gives the defaults)."""

    name: str
    reads: tuple[str, ...]  # the config keys its outputs depend on
    consumes: tuple[str, ...]  # the stages whose outputs it reads (none: the source only); the graph's edges
    unit: str  # what its partitions' members are ("roots", "rows"): what `Partition.n_samples` counts
    # the command stage that runs it (`make stage STAGE=...`): the bank's roots and selection run with the bank
    command: str | None
    # each sample has a key of its own inputs, and a partition that runs again keeps the samples whose key is
    # unchanged (what an upstream change redoes is then only the samples it changed)
    keys_samples: bool
    widened_by: tuple[str, ...]  # config keys that redo a sample only when its fetched box must grow
    widened_what: str
    output_version: int | None  # raised when its code writes other bytes from the same inputs
    # a consumed stage whose samples it can take as they are made: the runner may run both in one task per
    # partition (`run(..., upstream=...)` of this one beside `run(..., on_sample=...)` of that one)
    streams_from: str | None

    def partitions(self, ctx: Scope, graph: Graph) -> list[Partition]: ...

    def incomplete(self, ctx: Scope, graph: Graph) -> str | None:
        """None when every output is done under the current config, else one line: what is missing, what to run."""
        ...

    def not_ready(self, ctx: Scope, behind: list[str]) -> str:
        """(a stage consuming other scopes' stages) One line for the scopes in `behind` ("demo (render not done)")
        whose inputs are not complete, or for none at all when `behind` is empty and there is no scope."""
        ...

    def run(self, ctx: Scope, part: Partition, prior: PriorRun | None, **kw: object) -> Outcome:
        """Build one partition, writing its outputs atomically; `Outcome.outputs` lists them. `prior` (what
        earlier runs left for reuse) is None when forced."""
        ...

    def finish(self, ctx: Scope, graph: Graph, parts: list[Partition], force: bool) -> str | None:
        """The stage's last step once every partition is done (the fetch's sweep of stale files); a note for its
        summary."""
        ...

    def partition_of(self, ctx: Scope, upstream: Partition) -> Partition:
        """(streams_from only) its partition over `upstream`'s rows, fingerprinted by what `upstream` wrote."""
        ...

    def sealed(self, ctx: Scope, part: Partition) -> None:
        """After the partition's marker is written (render: drop the fetched files under `keep_fetched: false`)."""
        ...


class StageDeclarations:
    """What every stage declares, with its defaults."""

    consumes: tuple[str, ...] = ()
    command: str | None = None
    keys_samples = False
    widened_by: tuple[str, ...] = ()
    widened_what = ""
    output_version: int | None = None
    streams_from: str | None = None


class StageBase(StageDeclarations):
    """The defaults of the Stage protocol: a stage overrides what it does differently. The graph says whether a
    stage is complete (`Graph.pending`: every partition done)."""

    def incomplete(self, ctx: Scope, graph: Graph) -> str | None:
        return graph.pending(self.name)  # type: ignore[attr-defined]

    def not_ready(self, ctx: Scope, behind: list[str]) -> str:
        return f"{', '.join(behind)} is not ready" if behind else "no scope feeds it yet"

    def finish(self, ctx: Scope, graph: Graph, parts: list[Partition], force: bool) -> str | None:
        return None

    def partition_of(self, ctx: Scope, upstream: Partition) -> Partition:
        raise NotImplementedError(f"stage {self.name} does not stream from another")  # type: ignore[attr-defined]

    def sealed(self, ctx: Scope, part: Partition) -> None:
        return None


def is_done(ctx: Scope, part: Partition) -> bool:
    """Marker present, same inputs, and every recorded output still there at its recorded size."""
    return marker_is_current(ctx.work_dir, part.marker_path(ctx), part.fingerprint)


def to_retry(ctx: Scope, part: Partition) -> int:
    """The failures a done partition recorded that the next run retries (a server could not give them, or an
    unexpected exception stopped them: `is_retryable`); each build runs such a partition once more for them."""
    return int((read_marker(part.marker_path(ctx)) or {}).get("retry", 0))
