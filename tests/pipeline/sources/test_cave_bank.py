"""The bank on the CAVE path: the real caveclient and cloud-volume against the twin (v2) of the small world."""

import json
from collections import Counter

from pipeline.sources.cave import CaveSource
from pipeline.sources.retrying import RetryingSource
from sim.twin import TOKEN
from tests.pipeline.fakes import build_bank


def test_bank_from_cave_tables(make_cfg, cave_twin):
    cfg = make_cfg()
    src = CaveSource(cfg, token=TOKEN)
    result = build_bank(RetryingSource(src), cfg)
    counts = Counter(r["sample_type"] for r in result.rows)
    assert counts["merge_edit"] >= 1 and counts["split_edit"] >= 1
    assert counts["junction_control"] >= 1 and counts["synapse_control"] >= 1
    ops = cave_twin.world.ops
    for merge in (r for r in result.rows if r["sample_type"] == "merge_edit"):
        op = ops[json.loads(merge["metadata"])["operation_id"]]
        assert merge["geometry_roots"] == [str(r) for r in op.before]
        assert json.loads(merge["metadata"])["after_root_ids"] == [str(op.after[0])]
    splits = [r for r in result.rows if r["sample_type"] == "split_edit"]
    for split in splits:
        op = ops[json.loads(split["metadata"])["operation_id"]]
        assert split["geometry_roots"] == [str(op.before[0])]
        assert sorted(split["after_roots"]) == sorted(str(r) for r in op.after) and len(op.after) == 2
    # the change log of a split's after root lists only that root; the op's details give both after roots
    op = ops[json.loads(splits[0]["metadata"])["operation_id"]]
    logged = src.change_log([op.after[0]]).to_pylist()
    assert [r["after_root_ids"] for r in logged if r["operation_id"] == op.operation_id] == [[op.after[0]]]
    assert not [f for f in result.failures if f.stage == "bank" and f.reason == "root_count_mismatch"]
