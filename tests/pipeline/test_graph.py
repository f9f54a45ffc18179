"""The stage graph (pipeline/graph.py): build order and upstream checks from the stages' declared `consumes`, each
stage listed once per graph, and a rebuild with nothing to do listing each stage once."""

from __future__ import annotations

import shutil

import pytest

from config import load_config
from pipeline.context import BuildContext
from pipeline.graph import StageGraph
from pipeline.stage import Partition, StageBase
from pipeline.stages.species import SPECIES_STAGES


class Toy(StageBase):
    """A stage whose partitions are given; counts its listings."""

    reads = ()
    unit = "rows"

    def __init__(self, name: str, consumes: tuple[str, ...] = (), done: bool = True) -> None:
        self.name, self.consumes, self.done, self.listed = name, consumes, done, 0

    def partitions(self, ctx, graph):
        self.listed += 1
        return [Partition(self.name, 0, 1, f"{self.name}-fp")]

    def incomplete(self, ctx, graph):
        graph.partitions(self.name)
        return None if self.done else f"{self.name} is not done"


@pytest.fixture
def ctx(tmp_path):
    return BuildContext("demo", load_config("demo"), tmp_path / "work", tmp_path / "out")


def test_the_order_follows_consumes_and_a_cycle_or_an_unknown_stage_is_refused(ctx):
    graph = StageGraph(ctx, {s.name: s for s in (Toy("c", ("b",)), Toy("b", ("a",)), Toy("a"))})
    assert graph.order == ["a", "b", "c"]
    assert StageGraph(ctx, SPECIES_STAGES).order == ["roots", "bank", "select", "fetch", "render", "split"]
    with pytest.raises(ValueError, match="cycle"):
        StageGraph(ctx, {"a": Toy("a", ("b",)), "b": Toy("b", ("a",))})
    with pytest.raises(ValueError, match="unknown stages"):
        StageGraph(ctx, {"a": Toy("a", ("z",))})


def test_missing_names_the_first_incomplete_stage_upstream_transitively(ctx):
    stages = {s.name: s for s in (Toy("a", done=False), Toy("b", ("a",)), Toy("c", ("b",)))}
    graph = StageGraph(ctx, stages)
    assert graph.missing("c") == "a is not done"  # c consumes b, which consumes a
    assert graph.missing("a") is None
    stages["a"].done = True
    assert graph.missing("c") == "a is not done"  # remembered until a changes
    graph.changed("a")
    assert graph.missing("c") is None


def test_each_stage_is_listed_once_until_an_upstream_changes(ctx):
    stages = {s.name: s for s in (Toy("a"), Toy("b", ("a",)), Toy("c", ("b",)), Toy("d"))}
    graph = StageGraph(ctx, stages)
    for _ in range(3):
        for name in stages:
            graph.partitions(name)
        graph.missing("c")
    assert {n: s.listed for n, s in stages.items()} == {"a": 1, "b": 1, "c": 1, "d": 1}
    assert graph.listings == {"a": 1, "b": 1, "c": 1, "d": 1}
    graph.changed("a")  # a wrote outputs: b and c are listed again, a (its inputs unchanged) and d are not
    for name in stages:
        graph.partitions(name)
    assert {n: s.listed for n, s in stages.items()} == {"a": 1, "b": 2, "c": 2, "d": 1}


def test_a_stage_fed_by_other_scopes_names_each_scope_whose_input_is_not_ready(ctx):
    """The release's shape: a graph whose stage consumes a stage of every scope feeding it (each species' graph)."""
    feeds = {"y": StageGraph(ctx, {"a": Toy("a", done=False)}), "x": StageGraph(ctx, {"a": Toy("a")})}
    graph = StageGraph(ctx, {"g": Toy("g", ("a",))}, feeds)
    assert graph.order == ["g"] and graph.missing("g") == "y (a not done) is not ready"
    feeds["y"].stages["a"].done = True
    feeds["y"].changed("a")
    assert graph.missing("g") is None
    assert StageGraph(ctx, {"g": Toy("g", ("a",))}, {}).missing("g") == "no scope feeds it yet"
    with pytest.raises(ValueError, match="unknown stages"):
        StageGraph(ctx, {"g": Toy("g", ("b",))}, feeds)


@pytest.mark.slow
def test_a_rebuild_with_nothing_to_do_lists_each_stage_once(tiny_release, tiny_configs, tmp_path, monkeypatch):
    from pipeline.build import RunOptions, build

    work, out = tmp_path / "work", tmp_path / "out"
    shutil.copytree(tiny_release[0], work)
    monkeypatch.setenv("CB2_CONFIG_DIR", str(tiny_configs))
    opts = RunOptions(scheduler="sync", progress=False)
    build("demo", work, out, opts)  # the copy's release goes to its own out dir once
    from pipeline.stages.shard import SHARD

    listed: dict[str, int] = {}
    for name, stage in [*SPECIES_STAGES.items(), (SHARD.name, SHARD)]:
        original = type(stage).partitions

        def counting(self, ctx, graph, _original=original, _name=name):
            listed[_name] = listed.get(_name, 0) + 1
            return _original(self, ctx, graph)

        monkeypatch.setattr(type(stage), "partitions", counting)
    summaries, result = build("demo", work, out, opts)
    assert [(s.stage, s.ran) for s in summaries] == [(n, 0) for n in SPECIES_STAGES]
    assert result.get("skipped") is True
    assert listed == {**dict.fromkeys(SPECIES_STAGES, 1), "shard": 1}  # the release's unit too
