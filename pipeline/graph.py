"""The stage graph of one species' build: its stages, ordered by what each declares it consumes, each stage's
partitions listed once and handed to the stages downstream.

A command builds one graph per species and asks it everything: a stage's partitions (`partitions`), whether a
stage's outputs are complete under the current config (`incomplete`), whether a stage's inputs are
(`missing`: the stages it consumes, and theirs, read from `Stage.consumes`). Listing a stage reads the bank
index and the upstream markers, so it is done once per graph; a stage that has run tells the graph
(`changed`), which forgets what it listed of that stage's consumers (their fingerprints cover its outputs).
`listings` counts the lists made, per stage: a rebuild with nothing to do lists each stage once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

from pipeline.context import BuildContext
from pipeline.runner import Partition, Stage, is_done, name_list


class StageGraph:
    def __init__(self, ctx: BuildContext, stages: Mapping[str, Stage]) -> None:
        self.ctx = ctx
        self.stages = dict(stages)
        for name, stage in self.stages.items():
            unknown = [c for c in stage.consumes if c not in self.stages]
            if stage.name != name or unknown:
                raise ValueError(f"stage {name!r}: named {stage.name!r}, consumes unknown stages {unknown}")
        self.order = _build_order(self.stages)
        self.listings: Counter[str] = Counter()
        self._parts: dict[str, list[Partition]] = {}
        self._incomplete: dict[str, str | None] = {}
        self._memo: dict[str, object] = {}

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
        one's line."""
        for upstream in self.stages[name].consumes:
            why = self.missing(upstream) or self.incomplete(upstream)
            if why:
                return why
        return None

    def pending(self, name: str) -> str | None:
        """The default `incomplete` of a stage: one line naming its partitions that are not done, else None."""
        parts = self.partitions(name)
        todo = [p.name for p in parts if not is_done(self.ctx, p)]
        if not todo:
            return None
        sp = self.ctx.species
        return (
            f"{len(todo)} of {len(parts)} {name} partitions are not done ({name_list(todo)}); run "
            f"`make stage STAGE={name} SPECIES={sp}` first, or `make build SPECIES={sp}`"
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

    def reset(self, name: str) -> None:
        """`name`'s own inputs were prepared anew (the bank's proofread roots): list it again too."""
        self._parts.pop(name, None)
        self.changed(name)

    def downstream(self, name: str) -> set[str]:
        """Every stage that consumes `name`, directly or not."""
        found: set[str] = set()
        for other in self.order:
            if set(self.stages[other].consumes) & (found | {name}):
                found.add(other)
        return found


def _build_order(stages: Mapping[str, Stage]) -> list[str]:
    """The stages in an order where each comes after what it consumes (ties: the order given)."""
    order: list[str] = []
    left = list(stages)
    while left:
        ready = [n for n in left if all(c in order for c in stages[n].consumes)]
        if not ready:
            raise ValueError(f"the stages {left} consume each other in a cycle")
        order.append(ready[0])
        left.remove(ready[0])
    return order
