"""The small world (sim/small_world.py): the demo world's layout, written by hand in a fraction of a second, with
every sample type and the designed defects the tests of the sources, the twin, fetch and render rely on."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pytest

from config.schema import load_config
from core.errors import SampleError
from pipeline.partitions import root_digest
from pipeline.preflight.checks import SAMPLE_ROOTS
from pipeline.sources.demo import DemoSource
from pipeline.sources.retrying import RetryingSource
from pipeline.stages.bank_candidates import junction_points
from pipeline.stages.fetch_sample import fetch_sample
from sim.demo_world import TABLES, world_is_complete
from sim.small_world import LONG, PROOFREAD, ROOT_ID, write_small_world
from tests.pipeline.fakes import build_bank


@pytest.fixture(scope="module")
def demo(small_world, tiny_configs) -> DemoSource:
    return DemoSource(load_config("demo", tiny_configs), small_world)


def test_it_has_the_demo_worlds_layout_and_format(small_world):
    assert world_is_complete(small_world)  # a build given it never generates a world over it
    assert {p.name for p in (small_world / "tables").iterdir()} == {f"{t}.parquet" for t in TABLES}
    assert (small_world / "em" / "info").is_file() and (small_world / "segmentation" / "mesh" / "info").is_file()


def test_the_same_bytes_every_time(small_world, tmp_path):
    def digests(root) -> dict[str, str]:  # noqa: ANN001
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file() and "twin-cache" not in p.parts
        }

    write_small_world(tmp_path / "again")
    assert digests(tmp_path / "again") == digests(small_world)


def test_the_demo_source_banks_every_sample_type_and_meets_the_designed_defects(demo, small_world, tiny_configs):
    cfg = load_config("demo", tiny_configs)
    bank = build_bank(RetryingSource(demo), cfg)
    types = Counter(r["sample_type"] for r in bank.rows)
    assert set(types) == {"merge_edit", "split_edit", "adjacent_control", "junction_control", "synapse_control"}
    defects = json.loads((small_world / "world.json").read_text())["defects"]
    (no_points,) = defects["operations_without_points"]
    assert [f.reason for f in bank.failures] == ["no_edit_point"] and str(no_points) in bank.failures[0].sample_id
    reasons = []
    for row in bank.rows:
        try:
            fetch_sample(demo, cfg, row)
        except SampleError as exc:
            reasons.append((row["sample_type"], exc.reason))
    assert reasons == [("adjacent_control", "missing_mesh")]  # the meshless bystander; every other sample fetches
    for root in defects["roots_without_mesh"]:
        with pytest.raises(SampleError, match="no mesh"):
            demo.mesh(root)


def test_the_long_neuron_leaves_the_region_and_has_the_junctions(demo, small_world):
    summary = json.loads((small_world / "world.json").read_text())
    (long,) = summary["long_neurons"]
    assert long["root_id"] == ROOT_ID[LONG]
    lo, hi = summary["geometry"]["region_nm"]
    mesh = demo.mesh(ROOT_ID[LONG])
    assert mesh.vertices[:, 0].max() - hi[0] > 50_000  # 50 um past the region's voxels
    skel = demo.skeleton(ROOT_ID[LONG])
    assert len(junction_points(skel.vertices_nm, skel.edges)) == 2


def test_the_roots_preflight_checks_are_edited_neurons():
    """preflight checks the first proofread roots by hash: the world's ids make them neurons with edits."""
    first = sorted(PROOFREAD, key=lambda name: root_digest(ROOT_ID[name]))[:SAMPLE_ROOTS]
    assert sorted(first) == ["A", "B", "E"]
