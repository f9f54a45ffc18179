"""The stages of one species' build and their graph: the one list the build, the release, status and the CLI use."""

from __future__ import annotations

from pipeline.context import BuildContext
from pipeline.graph import StageGraph
from pipeline.stage import Stage
from pipeline.stages.bank import BankStage
from pipeline.stages.fetch import FetchStage
from pipeline.stages.render import RenderStage
from pipeline.stages.roots import RootsStage
from pipeline.stages.select import SelectStage
from pipeline.stages.split import SplitStage

SPECIES_STAGES: dict[str, Stage] = {
    "roots": RootsStage(),
    "bank": BankStage(),
    "select": SelectStage(),
    "fetch": FetchStage(),
    "render": RenderStage(),
    "split": SplitStage(),
}


def species_graph(ctx: BuildContext) -> StageGraph:
    """The graph of a species' stages (built once per command and species)."""
    return StageGraph(ctx, SPECIES_STAGES)
