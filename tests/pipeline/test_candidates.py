"""The bank's rules (pipeline/stages/bank_candidates.py) as the bank writes them: which roots are segments A and B of
each sample type (contract §1), on a tiny in-memory source (tests/pipeline/fakes.py)."""

from __future__ import annotations

import json

import pytest

from config import load_config
from tests.pipeline.fakes import S1, S2, A, B, C, FakeSource, P, Q, X, Y, build_bank


@pytest.fixture(scope="module")
def rows_by_type() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in build_bank(FakeSource(), load_config("demo")).rows:
        out.setdefault(row["sample_type"], []).append(row)
    return out


def test_a_merge_rows_masks_are_its_two_before_roots_a_then_b(rows_by_type):
    (merge,) = rows_by_type["merge_edit"]
    assert (merge["mask_a_root"], merge["mask_b_root"]) == (str(A), str(B))
    assert merge["geometry_roots"] == [str(A), str(B)]  # dual geometry of the same two roots, in that order
    assert json.loads(merge["metadata"])["before_root_ids"] == [str(A), str(B)]


def test_an_adjacent_controls_mask_a_is_the_base_root_and_mask_b_the_adjacent_root(rows_by_type):
    rows = rows_by_type["adjacent_control"]
    got = set()
    for row in rows:
        meta = json.loads(row["metadata"])
        assert (row["mask_a_root"], row["mask_b_root"]) == (meta["base_root"], meta["adjacent_root"])
        assert row["geometry_roots"] == [meta["base_root"], meta["adjacent_root"]]
        got.add((row["mask_a_root"], row["mask_b_root"]))
    assert got == {(str(A), str(X)), (str(B), str(Y))}  # base: a before root of the merge; adjacent: never an op root


def test_a_synapse_controls_mask_a_is_the_pre_root_and_mask_b_the_post_root(rows_by_type):
    (syn,) = rows_by_type["synapse_control"]
    meta = json.loads(syn["metadata"])
    assert (syn["mask_a_root"], syn["mask_b_root"]) == (str(P), str(Q))
    assert (meta["pre_pt_root_id"], meta["post_pt_root_id"]) == (str(P), str(Q))
    assert syn["geometry_roots"] == [str(P), str(Q)]


def test_a_split_rows_geometry_is_the_before_root_and_its_masks_are_the_after_roots(rows_by_type):
    (split,) = rows_by_type["split_edit"]
    assert split["geometry_roots"] == [str(C)]  # single geometry of the root before the split
    assert (split["mask_a_root"], split["mask_b_root"]) == (str(S1), str(S2))
    assert split["after_roots"] == [str(S1), str(S2)]


def test_a_junction_controls_mask_a_is_its_neuron_and_it_has_no_segment_b(rows_by_type):
    junctions = rows_by_type["junction_control"]
    assert junctions
    for row in junctions:
        assert row["geometry_roots"] == [str(P)] and row["mask_a_root"] == str(P) and row["mask_b_root"] == ""


class _RecordingCutouts(FakeSource):
    def __init__(self) -> None:
        super().__init__()
        self.cutouts: list[tuple[list[float], float, float]] = []

    def segmentation_cutout(self, center_nm, size_nm, timestamp):  # noqa: ANN001, ANN201
        self.cutouts.append(([float(v) for v in center_nm], float(size_nm), float(timestamp)))
        return super().segmentation_cutout(center_nm, size_nm, timestamp)


def test_adjacent_controls_come_from_a_500_nm_cutout_at_the_op_point_just_before_the_merge():
    source = _RecordingCutouts()
    rows = build_bank(source, load_config("demo")).rows
    (merge,) = [r for r in rows if r["sample_type"] == "merge_edit"]
    assert source.cutouts == [(merge["coord_nm"], 500.0, merge["timestamp"] - 1)]  # one per merge op, at T-1
    adjacent = [r for r in rows if r["sample_type"] == "adjacent_control"]
    assert adjacent and all(r["cutout_timestamp"] == merge["timestamp"] - 1 for r in adjacent)
    assert all(r["coord_nm"] == merge["coord_nm"] for r in adjacent)  # the op's edit point


def test_at_most_adjacent_per_op_controls_per_merge():
    cfg = load_config("demo")
    for cap in (0, 1):
        rows = build_bank(FakeSource(), cfg.model_copy(update={"adjacent_per_op": cap})).rows
        assert sum(r["sample_type"] == "adjacent_control" for r in rows) == cap


def test_metadata_takes_the_first_rows_forms(rows_by_type):
    """Integer epoch seconds; null cutout_timestamp on operation rows (the exact time in timestamp_ms); null
    after_root_ids on adjacent controls; root ids as decimal strings."""
    for sample_type in ("merge_edit", "split_edit"):
        meta = json.loads(rows_by_type[sample_type][0]["metadata"])
        assert meta["cutout_timestamp"] is None and type(meta["timestamp"]) is int
        assert meta["timestamp_ms"] == int(rows_by_type[sample_type][0]["timestamp"] * 1000)
        assert all(type(r) is str and r.isdigit() for r in meta["before_root_ids"] + meta["after_root_ids"])
    adjacent = json.loads(rows_by_type["adjacent_control"][0]["metadata"])
    assert adjacent["after_root_ids"] is None and adjacent["cutout_timestamp"] is None
    for sample_type in ("junction_control", "synapse_control"):
        meta = json.loads(rows_by_type[sample_type][0]["metadata"])
        assert type(meta["cutout_timestamp"]) is int and meta["cutout_timestamp"] == 2000


class _TwoLineages(FakeSource):
    """Merge op 5 sits in both P's and Q's change logs, each listing the after root of its own lineage; P's change
    log and level-2 graph cannot be had while `down` (as a server answering 500 for that root)."""

    down = True

    def change_log(self, root_ids):  # noqa: ANN001, ANN201
        import pyarrow as pa

        from core.errors import PartlyUnavailable, Unavailable

        log = super().change_log(root_ids)
        extra = pa.table({"root_id": [P, Q], "operation_id": [5, 5], "timestamp": [500.0, 500.0],
                          "is_merge": [True, True], "before_root_ids": [[A, B], [A, B]],
                          "after_root_ids": [[C], [X]]}).cast(log.schema)  # fmt: skip
        log = pa.concat_tables([log, extra])
        log = log.filter(pa.compute.is_in(log["root_id"], pa.array(sorted(root_ids), log.schema.field("root_id").type)))
        if self.down and P in root_ids:
            keep = pa.compute.not_equal(log["root_id"], P)
            raise PartlyUnavailable(log.filter(keep), {P: Unavailable("change_log", "HTTP 500 for root P")})
        return log

    def operation_details(self, operation_ids):  # noqa: ANN001, ANN201
        from pipeline.sources.base import OperationDetails

        got = super().operation_details([o for o in operation_ids if o != 5])
        if 5 in operation_ids:
            got[5] = OperationDetails(5, 500.0, True, (), (), ((40, 40, 40),), ((42, 40, 40),))
        return got

    def skeleton(self, root_id):  # noqa: ANN001, ANN201
        from core.errors import Unavailable

        if self.down and root_id == P:
            raise Unavailable("level2_graph", "HTTP 500 for root P")
        return super().skeleton(root_id)


def test_a_retry_asks_only_for_what_failed_and_gives_the_rows_of_a_whole_run():
    """A batch whose root P could not give its change log and level-2 graph: its rows, change-log rows and failures
    kept; the retry (the servers answering) asks again only for P's, rebuilds op 5 (in P's and Q's logs, its after
    roots now from both lineages) and adds P's junctions: the same rows and failures as a run of the whole batch."""
    from pipeline.stages.bank_candidates import bank_candidates, retry_candidates

    cfg = load_config("demo")
    source = _TwoLineages()
    first = bank_candidates(source, cfg, [P, Q], [P, Q])
    reasons = {(f.sample_id, f.reason) for f in first.failures}
    assert {(f"root:{P}", "change_log_unavailable"), (f"root:{P}", "level2_graph_unavailable")} <= reasons
    source.down = False
    whole = bank_candidates(source, cfg, [P, Q], [P, Q])
    retried = retry_candidates(source, cfg, [P, Q], [P, Q], first.rows, first.log, first.failures)
    assert retried.rows == whole.rows and sorted(retried.failures, key=str) == sorted(whole.failures, key=str)
    op5 = [json.loads(r["metadata"]) for r in retried.rows if r["sample_type"] == "merge_edit"
           and json.loads(r["metadata"])["operation_id"] == 5]  # fmt: skip
    assert op5 and sorted(op5[0]["after_root_ids"]) == sorted([str(C), str(X)])
    assert retried.kept > 0


def test_a_bank_partition_whose_retries_fail_again_keeps_its_files_byte_for_byte(tmp_path, monkeypatch):
    """A rebuild with nothing changed runs a bank partition again for its failures for the servers' sake; when they
    fail again its files stay as they were (the selection and the release are not sealed again over them)."""
    from pipeline.context import BuildContext
    from pipeline.runner import execute_partition
    from pipeline.stage import to_retry
    from pipeline.stages import bank as bank_stage
    from pipeline.stages import roots as roots_stage
    from pipeline.stages.species import species_graph

    source = _TwoLineages()
    for module in (bank_stage, roots_stage):
        monkeypatch.setattr(module, "open_source", lambda ctx: source)
    ctx = BuildContext("demo", load_config("demo").model_copy(update={"max_failed_fraction": 0.9}), tmp_path / "w",
                       tmp_path / "o")  # fmt: skip
    for unit in ("roots", "bank"):
        graph = species_graph(ctx)
        for part in graph.partitions(unit):
            assert execute_partition(graph.stage(unit), ctx, part, False).error is None
    parts = species_graph(ctx).partitions("bank")
    assert any(to_retry(ctx, p) for p in parts)
    files = sorted(f for f in (ctx.work_dir / "demo" / "bank").glob("part-*.parquet") if "failures" not in f.name)
    assert len(files) == 2 * len(parts)  # the candidates and the change-log rows of each batch
    before = {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in files}
    for part in parts:  # P's change log and level-2 graph are still down: the retries fail again
        assert execute_partition(species_graph(ctx).stage("bank"), ctx, part, False).error is None
    assert {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in files} == before
    source.down = False  # now they come: the files change
    for part in parts:
        execute_partition(species_graph(ctx).stage("bank"), ctx, part, False)
    assert {f: f.read_bytes() for f in files} != {f: b for f, (b, _) in before.items()}
