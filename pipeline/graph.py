"""The stage graph of one scope's work: its stages, ordered by what each declares it consumes, each stage's
partitions listed once and handed to the stages downstream.

A command builds one graph per species and one for the release, and asks them everything: a stage's partitions
(`partitions`), whether a stage's outputs are complete under the current config (`incomplete`), whether a
stage's inputs are (`missing`: the stages it consumes, and theirs, read from `Stage.consumes`). The release's
graph is fed by every species' (`feeds`): its stage consumes their render and split, so its inputs span species.
Listing a stage reads the bank index and the upstream markers, so it is done once per graph; a stage that has run
tells the graph (`changed`), which forgets what it listed of that stage's consumers (their fingerprints cover its
outputs). `listings` counts the lists made, per stage: a rebuild with nothing to do lists each stage once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

from pipeline.context import Scope
from pipeline.stage import Partition, Stage, is_done

SHOWN = 5  # partitions or samples named in one line


def name_list(items: list[str]) -> str:
    """The first SHOWN of `items` and how many more: what one line names."""
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


class StageGraph:
    def __init__(self, ctx: Scope, stages: Mapping[str, Stage], feeds: Mapping[str, StageGraph] | None = None) -> None:
        self.ctx = ctx
        self.stages = dict(stages)
        # scope name -> its graph, whose stages this graph's stages consume (None: a graph of one scope alone)
        self.feeds = dict(feeds or {})
        self._fed_by_scopes = feeds is not None
        for name, stage in self.stages.items():
            unknown = [c for c in stage.consumes if c not in self.stages and not self._fed(c)]
            if stage.name != name or unknown:
                raise ValueError(f"stage {name!r}: named {stage.name!r}, consumes unknown stages {unknown}")
        self.order = _build_order(self.stages)
        self.listings: Counter[str] = Counter()
        self._parts: dict[str, list[Partition]] = {}
        self._incomplete: dict[str, str | None] = {}
        self._memo: dict[str, object] = {}

    def _fed(self, name: str) -> bool:
        """Whether `name` is a stage of every scope feeding this graph (fed by no scope yet, any name may be: a
        release of no species refuses in `missing`)."""
        return self._fed_by_scopes and all(name in g.stages for g in self.feeds.values())

    def stage(self, name: str) -> Stage:
        return self.stages[name]

    def partitions(self, name: str) -> list[Partition]:
        """The stage's partitions under the current config and upstream outputs (listed once)."""
        if name not in self._parts:
            self._parts[name] = self.stages[name].partitions(self.ctx, self)
            self.listings[name] += 1
        return self._parts[name]

    def incomplete(self, name: str) -> str | None:
        """None when every output of the stage is done under the current config, else one line saying what is
        missing and what to run."""
        if name not in self._incomplete:
            self._incomplete[name] = self.stages[name].incomplete(self.ctx, self)
        return self._incomplete[name]

    def missing(self, name: str) -> str | None:
        """None when every stage `name` consumes (and every stage those consume) is complete, else the first
        one's line; for stages of the feeding scopes, the stage's own line naming each scope not ready."""
        stage = self.stages[name]
        for upstream in stage.consumes:
            if upstream in self.stages:
                why = self.missing(upstream) or self.incomplete(upstream)
                if why:
                    return why
        fed = [c for c in stage.consumes if c not in self.stages]
        if not fed:
            return None
        behind = []
        for scope, graph in sorted(self.feeds.items()):
            first = next((u for u in fed if not graph.ready(u)), None)
            if first is not None:
                behind.append(f"{scope} ({first} not done)")
        if behind or not self.feeds:  # fed by no scope yet: nothing to make it from
            return stage.not_ready(self.ctx, behind)
        return None

    def ready(self, name: str) -> bool:
        """Whether `name` and everything it consumes is complete."""
        return not (self.missing(name) or self.incomplete(name))

    def pending(self, name: str) -> str | None:
        """The default `incomplete` of a stage: one line naming its partitions that are not done, else None."""
        parts = self.partitions(name)
        todo = [p.name for p in parts if not is_done(self.ctx, p)]
        if not todo:
            return None
        sp = self.ctx.species
        run = self.stages[name].command or name
        return (
            f"{len(todo)} of {len(parts)} {name} partitions are not done ({name_list(todo)}); run "
            f"`make stage STAGE={run} SPECIES={sp}` first, or `make build SPECIES={sp}`"
        )

    def memo(self, key: str, make: Callable[[], object]) -> object:
        """A value read once per graph (the bank index), until a stage changes."""
        if key not in self._memo:
            self._memo[key] = make()
        return self._memo[key]

    def changed(self, name: str) -> None:
        """`name` has written outputs: forget whether it is complete, and what was listed of every stage
        downstream of it (their fingerprints cover its outputs). Its own partitions stay listed: they depend on
        its inputs, not on its outputs."""
        self._incomplete.pop(name, None)
        for stage in self.downstream(name):
            self._parts.pop(stage, None)
            self._incomplete.pop(stage, None)
        self._memo.clear()

    def downstream(self, name: str) -> set[str]:
        """Every stage that consumes `name`, directly or not."""
        found: set[str] = set()
        for other in self.order:
            if set(self.stages[other].consumes) & (found | {name}):
                found.add(other)
        return found


def _build_order(stages: Mapping[str, Stage]) -> list[str]:
    """The stages in an order where each comes after what it consumes in the same graph (ties: the order given)."""
    order: list[str] = []
    left = list(stages)
    while left:
        ready = [n for n in left if all(c in order or c not in stages for c in stages[n].consumes)]
        if not ready:
            raise ValueError(f"the stages {left} consume each other in a cycle")
        order.append(ready[0])
        left.remove(ready[0])
    return order
