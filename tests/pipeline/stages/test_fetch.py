"""The fetch stage (pipeline/stages/fetch.py) on a fake source, without a world: fetched files named by their
sample's key, and a changed extent refetching only when the mesh crop box must grow, never when it shrinks."""

from __future__ import annotations

import contextlib

import numpy as np
import pyarrow.parquet as pq
import pytest
import trimesh

from config import load_config
from core.atomic import write_parquet
from pipeline.context import BuildContext
from pipeline.runner import execute_partition
from pipeline.sources.base import Cutout
from pipeline.stages import fetch as fetch_stage
from pipeline.stages.bank_candidates import bank_table
from pipeline.stages.common import sample_key, source_identity
from pipeline.stages.species import species_graph
from tests.pipeline.fakes import FakeSource, build_bank


class _Source:
    """Meshes: a 100 nm cube in the middle of the box asked for; EM and segmentation: small cubes. Counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    @contextlib.contextmanager
    def sample(self, sample_hash):  # noqa: ANN001, ANN201
        yield

    def mesh(self, root_id, box_nm=None):  # noqa: ANN001, ANN201
        self.calls += 1
        centre = (np.asarray(box_nm[0]) + np.asarray(box_nm[1])) / 2.0
        return trimesh.creation.box(extents=(100.0, 100.0, 100.0)).apply_translation(centre)

    def em_cutout(self, center_nm, size_nm):  # noqa: ANN001, ANN201
        self.calls += 1
        return Cutout(np.full((4, 4, 4), 90, np.uint8), (size_nm / 4,) * 3, tuple(np.asarray(center_nm) - size_nm / 2))

    def segmentation_cutout(self, center_nm, size_nm, timestamp):  # noqa: ANN001, ANN201
        self.calls += 1
        return Cutout(np.zeros((4, 4, 4), np.uint64), (size_nm / 4,) * 3, tuple(np.asarray(center_nm) - size_nm / 2))


@pytest.fixture
def setup(tmp_path, monkeypatch):
    cfg = load_config("demo")
    source = _Source()
    monkeypatch.setattr(fetch_stage, "open_source", lambda ctx: source)
    ctx = BuildContext("demo", cfg, tmp_path / "work", tmp_path / "out")
    ctx.bank_path.parent.mkdir(parents=True)
    write_parquet(ctx.bank_path, bank_table(build_bank(FakeSource(), cfg).rows))
    return ctx, source


def _fetch(ctx, extent=None):  # noqa: ANN001, ANN202
    if extent is not None:
        ctx = BuildContext(ctx.species, ctx.cfg.model_copy(update={"extent_nm": extent}), ctx.work_dir, ctx.out_dir)
    graph = species_graph(ctx)
    results = [execute_partition(graph.stage("fetch"), ctx, p, False) for p in graph.partitions("fetch")]
    return ctx, results


def test_a_fetched_file_is_named_by_its_samples_key(setup):
    ctx, source = setup
    ctx, results = _fetch(ctx)
    assert sum(r.built for r in results) > 0 and source.calls > 0
    rows = pq.read_table(ctx.bank_path).to_pylist()
    stage = species_graph(ctx).stage("fetch")
    for row in rows:
        key = sample_key(ctx, stage, row["row_digest"], source_identity(ctx))
        assert ctx.fetched_path(row["combined_sample_hash"], key).name == f"{row['combined_sample_hash']}-{key}.npz"
        assert ctx.fetched_path(row["combined_sample_hash"], key).exists()


def test_a_smaller_extent_refetches_nothing_and_a_larger_one_refetches_every_sample(setup):
    ctx, source = setup
    lo, hi = ctx.cfg.extent_nm
    _fetch(ctx)
    first = source.calls
    _, shrunk = _fetch(ctx, (lo, hi / 2))
    assert source.calls == first and sum(r.reused for r in shrunk) > 0 and sum(r.built for r in shrunk) == 0
    _, grown = _fetch(ctx, (lo, hi * 2))
    assert source.calls == 2 * first and sum(r.built for r in grown) == sum(r.reused for r in shrunk)
