"""The bank on the CAVE path: the real caveclient and cloud-volume against the replay server."""

import json
from collections import Counter

from pipeline.sources.cave import CaveSource
from pipeline.sources.retrying import RetryingSource
from tests.pipeline.fakes import build_bank
from tests.pipeline.sources.cave_server import ROOT_A, ROOT_AB, ROOT_B, ROOT_C, ROOT_C1, ROOT_C2, TOKEN


def test_bank_from_cave_tables(make_cfg):
    cfg = make_cfg()
    result = build_bank(RetryingSource(CaveSource(cfg, token=TOKEN)), cfg)
    counts = Counter(r["sample_type"] for r in result.rows)
    assert counts["merge_edit"] == 1 and counts["split_edit"] == 1
    assert counts["junction_control"] >= 1 and counts["synapse_control"] >= 1
    merge = next(r for r in result.rows if r["sample_type"] == "merge_edit")
    assert merge["geometry_roots"] == [str(ROOT_A), str(ROOT_B)]
    assert json.loads(merge["metadata"])["after_root_ids"] == [str(ROOT_AB)]
    split = next(r for r in result.rows if r["sample_type"] == "split_edit")
    # the change log of ROOT_C1 lists only itself; the op's details give both after roots
    assert split["geometry_roots"] == [str(ROOT_C)]
    assert sorted(split["after_roots"]) == sorted([str(ROOT_C1), str(ROOT_C2)])
    assert not [f for f in result.failures if f.stage == "bank" and f.reason == "unexpected_root_count"]
