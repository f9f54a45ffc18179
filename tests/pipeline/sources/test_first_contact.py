"""First contact gives no false answers (issue 24 item 7), through the real caveclient and cloud-volume against a twin
of a small generated world (sim/twin/scale.py: no demo world to generate, so these tests are fast).

Each test is one assumption the build or preflight makes about a real deployment, met by the twin set up as that
deployment is (drift.py): FlyWire's public datastack (a virtual table, level-2 data by the attributes route only),
a datastack without an l2cache, a flat segmentation, a public table capped at an earlier release, a server's own
secret file beside another server's token, a delta-roots span that times out whole.
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

from config.schema import SpeciesConfig, load_config
from core.errors import UserError
from pipeline.preflight.checks import Preflight
from pipeline.preflight.report import FAIL, OK
from pipeline.sources import adaptive
from pipeline.sources.cave import CaveSource
from pipeline.sources.cave.chunkedgraph import delta_windows
from sim.twin.drift import VIEW
from sim.twin.faults import Fault
from sim.twin.scale import ScaleParams, ScaleWorld
from sim.twin.server import TOKEN, TwinServer
from sim.twin.species import twin_config

SMALL = ScaleParams(neurons=40, synapses=500, other_roots=100, seed=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> ScaleWorld:
    return ScaleWorld(tmp_path_factory.mktemp("first-contact"), SMALL)


@pytest.fixture(scope="module")
def base_cfg(tiny_configs) -> SpeciesConfig:
    return load_config("demo", tiny_configs)


@pytest.fixture(scope="module")
def servers(world):
    """One running twin of the small world per set of drifts, shared by the module (a stop waits 0.5 s)."""
    running: dict[tuple[str, ...], TwinServer] = {}
    yield running
    for server in running.values():
        server.stop()


@pytest.fixture()
def serve(world, servers):
    """serve(*drifts) -> the running twin of the small world with those drifts, its faults cleared after the test."""
    used: list[TwinServer] = []

    def start(*drifts: str) -> TwinServer:
        if drifts not in servers:
            servers[drifts] = TwinServer(world, flavor="v2", drift=list(drifts)).start()
        used.append(servers[drifts])
        return servers[drifts]

    yield start
    for server in used:
        server.app.faults.clear()


def _cfg(base: SpeciesConfig, server: TwinServer, **overrides: object) -> SpeciesConfig:
    return twin_config(base, server.url, timeout_s=10, **overrides)


def _live(base: SpeciesConfig, server: TwinServer, world: ScaleWorld, **overrides: object) -> SpeciesConfig:
    """A config as human's and zebrafish's: no pinned version, a live query at as_of (just after the latest version:
    at a version's own time caveclient asks that version's tables and no chunkedgraph)."""
    as_of = max(v.timestamp for v in world.versions) + 1.0
    return _cfg(base, server, materialization_version=None, as_of=as_of, **overrides)


def _paths(server: TwinServer, since: int = 0, contains: str = "") -> list[str]:
    return [r.path for r in server.requests[since:] if contains in r.path]


def _preflight(cfg: SpeciesConfig, src: CaveSource) -> dict[str, object]:
    """Every check's result by name (the scale world has no EM and no meshes: those two checks fail here)."""
    flight = Preflight(cfg, src, time.time(), 32, lambda line: None)
    return {c.name: c for c in flight.run()}


# ------------------------------------------------------------------ l2cache


def test_flywire_public_level2_data_comes_by_the_attributes_route_though_has_cache_says_no(serve, base_cfg):
    server = serve("flywire_public")
    src = CaveSource(_cfg(base_cfg, server), token=TOKEN)
    assert src.client().l2cache.has_cache() is False  # the trap: the mapping is keyed on the real graph's id
    start = len(server.requests)
    roots = src.proofread_roots()
    sk = src.skeleton(roots[0])
    assert sk.extra["coords"] == "l2cache" and sk.extra["n_missing_rep_coord"] == 0 and len(sk.vertices_nm)
    assert src._l2cache is True
    assert not _paths(server, start, "table_mapping")  # the build never asks has_cache()


def test_flywire_public_preflight_has_no_fail(serve, base_cfg):
    """Set up as config/fly.yaml reads FlyWire: the synapses from the public datastack's view."""
    server = serve("flywire_public")
    start = len(server.requests)
    cfg = _cfg(base_cfg, server, synapse_table=VIEW)
    checks = _preflight(cfg, CaveSource(cfg, token=TOKEN))
    failed = {n: c.line() for n, c in checks.items() if c.status == FAIL and n not in ("EM layer", "mesh manifest")}
    assert not failed, failed
    assert checks["l2cache"].status == OK and "representative point" in checks["l2cache"].found
    assert checks["supervoxel -> root"].status == OK  # clamped at the pinned release: nothing moves
    assert checks["table synapse_table"].status == OK
    assert any(f"/views/{VIEW}/query" in p for p in _paths(server, start))


def test_synapses_from_a_view_are_the_rows_of_its_table(serve, base_cfg):
    server = serve("flywire_public")
    start = len(server.requests)
    by_view = CaveSource(_cfg(base_cfg, server, synapse_table=VIEW), token=TOKEN)
    by_table = CaveSource(_cfg(base_cfg, server), token=TOKEN)
    roots = by_table.proofread_roots()
    got = by_view.synapses(roots, roots)
    assert got.num_rows and got.equals(by_table.synapses(roots, roots))
    assert any(f"/views/{VIEW}/query" in p for p in _paths(server, start))


def test_without_an_l2cache_nodes_sit_at_chunk_centres_decided_once(serve, base_cfg):
    server = serve("no_l2cache")
    src = CaveSource(_cfg(base_cfg, server), token=TOKEN)
    roots = src.proofread_roots()
    first = src.skeleton(roots[0])
    assert first.extra["coords"] == "chunk_centre" and src._l2cache is False
    start = len(server.requests)
    again = pickle.loads(pickle.dumps(src))  # a worker inherits the decision
    assert again._l2cache is False
    assert again.skeleton(roots[1]).extra["coords"] == "chunk_centre"
    assert not _paths(server, start, "/l2cache/")  # decided once: never asked again


def test_a_server_error_of_the_l2cache_is_not_taken_for_no_cache(serve, base_cfg):
    server = serve()
    src = CaveSource(_cfg(base_cfg, server), token=TOKEN)
    roots = src.proofread_roots()
    server.app.faults.add(Fault(r"/l2cache/api/v1/table/.*/attributes", status=500, times=None))
    with pytest.raises(Exception, match="500"):
        src.skeleton(roots[0])
    assert src._l2cache is None  # undecided: the next answer decides


# ------------------------------------------------------------------ datastack, chunkedgraph


def test_a_flat_segmentation_fails_datastack_in_one_line(serve, base_cfg):
    server = serve("flat_segmentation")
    cfg = _cfg(base_cfg, server)
    checks = _preflight(cfg, CaveSource(cfg, token=TOKEN))
    line = checks["datastack"].line()
    assert checks["datastack"].status == FAIL and "\n" not in line
    assert "not a graphene" in line and "set datastack" in line
    assert [n for n, c in checks.items() if c.status == FAIL] == ["datastack", "EM layer"]  # the rest: skipped
    with pytest.raises(UserError, match="not a graphene") as err:
        CaveSource(cfg, token=TOKEN).client()
    assert "\n" not in str(err.value)


def test_the_chunkedgraph_client_is_seg_cloudpaths_and_caveclients_own_users_get_it(serve, base_cfg):
    server = serve()
    cfg = _cfg(base_cfg, server)
    src = CaveSource(cfg, token=TOKEN)
    cg = src._cg()
    assert cg.server_address == server.url and cg.table_name == cfg.seg_cloudpath.rsplit("/", 1)[1]
    assert src.client().chunkedgraph is cg  # the materialization client's live queries, has_cache(): ours
    assert isinstance(cg.session.get_adapter(server.url), adaptive.ScopedTimeoutAdapter)


def test_the_live_query_path_asks_the_chunkedgraph_through_the_bounded_session(serve, base_cfg, world):
    server = serve()
    src = CaveSource(_live(base_cfg, server, world), token=TOKEN)
    roots = src.proofread_roots()
    start = len(server.requests)
    src.synapses(roots[:5], roots)  # a live query filtered on root ids: caveclient maps them through the graph
    assert _paths(server, start, "/segmentation/api/v1/table/")  # it did ask the chunkedgraph
    mat = src._mat()
    assert mat.cg_client is src._cg_client
    assert isinstance(mat.cg_client.session.get_adapter(server.url), adaptive.ScopedTimeoutAdapter)


# ------------------------------------------------------------------ access, tokens


def test_access_asks_a_call_that_needs_permission(serve, base_cfg):
    server = serve()
    start = len(server.requests)
    cfg = _cfg(base_cfg, server)
    checks = _preflight(cfg, CaveSource(cfg, token=TOKEN))
    assert checks["access"].status == OK
    assert any(p.endswith("/root_timestamps") for p in _paths(server, start))


def _secrets(home: Path) -> Path:
    folder = home / ".cloudvolume" / "secrets"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_servers_own_secret_file_is_read_before_cave_secret_and_handed_to_the_segmentation(
    serve, base_cfg, isolated_home
):
    server = serve()
    folder = _secrets(isolated_home)
    (folder / "cave-secret.json").write_text(json.dumps({"token": "0123456789abcdef"}))  # another server's token
    netloc = server.url.split("://", 1)[1]
    (folder / f"{netloc}-cave-secret.json").write_text(json.dumps({"token": TOKEN}))
    cfg = _cfg(base_cfg, server)
    src = CaveSource(cfg)  # no explicit token, no CAVE_TOKEN
    assert src.proofread_roots()
    assert src._seg().meta.auth_header == {"Authorization": f"Bearer {TOKEN}"}  # the client's, not cave-secret's
    lines = []
    Preflight(cfg, src, time.time(), 32, lines.append)._do("token", Preflight(cfg, src, 0, 1, print).token, ())
    assert f"{netloc}-cave-secret.json" in lines[0] and TOKEN not in lines[0]


def test_a_refused_token_names_the_servers_own_file_and_keeps_the_other(serve, base_cfg, isolated_home):
    server = serve()
    (_secrets(isolated_home) / "cave-secret.json").write_text(json.dumps({"token": "0123456789abcdef"}))
    with pytest.raises(UserError) as err:
        CaveSource(_cfg(base_cfg, server)).proofread_roots()
    text = str(err.value)
    netloc = server.url.split("://", 1)[1]
    assert f"{netloc}-cave-secret.json" in text and "leave that one as it is" in text
    assert "0123456789abcdef" not in text and "\n" not in text


# ------------------------------------------------------------------ times


def test_a_silent_clamp_at_an_earlier_release_fails_supervoxel_to_root(serve, base_cfg):
    server = serve("public_release_cap")
    cfg = _cfg(base_cfg, server)
    check = _preflight(cfg, CaveSource(cfg, token=TOKEN))["supervoxel -> root"]
    assert check.status == FAIL, check.line()
    assert "clamps later times silently" in check.line() and "at or before the datastack's public release" in (
        check.line()
    )


def test_delta_roots_over_windows_equal_one_span_and_a_span_that_times_out_is_cut(serve, base_cfg, world):
    server = serve()
    start = len(server.requests)
    cfg = _live(base_cfg, server, world, proofread_from_delta_roots=True, proofread_table=None)
    whole = CaveSource(cfg, token=TOKEN).proofread_roots()
    assert len(_paths(server, start, "/delta_roots")) == 1  # one request when the span answers
    ops = [world.operation(g) for g in range(len(world.op_ms)) if world.op_ms[g] <= cfg.as_of * 1000]
    made, replaced = {int(r) for op in ops for r in op.after}, {int(r) for op in ops for r in op.before}
    assert whole == sorted(made - replaced) and whole  # the roots edits made that no later edit replaced
    start = len(server.requests)
    server.app.faults.add(Fault(r"/delta_roots", status=504, times=3))  # the whole span, then both halves
    adaptive.ADAPTIVE = adaptive.Adaptive()
    cut = CaveSource(cfg, token=TOKEN).proofread_roots()
    assert cut == whole
    assert len(_paths(server, start, "/delta_roots")) >= 5


def test_windows_cover_the_span_end_to_end():
    windows = delta_windows(10.0, 74.0, 64)
    assert windows[0][0] == 10.0 and windows[-1][1] == 74.0 and len(windows) == 64
    assert all(a[1] == b[0] for a, b in zip(windows[:-1], windows[1:], strict=True))
    assert delta_windows(5.0, 5.0, 64) == [(5.0, 5.0)]
    assert np.isclose(sum(b - a for a, b in windows), 64.0)


# ------------------------------------------------------------------ the proofread table's valid_id


@pytest.fixture()
def with_valid_id(world, monkeypatch):
    """The proofread table as MICrONS' has it: a `valid_id` per row (the root when its status was assigned); the
    first three rows' neurons were edited since (valid_id is an older root). Yields those rows' pt_root_ids."""
    import pyarrow as pa

    original = world.table

    def table(name: str, version: int):  # noqa: ANN202 - ScaleWorld.table's signature
        got = original(name, version)
        if got is None or name != "proofread_neurons":
            return got
        valid = got["pt_root_id"].to_numpy().copy()
        valid[:3] = 12345
        return got.append_column("valid_id", pa.array(valid, pa.uint64()))

    monkeypatch.setattr(world, "table", table)
    latest = max(v.version for v in world.versions)
    return {int(r) for r in original("proofread_neurons", latest)["pt_root_id"].to_numpy()[:3]}


def test_a_row_names_a_proofread_root_only_where_its_root_is_its_valid_id(serve, base_cfg, with_valid_id):
    server = serve()
    plain = CaveSource(_cfg(base_cfg, server), token=TOKEN).proofread_roots()
    rule = {"name": "proofread_neurons", "root_must_equal": "valid_id"}
    src = CaveSource(_cfg(base_cfg, server, proofread_table=rule), token=TOKEN)
    assert src.proofread_roots() == sorted(set(plain) - with_valid_id) and src.rows_not_proofread == 3


def test_a_missing_valid_id_column_names_the_key(serve, base_cfg):
    server = serve()
    rule = {"name": "proofread_neurons", "root_must_equal": "valid_id"}
    with pytest.raises(UserError, match="no column 'valid_id', needed for proofread_table.root_must_equal") as err:
        CaveSource(_cfg(base_cfg, server, proofread_table=rule), token=TOKEN).proofread_roots()
    assert "\n" not in str(err.value)
