"""CaveSource against a drifted twin (sim/twin/drift.py), through the real caveclient and cloud-volume.

Each drift, met by the source, gives the right rows or ONE line naming what to do (the config key, the URL
where the terms are accepted); never "a CAVE token is needed" for what is not a token problem.
"""

from __future__ import annotations

import webbrowser

import numpy as np
import pytest

from config.schema import load_config
from core.errors import UserError
from pipeline.sources.cave import CaveSource
from sim.twin import TOKEN, TwinServer
from sim.twin.drift import DRIFTS, RENAMED, TOS_PATH, Drift
from sim.twin.species import LATEST_VERSION, twin_config


@pytest.fixture(scope="module")
def demo_cfg(tiny_configs):
    return load_config("demo", tiny_configs)


@pytest.fixture()
def drifted(twin_world):
    """start(*names) -> a running twin (v2) with those drifts; stopped after the test."""
    servers = []

    def start(*names: str) -> TwinServer:
        server = TwinServer(twin_world, flavor="v2", drift=names).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(autouse=True)
def no_browser(monkeypatch):
    """caveclient opens a web browser on a missing_tos 403 it sees itself: record (CaveSource prevents it)."""
    opened: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: opened.append(url) or False)
    return opened


def _source(server: TwinServer, demo_cfg) -> CaveSource:
    return CaveSource(twin_config(demo_cfg, server.url, timeout_s=10), token=TOKEN)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_drift_names_are_checked():
    with pytest.raises(ValueError, match="unknown drift"):
        Drift.of(["no_such_drift"])
    assert set(Drift.of(DRIFTS).names) == set(DRIFTS)


def test_renamed_column_names_the_column_and_key(drifted, demo_cfg):
    src = _source(drifted("renamed_column"), demo_cfg)
    roots = src.proofread_roots()  # the other table is untouched
    with pytest.raises(UserError) as exc:
        src.synapses(roots, roots)
    text = _one_line(exc)
    assert f"no column '{RENAMED[0]}'" in text and "synapse_table" in text and RENAMED[1] in text


def test_missing_table_names_the_key_and_the_tables(drifted, demo_cfg):
    src = _source(drifted("missing_table"), demo_cfg)
    roots = src.proofread_roots()
    with pytest.raises(UserError) as exc:
        src.synapses(roots, roots)
    text = _one_line(exc)
    assert "synapse_table 'synapses' is not a table" in text and "proofread_neurons" in text


def test_no_l2cache_gives_the_graph_at_chunk_centres(drifted, twins, demo_cfg):
    kind = _source(twins["v2"], demo_cfg)
    src = _source(drifted("no_l2cache"), demo_cfg)
    root = src.proofread_roots()[0]
    got, want = src.skeleton(root), kind.skeleton(root)
    assert got.extra["coords"] == "chunk_centre" and want.extra["coords"] == "l2cache"
    assert np.array_equal(got.extra["l2_ids"], want.extra["l2_ids"])
    assert np.array_equal(got.edges, want.edges)


def test_expired_pinned_version_at_start_names_the_versions_left(drifted, demo_cfg):
    src = _source(drifted("expired_version"), demo_cfg)
    with pytest.raises(UserError) as exc:
        src.proofread_roots()
    text = _one_line(exc)
    assert f"materialization_version {LATEST_VERSION}" in text and "versions that do: 2" in text


def test_version_expiring_during_a_build_is_one_line_not_a_retry(drifted, demo_cfg):
    server = drifted()
    src = _source(server, demo_cfg)
    roots = src.proofread_roots()  # start-up checks passed: the version was there
    server.app.drift = Drift.of(["expired_version"])
    server.app.drift.apply(server.app)
    with pytest.raises(UserError) as exc:
        src.synapses(roots, roots)
    text = _one_line(exc)
    assert "has expired (its queries answer HTTP 500)" in text and "pin one that exists: 2" in text
    assert any(r.status == 500 for r in server.requests)  # it did meet the engine's 500


def test_terms_not_accepted_names_the_form_not_the_token(drifted, demo_cfg, no_browser):
    server = drifted("terms_not_accepted")
    src = _source(server, demo_cfg)
    with pytest.raises(UserError) as exc:
        src.proofread_roots()
    text = _one_line(exc)
    assert f"accept them at {server.url}{TOS_PATH}" in text
    assert "token" not in text.replace("the token's user", "")
    assert no_browser == []  # caveclient's own reaction (a web browser) never happens in a build


def test_missing_mip_names_the_key(drifted, demo_cfg):
    src = _source(drifted("missing_mip"), demo_cfg)
    lo, hi = src.canonical_bbox_nm()  # the segmentation is untouched
    with pytest.raises(UserError) as exc:
        src.em_cutout((np.asarray(lo) + np.asarray(hi)) / 2.0, 500.0)
    text = _one_line(exc)
    assert "em_mip 0 is not a mip of" in text and "no scales" in text


def test_virtual_table_401_says_to_pin_earlier_not_a_token(drifted, demo_cfg):
    server = drifted("virtual_table_401")
    src = _source(server, demo_cfg)
    svs = np.asarray(server.world.table("synapses", LATEST_VERSION)["pre_pt_supervoxel_id"][:3], dtype=np.uint64)
    with pytest.raises(UserError) as exc:
        src.roots_at(svs, src.as_of())
    text = _one_line(exc)
    assert "root_id not valid at timestamp" in text and "materialization_version" in text
    assert "token" not in text
    early = src.roots_at(svs, server.app.drift.cap_s)  # at the public cap: answered
    assert early.shape == svs.shape
