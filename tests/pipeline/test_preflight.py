"""preflight against the twin (kind, both flavours; drifted, one switch at a time), record and replay, offline.

In process against the small world's twins: the kind twin passes every check; each drift fails exactly the
check that meets it, with a line naming what to change, and nothing else fails; a recording of a preflight
holds no token and replays to the same report.
"""

from __future__ import annotations

import webbrowser
from pathlib import Path

import pytest
import yaml

from config.schema import load_config
from pipeline.context import BuildContext
from pipeline.preflight import FAIL, REQUEST_BOUND, report_path, run_preflight
from pipeline.preflight.batch import largest_batch
from pipeline.preflight.report import OK, SKIP, WARN
from sim.twin import TOKEN, TwinServer
from sim.twin.drift import DRIFTS
from sim.twin.replay import ReplayServer
from sim.twin.species import twin_config
from tests.conftest import cli_in_process

# drift -> the checks that fail, each with a fragment of its line naming what to do (none: preflight passes)
EXPECTED = {
    "renamed_column": {"table synapse_table": "no column 'pre_pt_root_id'"},
    "missing_table": {"table synapse_table": "set synapse_table in config/demo.yaml"},
    "no_l2cache": {"l2cache": "set budgets.junction_control: 0"},
    "expired_version": {"version": "materialization_version 3"},
    "terms_not_accepted": {"access": "accept them at"},
    "missing_mip": {"EM layer": "set em_mip to one it lists"},
    "virtual_table_401": {"supervoxel -> root": "root_id not valid at timestamp"},
    "flywire_public": {},  # FlyWire's public datastack pinned at its release: nothing to fail
    # capped at an earlier release: the roots come back silently as of it; a root made after it, in a URL path, 401s
    "public_release_cap": {
        "supervoxel -> root": "clamps later times silently",
        "level-2 graph": "root_id not valid at timestamp",
    },
    "flat_segmentation": {"datastack": "not a graphene (chunkedgraph) segmentation"},
}


@pytest.fixture(scope="module")
def demo_cfg(tiny_configs):
    return load_config("demo", tiny_configs)


@pytest.fixture(autouse=True)
def token_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CAVE_TOKEN", TOKEN)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no secret files of the machine's user
    monkeypatch.setattr(webbrowser, "open", lambda *a, **k: False)  # caveclient opens one on missing_tos


def _preflight(server, demo_cfg, work: Path, record: Path | None = None):
    ctx = BuildContext("demo", twin_config(demo_cfg, server.url, timeout_s=10), work, work / "out")
    lines: list[str] = []
    return run_preflight(ctx, record, workers=32, echo=lines.append), lines, ctx


@pytest.mark.parametrize("flavor", ["v1", "v2"])
def test_kind_twin_passes_every_check(twins, demo_cfg, tmp_path, flavor):
    since = len(twins[flavor].requests)
    report, lines, ctx = _preflight(twins[flavor], demo_cfg, tmp_path)
    manifests = [r for r in twins[flavor].requests[since:] if "manifest" in r.path]
    assert manifests and all("bounds=" in r.query for r in manifests)  # asked as the build asks (mip-0 voxels)
    assert "boxes" in report.check("mesh manifest").found
    assert "representative point" in report.check("l2cache").found  # asked of get_l2data, not has_cache()
    assert not any("table_mapping" in r.path for r in twins[flavor].requests[since:])
    assert report.ok, [c.line() for c in report.checks if c.status != OK]
    assert all(c.status == OK for c in report.checks), [c.line() for c in report.checks if c.status != OK]
    assert report.requests <= REQUEST_BOUND
    assert lines == report.lines()  # one line per check as it ran, then the latency per endpoint and a summary
    names = {c.name for c in report.checks}
    assert {"version expiry", "operation-details batch", "mesh manifest", "supervoxel -> root"} <= names
    assert report.latency and all(v["requests"] >= 1 for v in report.latency.values())
    # the twin refuses URLs past its 8 KB: the bisection finds a bound the build's batches stay under
    batch = report.limits["operation_details_batch"]
    assert batch["largest_ok"] < batch["smallest_refused"] and batch["asked"] <= 8
    assert report_path(ctx).is_file()
    assert TOKEN not in report_path(ctx).read_text() and all(TOKEN not in line for line in lines)


@pytest.mark.slow  # the generated world (a URL of all its operations passes the limit) and the hostile waits
@pytest.mark.parametrize("flavor", ["v1", "v2"])
def test_hostile_twin_passes_and_its_hidden_url_budget_is_found(tiny_twin_world, demo_cfg, tmp_path, flavor):
    """Through resets, 502s, 429s and slow answers, every check passes; the operation-details bisection finds
    the URL the hidden limit allows within 20%: v2's drawn URL limit; v1's uWSGI buffer, where the URL is
    counted about three times (request line, REQUEST_URI, QUERY_STRING) beside the headers."""
    from sim.twin.hostile import UWSGI_BUFFER_BYTES

    server = TwinServer(tiny_twin_world, flavor=flavor, hostile_seed=7).start()
    try:
        report, _, _ = _preflight(server, demo_cfg, tmp_path)
        hidden = server.app.hostility.limits
    finally:
        server.stop()
    assert report.ok and all(c.status == OK for c in report.checks), [c.line() for c in report.checks]
    found = report.limits["operation_details_batch"]["largest_url_bytes"]
    allowed = hidden.url_bytes if flavor == "v2" else UWSGI_BUFFER_BYTES / 3
    assert 0.8 * allowed <= found <= allowed, (found, allowed)


@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_each_drift_fails_exactly_its_check(twin_world, demo_cfg, tmp_path, drift):
    server = TwinServer(twin_world, flavor="v2", drift=[drift]).start()
    try:
        report, _, _ = _preflight(server, demo_cfg, tmp_path)
    finally:
        server.stop()
    expected = EXPECTED[drift]
    failed = report.failed()
    assert sorted(c.name for c in failed) == sorted(expected), [c.line() for c in failed]
    for check in failed:
        assert expected[check.name] in check.line() and "\n" not in check.line()
        assert "token is needed" not in check.line()
    assert all(c.status in (OK, SKIP, WARN) for c in report.checks if c.name not in expected)
    assert report.ok == (not expected)


@pytest.mark.parametrize("drift", [None, "terms_not_accepted"])
def test_record_then_replay_gives_the_same_report(twins, twin_world, demo_cfg, tmp_path, drift):
    record = tmp_path / "recording"
    server = twins["v1"] if drift is None else TwinServer(twin_world, flavor="v1", drift=[drift]).start()
    try:
        recorded, _, _ = _preflight(server, demo_cfg, tmp_path / "a", record)
    finally:
        if drift is not None:
            server.stop()
    assert recorded.ok == (drift is None)  # a refusal is recorded too (the 403 a response hook turns into a line)
    for path in record.rglob("*"):  # the token appears in no recorded file, nor any Authorization / cookie
        if path.is_file():
            data = path.read_bytes()
            assert TOKEN.encode() not in data, path
            assert b"Authorization" not in data and b"Cookie" not in data, path
    replay = ReplayServer(record).start()
    try:
        cfg = replay.config()
        ctx = BuildContext("demo", cfg, tmp_path / "b", tmp_path / "out")
        replayed = run_preflight(ctx, None, workers=32, echo=lambda s: None)
    finally:
        replay.stop()
    assert replay.misses == []
    assert cfg.server_address != server.url  # it really talked to the replay
    back = {new: old for old, new in replay.origins.items()}
    assert replayed.comparable(back) == recorded.comparable()


def test_replay_cli_refuses_a_directory_that_is_not_a_recording(tmp_path, tiny_configs):
    got = cli_in_process("twin", "--replay", str(tmp_path), config_dir=tiny_configs)
    assert got.returncode == 1 and "is not a recording" in got.stderr and "Traceback" not in got.stderr


def test_offline_is_one_line_naming_the_server(tmp_path):
    folder = tmp_path / "configs"
    folder.mkdir()
    fly = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "fly.yaml").read_text())
    fly["server_address"] = "https://cb2-preflight-offline.invalid"  # .invalid never resolves (RFC 2606)
    (folder / "fly.yaml").write_text(yaml.safe_dump(fly))
    got = cli_in_process("preflight", "--species", "fly", "--work", str(tmp_path / "work"), config_dir=folder)
    assert got.returncode == 1
    lines = got.stderr.strip().splitlines()
    assert len(lines) == 1 and "could not reach https://cb2-preflight-offline.invalid" in lines[0]
    assert "server_address in config/fly.yaml" in lines[0]


@pytest.mark.slow  # starts `python -m pipeline preflight` in a subprocess
def test_fly_without_network_is_one_line(tmp_path):
    """`make preflight SPECIES=fly` on this machine (no internet): the real config, one line naming the server."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HOME": str(tmp_path), "CAVE_TOKEN": "not-a-real-token"}
    env.pop("CB2_CONFIG_DIR", None)
    args = [sys.executable, "-m", "pipeline", "preflight", "--species", "fly", "--work", str(tmp_path)]
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env, cwd=repo)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not reach https://global.daf-apis.com (")
    assert lines[0].endswith("check network or server_address in config/fly.yaml")
    assert "not-a-real-token" not in proc.stderr


@pytest.mark.slow  # the command generates a demo world of its own beside the one given (pipeline/twin_build.py)
def test_cli_through_a_drifted_twin_exits_non_zero(twin_world, tmp_path, tiny_configs):
    got = cli_in_process("preflight", "--species", "demo", "--work", str(tmp_path / "work"), "--source", "twin",
                         "--twin-world", str(twin_world), "--twin-port", "0", "--twin-drift", "missing_table",
                         config_dir=tiny_configs)  # fmt: skip
    assert got.returncode == 1
    fails = [line for line in got.stdout.splitlines() if line.startswith(FAIL)]
    assert len(fails) == 1 and fails[0].startswith("FAIL table synapse_table")
    assert "preflight of demo FAILED: table synapse_table" in got.stderr


# ---------------------------------------------------------------- the bisection, without a server
@pytest.mark.parametrize(("limit", "start"), [(802, 767), (37, 767), (5000, 100), (1, 50)])
def test_largest_batch_brackets_the_limit(limit, start):
    asked: list[int] = []

    def accepts(n: int) -> bool:
        asked.append(n)
        return n <= limit

    probe = largest_batch(accepts, start, ceiling=4096, max_requests=12)
    assert probe.asked == len(asked) <= 12
    assert probe.largest_ok <= limit
    if limit >= 4096:
        assert probe.smallest_refused is None
    else:
        assert probe.smallest_refused is not None and probe.smallest_refused > limit
        assert probe.smallest_refused - probe.largest_ok <= max(1, probe.smallest_refused // 8)
    assert probe.trail == tuple((n, n <= limit) for n in asked)


def test_twin_cli_refuses_an_unknown_drift_in_one_line(tmp_path, tiny_configs):
    got = cli_in_process("twin", "--work", str(tmp_path), "--drift", "no_such_drift", config_dir=tiny_configs)
    assert got.returncode == 1
    assert got.stderr.strip().splitlines() == [got.stderr.strip()]
    assert "unknown drift no_such_drift" in got.stderr and "expired_version" in got.stderr


# ---------------------------------------------------------------- recording and replay, without a server
def test_redaction_of_urls_and_bodies():
    from pipeline.sources.transport import REDACTED, endpoint_of, redact_bytes, redact_url

    url = "https://h.org/a?middle_auth_token=abc123&x=1&note=sec-ret"
    got = redact_url(url, ["sec-ret"])
    assert "abc123" not in got and "sec-ret" not in got and f"middle_auth_token={REDACTED}" in got and "x=1" in got
    assert redact_bytes(b'{"t": "sec-ret"}', ["sec-ret"]) == b'{"t": "' + REDACTED.encode() + b'"}'
    assert endpoint_of("https://h/segmentation/api/v1/table/t/operation_details?x") == "operation_details"
    assert endpoint_of("https://storage.googleapis.com/b/em/4_4_40/0-64_0-64_0-64") == "bucket"


def test_replay_rewrites_every_recorded_origin_and_bucket_paths(tmp_path):
    import json as _json

    from pipeline.sources.transport import BODIES, EXCHANGES, digest

    fly = yaml.safe_load((Path(__file__).resolve().parents[2] / "config" / "fly.yaml").read_text())
    fly["em_cloudpath"] = "precomputed://gs://bucket/em"
    (tmp_path / BODIES).mkdir()
    info = _json.dumps({"data_dir": "gs://bucket/ws", "local": "https://global.daf-apis.com"}).encode()
    (tmp_path / BODIES / digest(info)).write_bytes(info)
    rows = [
        {"seq": 0, "method": "GET", "url": "https://global.daf-apis.com/info/api/v2/datastack/full/x",
         "endpoint": "info", "request_headers": {}, "request_body": "", "status": 200,
         "response_headers": {"Content-Type": "application/json"}, "response_body": digest(info),
         "response_bytes": len(info), "duration_ms": 1.0, "error": ""},
        {"seq": 1, "method": "GET", "url": "https://storage.googleapis.com/bucket/em/info", "endpoint": "bucket",
         "request_headers": {}, "request_body": "", "status": 404, "response_headers": {},
         "response_body": digest(b""), "response_bytes": 0, "duration_ms": 1.0, "error": ""},
    ]  # fmt: skip
    (tmp_path / EXCHANGES).write_text("".join(_json.dumps(r) + "\n" for r in rows))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(fly))
    replay = ReplayServer(tmp_path)
    try:
        cave, store = replay.origins["https://global.daf-apis.com"], replay.origins["https://storage.googleapis.com"]
        cfg = replay.config()
        assert cfg.server_address == cave and cfg.em_cloudpath == f"precomputed://{store}/bucket/em"
        assert cfg.seg_cloudpath.startswith("graphene://https://prod.flywire-daf.com")  # never recorded: untouched
        status, _, body = replay.answer("https://global.daf-apis.com", "GET", "/info/api/v2/datastack/full/x", b"")
        assert status == 200 and _json.loads(body) == {"data_dir": f"{store}/bucket/ws", "local": cave}
        assert replay.answer("https://global.daf-apis.com", "GET", "/not/recorded", b"")[0] == 404
        assert replay.misses == ["GET https://global.daf-apis.com/not/recorded"]
    finally:
        replay.stop()  # never started: only its sockets to close


def test_an_unexpected_exception_is_a_fail_with_its_traceback_kept(twins, demo_cfg, tmp_path, monkeypatch):
    from pipeline.preflight.checks import Preflight

    def broken(self):
        raise RuntimeError("a library's surprise")

    monkeypatch.setattr(Preflight, "level2_graph", broken)
    report, _, ctx = _preflight(twins["v2"], demo_cfg, tmp_path)
    assert [c.name for c in report.failed()] == ["level-2 graph"]
    assert "unexpected RuntimeError: a library's surprise" in report.check("level-2 graph").found
    assert "in broken" in report.tracebacks["level-2 graph"]  # the whole traceback, in the JSON report
    assert "level-2 graph" in report_path(ctx).read_text()
    assert report.check("mesh manifest").status == OK  # the other checks still ran
