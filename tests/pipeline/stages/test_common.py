"""The per-sample loop and keys of the stages (pipeline/stages/common.py) without a build: what is kept, built,
ledgered or stops the partition; the order `on_sample` hears; a sample's key follows its stage's declared keys."""

from __future__ import annotations

import threading

import pytest

from config import load_config
from core.errors import SampleError, TransientSourceError, UserError
from pipeline.context import BuildContext
from pipeline.reuse import PriorRun
from pipeline.stage import Partition
from pipeline.stages.common import run_samples, sample_key
from pipeline.stages.fetch import FetchStage
from pipeline.stages.render import RenderStage


@pytest.fixture
def ctx(tmp_path):
    return BuildContext("demo", load_config("demo"), tmp_path / "work", tmp_path / "out")


PART = Partition("render", 0, 5, "fp")
ROWS = [{"combined_sample_hash": f"h{i}", "sample_type": "merge_edit"} for i in range(6)]


def _build(row, key):
    n = int(row["combined_sample_hash"][1:])
    if n == 2:
        raise SampleError("mesh_outside_window", "no faces")
    if n == 3:
        raise ValueError("a bug")
    return f"built {n}"


@pytest.mark.parametrize("threads", [1, 3])
def test_each_row_is_skipped_kept_built_or_ledgered(ctx, threads):
    prior = PriorRun(keys={"h1": "k-h1", "h4": "old"})
    heard = []
    out = run_samples(
        ctx, PART, ROWS,
        key_of_row=lambda r: None if r["combined_sample_hash"] == "h5" else f"k-{r['combined_sample_hash']}",
        reuse=lambda r, k: prior.reusable(r["combined_sample_hash"], k),
        build=_build, prior=prior, threads=threads,
        on_sample=lambda r, v: heard.append((r["combined_sample_hash"], v)),
    )  # fmt: skip
    assert heard == [("h0", "built 0"), ("h1", True), ("h2", None), ("h3", None), ("h4", "built 4"), ("h5", None)]
    assert (out.built, out.reused, out.new_failures) == (2, 1, 2)
    assert out.samples == {"h0": "k-h0", "h1": "k-h1", "h2": "k-h2", "h4": "k-h4"}  # a crash is never reused
    reasons = {f.sample_id: f.reason for f in out.failures}
    assert reasons == {"h2": "mesh_outside_window", "h3": "unexpected_ValueError"}
    assert "Traceback" in out.crashed["h3"] and "a bug" in out.crashed["h3"]
    assert all(f.stage == "render" and f.species == "demo" for f in out.failures)


def test_a_failure_recorded_under_the_same_key_is_kept_without_building(ctx):
    from core.ledger import Failure

    old = Failure("h0", "demo", "merge_edit", "render", "em_chunks_missing", "3%")
    prior = PriorRun(keys={"h0": "k"}, failures={"h0": old})
    out = run_samples(ctx, PART, ROWS[:1], lambda r: "k", lambda r, k: False, _build, prior)
    assert out.failures == [old] and out.built == 0 and out.reused == 1 and out.samples == {"h0": "k"}


def test_without_prior_nothing_is_kept(ctx):
    out = run_samples(ctx, PART, ROWS[:2], lambda r: "k", lambda r, k: True, lambda r, k: 1, None)
    assert (out.built, out.reused) == (2, 0)


@pytest.mark.parametrize("exc", [UserError("server unreachable"), TransientSourceError("retries exhausted")])
@pytest.mark.parametrize("threads", [1, 2])
def test_unreachable_servers_stop_the_partition(ctx, exc, threads):
    def build(row, key):
        if row["combined_sample_hash"] == "h1":
            raise exc
        return 1

    with pytest.raises(type(exc)):
        run_samples(ctx, PART, ROWS, lambda r: "k", lambda r, k: False, build, None, threads)


def test_threads_build_ahead_but_results_are_taken_in_row_order(ctx):
    started = threading.Event()

    def build(row, key):
        if row["combined_sample_hash"] == "h0":
            assert started.wait(timeout=60)  # h0 finishes only once a later row has started: it ran ahead
        else:
            started.set()
        return row["combined_sample_hash"]

    heard = []
    run_samples(ctx, PART, ROWS[:3], lambda r: "k", lambda r, k: False, build, None, 2,
                lambda r, v: heard.append(v))  # fmt: skip
    assert heard == ["h0", "h1", "h2"]


@pytest.mark.parametrize("stage", [FetchStage(), RenderStage()], ids=lambda s: s.name)
def test_a_samples_key_follows_exactly_its_stages_declared_keys(ctx, stage):
    base = sample_key(ctx, stage, "row", "up")
    assert base == sample_key(ctx, stage, "row", "up") and len(base) == 16
    assert sample_key(ctx, stage, "row2", "up") != base and sample_key(ctx, stage, "row", "up2") != base
    changed = {"seed": 9, "em_mip": 3, "max_missing_fraction": 0.5, "em_window_nm": 999.0, "split_salt": "x",
               "shard_bytes": 7, "fetch_threads": 1, "partition_rows": 3}  # fmt: skip
    for key, value in changed.items():
        other = BuildContext(ctx.species, ctx.cfg.model_copy(update={key: value}), ctx.work_dir, ctx.out_dir)
        assert (sample_key(other, stage, "row", "up") != base) == (key in stage.reads), (stage.name, key)


def test_a_partitions_fingerprint_covers_its_declared_inputs_and_nothing_else(ctx, monkeypatch):
    """Declared config keys, the code version, the source's identity, the upstream partition's output digest and the
    members' row digests: each changes the fingerprint; an undeclared key or another partition's rows do not."""
    import pipeline.runner as runner
    from pipeline.stages.common import bank_partition, source_identity

    stage = FetchStage()
    members, digests = ["00aa", "00bb"], ["d1", "d2"]

    def fp(c=ctx, rows=digests, upstream="up", inputs=None):  # noqa: ANN001, ANN202
        return bank_partition(c, stage, 0, 1, members, rows, upstream, (source_identity(c),) if inputs is None
                              else inputs).fingerprint  # fmt: skip

    base = fp()
    assert fp() == base
    assert fp(upstream="up2") != base and fp(rows=["d1", "d2x"]) != base and fp(inputs=("other world",)) != base
    declared = BuildContext(ctx.species, ctx.cfg.model_copy(update={"em_mip": ctx.cfg.em_mip + 1}), ctx.work_dir,
                            ctx.out_dir)  # fmt: skip
    assert fp(declared) != base
    for key, value in {"seed": 99, "split_salt": "x", "fetch_threads": 1, "partition_rows": 3}.items():
        undeclared = BuildContext(ctx.species, ctx.cfg.model_copy(update={key: value}), ctx.work_dir, ctx.out_dir)
        assert fp(undeclared) == base, key
    monkeypatch.setattr(runner, "__version__", "0.0.0-other")
    assert fp() != base


def test_the_demo_sources_identity_is_its_worlds_digest(ctx):
    from pipeline.stages.common import source_identity

    assert source_identity(ctx) == "no-world"
    marker = ctx.world_dir / "world.json"
    marker.parent.mkdir(parents=True)
    marker.write_text('{"seed": 1}')
    first = source_identity(ctx)
    marker.write_text('{"seed": 2}')
    assert first not in ("no-world", source_identity(ctx))
