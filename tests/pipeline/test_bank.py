import json

import numpy as np
import pytest

from config import load_config
from core.adjacency import adjacent_roots
from core.samples import archive_hash, combined_hash
from pipeline.sources.base import OperationDetails
from pipeline.stages.bank_candidates import bank_table, edit_point_nm, junction_points
from tests.pipeline.fakes import S1, S2, A, B, C, FakeSource, P, Q, X, Y, build_bank


@pytest.fixture
def cfg():
    return load_config("demo")


def _by_type(rows):
    out = {}
    for r in rows:
        out.setdefault(r["sample_type"], []).append(r)
    return out


def test_all_five_types_with_contract_identity(cfg):
    result = build_bank(FakeSource(), cfg)
    rows = _by_type(result.rows)
    assert sorted(rows) == sorted(
        ["merge_edit", "split_edit", "adjacent_control", "junction_control", "synapse_control"]
    )
    merge = rows["merge_edit"][0]
    assert merge["source_archive"] == "unified_demo"
    assert merge["source_archive_sample_hash"] == archive_hash("1:endpoint_error_corr:")
    assert merge["combined_sample_hash"] == combined_hash("unified_demo", merge["source_archive_sample_hash"])
    assert (merge["false_split_correction_label"], merge["false_merge_identification_label"]) == (1.0, None)
    assert merge["same_neuron"] is True
    assert merge["geometry_roots"] == [str(A), str(B)]
    assert merge["cutout_timestamp"] == 99.0
    # midpoint of source centroid (10,10,10) and sink centroid (12,10,10), times (4,4,40)
    assert merge["coord_nm"] == [44.0, 40.0, 400.0]
    split = rows["split_edit"][0]
    assert split["source_archive_sample_hash"] == archive_hash(f"2:endpoint_error_corr:ctrl_{S1}_{S2}")
    assert split["geometry_roots"] == [str(C)] and split["after_roots"] == [str(S1), str(S2)]
    assert (split["mask_a_root"], split["mask_b_root"]) == (str(S1), str(S2))
    assert split["cutout_timestamp"] == 200.0
    meta = json.loads(split["metadata"])
    assert meta["before_root_ids"] == [str(C)] and meta["strategy"] == "split_correction"
    assert list(meta) == sorted(meta)


def test_adjacent_controls_exclude_op_roots(cfg):
    rows = _by_type(build_bank(FakeSource(), cfg).rows)["adjacent_control"]
    pairs = {(json.loads(r["metadata"])["base_root"], json.loads(r["metadata"])["adjacent_root"]) for r in rows}
    assert pairs == {(str(A), str(X)), (str(B), str(Y))}
    for r in rows:
        assert r["source_archive_sample_hash"] == archive_hash(
            f"1:endpoint_error_corr:ctrl_{json.loads(r['metadata'])['base_root']}_"
            f"{json.loads(r['metadata'])['adjacent_root']}"
        )
        assert r["false_split_correction_label"] == 0.0 and r["same_neuron"] is False


def test_junctions_and_synapses(cfg):
    rows = _by_type(build_bank(FakeSource(), cfg).rows)
    junctions = rows["junction_control"]
    assert sorted(tuple(r["coord_nm"]) for r in junctions) == [(0.0, 0.0, 0.0), (100.0, 0.0, 0.0)]
    assert all(r["source_archive"] == "unified_controls_demo" and r["mask_b_root"] == "" for r in junctions)
    assert json.loads(junctions[0]["metadata"])["cleft_score"] is None  # one key set per archive
    (syn,) = rows["synapse_control"]  # self-synapse, null root and non-proofread partner dropped
    meta = json.loads(syn["metadata"])
    assert (meta["pre_pt_root_id"], meta["post_pt_root_id"], meta["gaba"]) == (str(P), str(Q), 0.1)
    assert syn["coord_key"] == "synapse_ctr_pt_nm" and syn["coord_nm"] == [1.0, 2.0, 3.0]
    assert set(json.loads(junctions[0]["metadata"])) == set(meta)
    assert "gaba" in meta and "pre_pt_position_nm" not in meta


def test_bad_input_goes_to_the_ledger(cfg):
    result = build_bank(FakeSource(duplicate_op=True), cfg)
    reasons = {(f.sample_id, f.reason) for f in result.failures}
    assert ("operation:3", "no_edit_point") in reasons
    assert ("operation:1", "conflicting_duplicate_operation") in reasons
    assert ("synapse:9", "synapse_null_root_or_point") in reasons
    assert (f"root:{Q}", "no_skeleton") in reasons
    assert all(f.stage == "bank" and f.species == "demo" for f in result.failures)


def test_missing_column_names_table_and_column(cfg):
    result = build_bank(FakeSource(drop_column="is_merge"), cfg)
    (fail,) = [f for f in result.failures if f.reason == "missing_column"]
    assert "change_log" in fail.exception and "is_merge" in fail.exception
    assert {r["sample_type"] for r in result.rows} == {"junction_control", "synapse_control"}


def test_budgets_pick_by_hashed_priority_not_arrival(cfg):
    full = build_bank(FakeSource(), cfg).rows
    cfg1 = cfg.model_copy(update={"budgets": cfg.budgets.model_copy(update={"adjacent_control": 1})})
    one = [r for r in build_bank(FakeSource(), cfg1).rows if r["sample_type"] == "adjacent_control"]
    candidates = sorted((r for r in full if r["sample_type"] == "adjacent_control"), key=lambda r: r["priority"])
    assert [r["combined_sample_hash"] for r in one] == [candidates[0]["combined_sample_hash"]]


def test_bank_is_deterministic_and_sorted(cfg):
    a = bank_table(build_bank(FakeSource(), cfg).rows)
    b = bank_table(build_bank(FakeSource(), cfg).rows)
    assert a.equals(b)
    hashes = a.column("combined_sample_hash").to_pylist()
    assert hashes == sorted(hashes) and len(set(hashes)) == len(hashes)


def test_edit_point_uses_either_side():
    det = OperationDetails(1, 0.0, True, (), (), ((1, 2, 3),), ())
    assert edit_point_nm(det, (2.0, 2.0, 2.0)).tolist() == [2.0, 4.0, 6.0]
    assert edit_point_nm(OperationDetails(1, 0.0, True, (), ()), (1.0, 1.0, 1.0)) is None


def test_adjacent_roots_are_six_connected():
    vol = np.zeros((5, 5, 5), dtype=np.uint64)
    vol[2, 2, 2] = 1
    vol[3, 3, 2] = 9  # diagonal only: not face-adjacent
    vol[2, 2, 3] = 5
    assert adjacent_roots(vol, [1], exclude=set()) == [(1, 5, 1)]


def test_junction_points_degree():
    verts = np.zeros((5, 3))
    assert [d for _, d in junction_points(verts, np.array([[0, 1], [0, 2], [0, 3], [3, 4]]))] == [3]
    assert junction_points(verts, np.zeros((0, 2))) == []


def _candidate(i, sample_type="junction_control"):
    from core.hashing import md5_hex, unit_interval

    h = md5_hex(f"candidate-{i}")
    return {"combined_sample_hash": h, "sample_type": sample_type, "source_archive": "unified_controls_demo",
            "priority": unit_interval("budget", h), "metadata": json.dumps({"species": "demo"})}  # fmt: skip


def test_budgets_keep_the_smallest_hashed_priorities_whatever_the_arrival_order():
    import random

    from pipeline.stages.bank_candidates import select_bank

    rows = [_candidate(i) for i in range(40)]
    budgets = {t: None for t in ("merge_edit", "split_edit", "adjacent_control", "synapse_control")}
    budgets["junction_control"] = 10
    by_priority = sorted(rows, key=lambda r: r["priority"])
    expected = {r["combined_sample_hash"] for r in by_priority[:10]}
    arrivals = [by_priority[::-1], rows, random.Random(3).sample(rows, len(rows))]
    assert {r["combined_sample_hash"] for r in arrivals[0][:10]}.isdisjoint(expected)  # arrival order would differ
    for arrival in arrivals:
        got = select_bank(arrival, budgets, "demo").rows
        assert {r["combined_sample_hash"] for r in got} == expected
        assert [r["combined_sample_hash"] for r in got] == sorted(expected)


def test_selection_merges_duplicates_and_fails_conflicts():
    from pipeline.stages.bank_candidates import select_bank

    a, b = _candidate(1), _candidate(2)
    conflict = {**b, "metadata": json.dumps({"species": "demo", "degree": 4})}
    budgets = dict.fromkeys(("merge_edit", "split_edit", "adjacent_control", "junction_control", "synapse_control"))
    result = select_bank([a, a, b, conflict], budgets, "demo")
    assert [r["combined_sample_hash"] for r in result.rows] == [a["combined_sample_hash"]]
    failed = [(f.sample_id, f.reason) for f in result.failures]
    assert failed == [(b["combined_sample_hash"], "conflicting_duplicate_sample")]


def test_rows_of_an_archive_share_one_key_set_across_batches():
    from pipeline.stages.bank_candidates import select_bank

    a = _candidate(1)
    b = {**_candidate(2), "metadata": json.dumps({"species": "demo", "gaba": 0.5})}
    budgets = dict.fromkeys(("merge_edit", "split_edit", "adjacent_control", "junction_control", "synapse_control"))
    rows = select_bank([a, b], budgets, "demo").rows
    assert [set(json.loads(r["metadata"])) for r in rows] == [{"species", "gaba"}] * 2
    assert all(r["row_digest"] for r in rows)


def test_a_rows_budget_priority_is_the_hash_of_its_identity(cfg):
    """Budgets keep the smallest `unit_interval("budget", combined_sample_hash)`, pinned by a literal value."""
    from core.hashing import unit_interval

    assert unit_interval("budget", "81c5a636674e76552ed428d6c3f1148c") == 0.6727342477981816
    rows = build_bank(FakeSource(), cfg).rows
    assert rows and all(r["priority"] == unit_interval("budget", r["combined_sample_hash"]) for r in rows)
