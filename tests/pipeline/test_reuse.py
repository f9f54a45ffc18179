"""What a partition that runs again may keep (pipeline/reuse.py): its own marker's keys, failures and outputs, or after
a change of layout the markers in `previous/` whose hash range overlaps its own."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from config import load_config
from core.atomic import write_json
from core.layout import FAILURES, MARKER
from core.ledger import Failure, write_failures
from pipeline.context import BuildContext
from pipeline.markers import digests, write_marker
from pipeline.partitions import PREFIX_BITS
from pipeline.reuse import LEVEL_FILE, load_prior


@pytest.fixture
def ctx(tmp_path):
    return BuildContext("demo", load_config("demo"), tmp_path / "work", tmp_path / "out")


def _part(ctx, index, level, samples, previous=False, failed=()):
    """A finished render partition: rows of `samples` (hash -> key), its failures, its marker."""
    out = ctx.part_file("render", index, ".parquet", previous=previous)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"combined_sample_hash": sorted(samples)}), out)
    fails = [Failure(h, "demo", "merge_edit", "render", "boom", "") for h in failed]
    write_failures(ctx.part_file("render", index, FAILURES, previous=previous), fails)
    write_marker(ctx.part_file("render", index, MARKER, previous=previous),
                 {"level": level, "index": index, "samples": samples,
                  "outputs": digests(ctx.work_dir, [out])})  # fmt: skip


def test_a_partition_keeps_what_its_own_marker_recorded_under_the_same_key(ctx):
    _part(ctx, 0, 1, {"00aa": "k1", "00bb": "k2"}, failed=["00bb"])
    prior = load_prior(ctx, "render", 0, 1)
    assert prior.reusable("00aa", "k1") and not prior.reusable("00aa", "k9") and not prior.reusable("00cc", "k1")
    assert prior.failure("00bb", "k2").reason == "boom" and prior.failure("00bb", "other") is None
    assert prior.rows(ctx, {"00aa"}).column("combined_sample_hash").to_pylist() == ["00aa"]


def test_a_marker_of_another_level_is_not_this_partitions(ctx):
    _part(ctx, 0, 2, {"00aa": "k1"})
    assert load_prior(ctx, "render", 0, 1).keys == {}


def test_after_a_relayout_the_overlapping_previous_partitions_are_read(ctx):
    # old layout: level 1 (two halves); new: level 2. New partition 1 ([1/4, 1/2)) lies inside old partition 0.
    _part(ctx, 0, 1, {"10aa": "k1", "70bb": "k2"}, previous=True)
    _part(ctx, 1, 1, {"90cc": "k3"}, previous=True)
    write_json(ctx.stage_dir("render") / "previous" / LEVEL_FILE, {"level": 1})
    prior = load_prior(ctx, "render", 1, 2)
    assert prior.reusable("70bb", "k2") and not prior.reusable("90cc", "k3")
    assert prior.hash_range == (1 << (PREFIX_BITS - 2), 2 << (PREFIX_BITS - 2))
    assert load_prior(ctx, "render", 3, 2).reusable("90cc", "k3")


def test_rows_of_a_part_corrupted_on_disk_are_never_reused(ctx):
    _part(ctx, 0, 0, {"00aa": "k1"})
    out = ctx.part_file("render", 0, ".parquet")
    pq.write_table(pa.table({"combined_sample_hash": ["00ab"]}), out)  # bytes no longer those of its marker
    assert load_prior(ctx, "render", 0, 0).rows(ctx, {"00aa", "00ab"}) is None


def test_a_recorded_failure_is_kept_only_when_it_is_the_datas_own_reason():
    """A sample that failed for its data (a missing mesh) keeps its failure under the same key; one a server could
    not give (`*_unavailable`) or an unexpected exception stopped is built again by the next run."""
    from pipeline.reuse import PriorRun

    def failure(sid: str, reason: str) -> Failure:
        return Failure(sid, "demo", "merge_edit", "fetch", reason, "")

    prior = PriorRun(
        keys={"a": "k", "b": "k", "c": "k"},
        failures={"a": failure("a", "missing_mesh"), "b": failure("b", "mesh_unavailable"),
                  "c": failure("c", "unexpected_KeyError")},
    )  # fmt: skip
    assert prior.failure("a", "k") == failure("a", "missing_mesh")
    assert prior.failure("b", "k") is None and prior.failure("c", "k") is None
    assert prior.failure("a", "other key") is None
