"""Progress whatever the servers do: an item a server never answers is ledgered on what it touches and the build
goes on; the next build retries only it; too many of them stop the build in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from config import load_config
from core.errors import UserError
from core.layout import twin_config_dir
from pipeline.build import RunOptions, build
from pipeline.runner import parse_summaries
from pipeline.twin_build import BUILD_DRACO_BIN_NM
from shard.compare import compare_releases
from sim.twin import Fault, TwinServer
from sim.twin.species import twin_config
from tests.conftest import cli, seed_work

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def plain(tmp_path_factory, tiny_world, tiny_configs):
    """The tiny demo release built from files: what every build through the twin must come back to."""
    root = tmp_path_factory.mktemp("progress")
    work, out = seed_work(root / "work", tiny_world), root / "out"
    cli("build", "--work", str(work), "--out", str(out), "--no-progress", config_dir=tiny_configs)
    return root, work, out


def _bank_rows(work: Path) -> list[dict]:
    return pq.read_table(work / "demo" / "bank.parquet").to_pylist()


def _twin_build(world: Path, work: Path, out: Path, tiny_configs: Path, port: int, faults: list[Fault],
                **overrides: object) -> tuple[TwinServer, list, dict]:  # fmt: skip
    """A build of the tiny world through a twin on `port` with `faults` installed (threads scheduler, in this
    process); the twin is stopped after."""
    server = TwinServer(world, flavor="v2", port=port, draco_bin_nm=BUILD_DRACO_BIN_NM)
    server.app.faults.add(*faults)
    server.start()
    try:
        folder = twin_config_dir(work)
        folder.mkdir(parents=True, exist_ok=True)
        cfg = twin_config(load_config("demo", tiny_configs), server.url, **overrides)
        (folder / "demo.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=True))
        summaries, result = build("demo", work, out, RunOptions(scheduler="threads", progress=False),
                                  cave_token=server.token)  # fmt: skip
        return server, summaries, result
    finally:
        server.stop()


def test_an_item_the_server_never_answers_is_ledgered_and_the_next_build_retries_only_it(plain, tiny_configs):
    root, plain_work, plain_out = plain
    rows = _bank_rows(plain_work)
    junction_root = int(next(r["mask_a_root"] for r in rows if r["sample_type"] == "junction_control"))
    meshed = sorted({int(r["geometry_roots"][0]) for r in rows if r["sample_type"] == "synapse_control"} -
                    {junction_root})  # fmt: skip
    mesh_root = meshed[0]
    faults = [
        Fault(rf"/node/{junction_root}/lvl2_graph$", status=500,
              body=json.dumps({"code": 500, "message": "KeyError: 'level 2'"}).encode()),
        Fault(rf"/manifest/{mesh_root}:0$", status=500),
    ]  # fmt: skip
    world, work, out = plain_work / "demo" / "world", root / "tw", root / "tw-out"
    server, summaries, _ = _twin_build(world, work, out, tiny_configs, 0, faults, max_failed_fraction=0.5)
    port = server.port
    lines = {s.stage: s.line() for s in summaries}
    assert "to retry (level2_graph_unavailable 1)" in lines["bank"], lines
    assert "to retry (mesh_unavailable" in lines["fetch"], lines

    ledger = pq.read_table(work / "demo" / "failures.parquet").to_pylist()
    unavailable = {(f["stage"], f["reason"], f["sample_id"]) for f in ledger if f["reason"].endswith("_unavailable")}
    assert ("bank", "level2_graph_unavailable", f"root:{junction_root}") in unavailable
    fetch_failed = {sid for stage, reason, sid in unavailable if stage == "fetch" and reason == "mesh_unavailable"}
    with_mesh_root = {r["combined_sample_hash"] for r in _bank_rows(work) if str(mesh_root) in r["geometry_roots"]}
    assert fetch_failed == with_mesh_root and fetch_failed

    # the release ships without them: every row missing is one a ledgered failure names; a row only in the twin's
    # release is a junction control that the missing root's junctions let into the budget
    compared = compared_before = compare_releases(plain_out, out)
    plain_rows = {r["combined_sample_hash"]: r for r in rows}
    for h in compared.only_a:
        r = plain_rows[h]
        assert h in fetch_failed or (r["sample_type"] == "junction_control" and int(r["mask_a_root"]) == junction_root)
    twin_rows = {r["combined_sample_hash"]: r for r in _bank_rows(work)}
    assert all(twin_rows[h]["sample_type"] == "junction_control" for h in compared.only_b)
    assert not compared.column_differences and not compared.em_views_differ

    status = cli("status", "--work", str(work), "--out", str(out), "--failed", config_dir=tiny_configs).stdout
    assert f"demo bank level2_graph_unavailable: 1, retried by the next build\n  root:{junction_root}" in status
    assert "demo fetch mesh_unavailable" in status and "missing_mesh" not in status.split("retried")[0]

    # the servers answer again: the next build asks only for what failed, and its release is the plain one
    server, summaries, _ = _twin_build(world, work, out, tiny_configs, port, [], max_failed_fraction=0.5)
    asked = server.requests
    level2 = [r.path for r in asked if r.path.endswith("/lvl2_graph")]
    assert level2 == [p for p in level2 if f"/{junction_root}/" in p] and level2
    manifests = {r.path.rsplit("/", 1)[-1] for r in asked if "/manifest/" in r.path}
    redone = set(compared_before.only_a)  # the samples that failed, and the junctions that could not be banked
    needed = {f"{g}:0" for h in redone for g in plain_rows[h]["geometry_roots"]}
    assert f"{mesh_root}:0" in manifests and manifests <= needed, (manifests, needed)
    lines = {s.stage: s.line() for s in summaries}
    assert "1 failures of an earlier run retried" in lines["bank"] and "to retry" not in lines["bank"], lines
    assert f"{len(fetch_failed)} failures of an earlier run retried" in lines["fetch"], lines
    done = parse_summaries("\n".join(s.line() for s in summaries))
    assert done["bank"]["ran"] == 1 and done["bank"]["reused"] > 0
    compared = compare_releases(plain_out, out)
    assert compared.ok(0.98), compared.text(0.98)


def test_failures_past_the_budget_stop_the_build_in_one_line(plain, tiny_configs):
    root, plain_work, _ = plain
    rows = _bank_rows(plain_work)
    roots = sorted({int(r["mask_a_root"]) for r in rows if r["sample_type"] == "junction_control"})
    faults = [Fault(rf"/node/({'|'.join(map(str, roots))})/lvl2_graph$", status=503)]
    world, work, out = plain_work / "demo" / "world", root / "tb", root / "tb-out"
    with pytest.raises(UserError) as stopped:
        _twin_build(world, work, out, tiny_configs, 0, faults, max_failed_fraction=0.01)
    text = str(stopped.value)
    assert "stage bank:" in text and "over max_failed_fraction 0.01" in text and "level2_graph_unavailable" in text
    assert "\n" not in text
    assert not (out / "shards.csv").exists()  # no release from a build stopped so
