"""A species' run hands its stages the build's request budget for that run only (pipeline/build.py run_species):
the graph the release is listed from afterwards carries no handle (a handle of a budget that is gone would send a
worker to a closed address; when it was a dask actor, a cluster build's release failed on it)."""

from __future__ import annotations

from pipeline import build as build_module
from pipeline.build import RunOptions, run_species
from pipeline.context import make_context
from pipeline.stages.species import species_graph


def test_a_graph_carries_the_budget_handle_only_while_its_species_runs(tmp_path, monkeypatch):
    graph = species_graph(make_context("demo", tmp_path / "work", tmp_path / "out"))
    during = []
    monkeypatch.setattr(build_module, "checkpoint", lambda name: during.append(graph.ctx.request_budget))
    run_species(graph, RunOptions(scheduler="threads", progress=False), stages=())
    assert during and during[0] is not None  # the stages' context held the build's budget while they ran
    assert graph.ctx.request_budget is None
