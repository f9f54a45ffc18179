"""The twin's own behaviour, pinned (issue 27), fast: its row cap, the hostile twin's hidden limits and the real
servers' fault shapes (issue 24), each seen as a client sees it: raw HTTP, caveclient where it shows the shape.

No demo world is generated here: the HTTP tests serve a small generated world (sim/twin/scale.py, ~40
neurons, built in about a second); the rest call the twin's pure functions. Nothing waits on the clock: rate windows
use a clock the test steps, queues and stalls are held on events, outages are waited for by condition.
"""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import requests

from sim.twin import TOKEN, TwinServer
from sim.twin import hostile as hostile_mod
from sim.twin.auth import LOGIN_PATH
from sim.twin.hostile import (
    CLIENT_FIRST_TIMEOUT_S,
    HOSTILE_OPTIONS,
    OVER_IN_FLIGHT,
    PROCESSES,
    UWSGI_BUFFER_BYTES,
    Hostility,
    hostile_options,
    service_time_s,
)
from sim.twin.http import Request
from sim.twin.info import DATASTACK, TABLE_ID
from sim.twin.items import STALL_S, ItemFaults, draw_items, proofread_roots
from sim.twin.materialization import run_query
from sim.twin.overload import Processes
from sim.twin.ratelimit import FixedWindows, RateLimitItem
from sim.twin.scale import ScaleParams, ScaleWorld
from tests.conftest import wait_until

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CG = f"/segmentation/api/v1/table/{TABLE_ID}"
MAT = f"/materialize/api/v3/datastack/{DATASTACK}"
SEEDS = (7, 11, 13, 29)


def only(*names: str) -> tuple[str, ...]:
    """hostile_off for a twin with just these options on."""
    return tuple(o for o in HOSTILE_OPTIONS if o not in names)


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> ScaleWorld:
    return ScaleWorld(tmp_path_factory.mktemp("small"), ScaleParams(neurons=40, synapses=500, other_roots=100, seed=3))


@pytest.fixture
def serve(small_world):
    """Start twins over the small world; every one is stopped after the test."""
    started: list[TwinServer] = []

    def start(**kwargs: object) -> TwinServer:
        server = TwinServer(small_world, **{"flavor": "v2", **kwargs}).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def _query(url: str, table: str = "synapses", version: int = 3, session=None) -> requests.Response:  # noqa: ANN001
    return (session or requests).post(f"{url}{MAT}/version/{version}/table/{table}/query", data="{}", headers=AUTH,
                                      timeout=10)  # fmt: skip


def _change_log(url: str, roots: list[int]) -> requests.Response:
    return requests.get(f"{url}{CG}/tabular_change_log_many", data=json.dumps({"root_ids": roots}), headers=AUTH,
                        timeout=10)  # fmt: skip


# ---------------------------------------------------------------------------------------------- the kind twin's cap
def test_a_querys_own_limit_never_raises_the_row_cap():
    """limit = min(request's, cap) (MaterializationEngine common.py): a request asking for more gets the cap and the
    Warning; one asking for fewer gets what it asked, warned too (its result has exactly `limit` rows)."""
    table = pa.table({"id": pa.array(range(20), pa.int64()), "valid": pa.array([True] * 20)})
    app = SimpleNamespace(limits=SimpleNamespace(row_cap=5))
    for asked, want in ((1000, 5), (6, 5), (3, 3), (None, 5)):
        data = {} if asked is None else {"limit": asked}
        rows, warnings, _ = run_query(app, table, "t", data, split=True)
        assert rows.num_rows == want, asked
        assert warnings == [f'201 - "Limited query to {want} rows'], asked
    app.limits.row_cap = 50
    rows, warnings, _ = run_query(app, table, "t", {"limit": 1000}, split=True)
    assert rows.num_rows == 20 and warnings == []  # under the cap: all rows, no warning


# ------------------------------------------------------------------------------------------------- options
def test_options_are_named_and_each_can_be_turned_off():
    assert set(hostile_options()) == set(HOSTILE_OPTIONS)
    assert hostile_options(["overload", "flaky"]) == frozenset(HOSTILE_OPTIONS) - {"overload", "flaky"}
    with pytest.raises(ValueError, match="unknown hostile option nope"):
        hostile_options(["nope"])


# ------------------------------------------------------------------------------------------------- hidden limits
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("flavor", ["v1", "v2"])
def test_each_hidden_limit_refuses_just_above_it_and_serves_at_it(seed, flavor, monkeypatch):
    monkeypatch.setattr(hostile_mod.time, "sleep", lambda s: None)  # the drawn latency and its slow tail
    h = Hostility(seed, flavor, 0.0, off=only("limits"))
    lim = h.limits

    def front(path: str, body: dict | None = None, url_bytes: int = 100, buffer_bytes: int = 500):  # noqa: ANN202
        req = Request("GET", path, {}, {}, json.dumps(body).encode() if body else b"")
        return h.front(req, url_bytes, buffer_bytes)

    log = f"{CG}/tabular_change_log_many"
    assert front(log, {"root_ids": list(range(lim.change_log_roots))}) is None
    assert front(log, {"root_ids": list(range(lim.change_log_roots + 1))}).status == 504
    l2 = f"/l2cache/api/v1/table/{TABLE_ID}/attributes"
    assert front(l2, {"l2_ids": list(range(lim.l2_ids))}) is None
    assert front(l2, {"l2_ids": list(range(lim.l2_ids + 1))}).status == 504
    details = f"{CG}/operation_details"
    if flavor == "v1":  # uWSGI's buffer: v1 only, its own paths only
        assert front(details, buffer_bytes=UWSGI_BUFFER_BYTES) is None
        assert front(details, buffer_bytes=UWSGI_BUFFER_BYTES + 1).status == 502
        assert front(f"{MAT}/versions", buffer_bytes=UWSGI_BUFFER_BYTES + 1) is None
    else:
        assert front(details, url_bytes=lim.url_bytes) is None
        assert front(details, url_bytes=lim.url_bytes + 1).status == 414
    windows = FixedWindows(clock=lambda: 0.0)
    item = lim.rate_item("query")
    assert all(windows.hit(("u", "q"), item) for _ in range(item.amount))
    assert not windows.hit(("u", "q"), item)  # one past the amount


def test_the_overload_tuning_keeps_3p_in_flight_within_the_first_timeout_and_32_past_it():
    """Answer time with N in flight is N x S / P (overload.py): at 3P it must stay well under the client's first
    timeout whatever P is drawn, at 32 well over it."""
    for p in range(PROCESSES[0], PROCESSES[1] + 1):
        s = service_time_s(p)
        assert 3 * p * s / p * 1.2 < 0.75 * CLIENT_FIRST_TIMEOUT_S, p  # +20% jitter, still a quarter below
        assert OVER_IN_FLIGHT * s / p * 0.8 > 1.15 * CLIENT_FIRST_TIMEOUT_S, p  # -20% jitter, still past it


# ------------------------------------------------------------------------------------------------- rate limit
def test_a_window_counts_refusals_after_the_first_limited_window_apart():
    now = [0.0]
    windows = FixedWindows(clock=lambda: now[0])
    item = RateLimitItem(2, 4)
    assert [windows.hit(("u", "e"), item) for _ in range(3)] == [True, True, False]
    assert windows.limited == 1 and windows.over_after_first == 0
    assert windows.hit(("other", "e"), item) and windows.hit(("u", "other"), item)  # per user and per endpoint
    now[0] = 4.0  # a new window: a client that slowed down stays within it
    assert windows.hit(("u", "e"), item) and windows.hit(("u", "e"), item)
    assert windows.over_after_first == 0
    assert not windows.hit(("u", "e"), item)  # ... one that did not is refused again, in a later window
    assert windows.limited == 2 and windows.over_after_first == 1
    assert str(item) == "2 per 4 second"


def test_the_rate_limit_counts_across_clients_and_answers_the_engines_wrapped_500(serve):
    from caveclient import CAVEclient

    twin = serve(hostile_seed=7, hostile_off=only("rate_limit", "wrapped_errors"))
    hostility = twin.app.hostility
    hostility.windows = FixedWindows(clock=lambda: 0.0)  # one window for the whole test
    item = hostility.limits.rate_item("query")
    a, b = requests.Session(), requests.Session()  # two clients, two connections, one user
    answers = [_query(twin.url, session=(a, b)[i % 2]) for i in range(item.amount + 2)]
    assert [r.status_code for r in answers] == [200] * item.amount + [500, 500]
    refused = answers[-1]
    assert refused.json()["message"] == f"429 Too Many Requests: {item.amount} per {item.window_s} second"
    assert not [k for k in refused.headers if k.lower() == "retry-after" or k.lower().startswith("x-ratelimit")]
    assert hostility.met["rate_limited"] == 2 and hostility.met["over_after_first"] == 0
    assert _query(twin.url, table="synapses", version=3).status_code == 500  # a third connection: the same count
    client = CAVEclient(DATASTACK, server_address=twin.url, auth_token=TOKEN)
    with pytest.raises(requests.HTTPError, match=r"^500 Server Error: 429 Too Many Requests: \d+ per \d+ second"):
        client.materialize.query_table("synapses", limit=5)


# ------------------------------------------------------------------------------------------------- wrapped errors
def test_the_engine_wraps_every_error_in_a_500_naming_it(serve):
    from caveclient import CAVEclient

    twin = serve(hostile_seed=7, hostile_off=only("wrapped_errors"))
    missing = _query(twin.url, table="nosuch")
    assert missing.status_code == 500
    assert missing.json()["message"] == f"404 Not Found: Analysis table 'nosuch' not found for version 3 in datastack {DATASTACK}"  # noqa: E501
    assert set(missing.json()) == {"code", "message", "traceback"} and missing.json()["code"] == 500
    assert _query(twin.url, version=9).json()["message"] == f"404 Not Found: version 9 not found in {DATASTACK}"
    gone = requests.get(f"{twin.url}/materialize/api/v2/datastack/{DATASTACK}/version/1/tables", headers=AUTH,
                        timeout=10)  # fmt: skip
    assert gone.status_code == 500
    assert gone.json()["message"] == "410 Gone: This materialization version is not available"
    expired = _query(twin.url, version=1)  # an expired version's database is gone: the engine's own exception
    assert expired.status_code == 500 and f"{DATASTACK}__mat1" in expired.json()["message"]
    client = CAVEclient(DATASTACK, server_address=twin.url, auth_token=TOKEN)
    with pytest.raises(requests.HTTPError, match=r"^500 Server Error: 404 Not Found: version 9 not found in "):
        client.materialize.query_table("synapses", materialization_version=9)
    # a missing table's metadata (what caveclient reads first) is returned by the engine, not raised: a plain 404
    with pytest.raises(requests.HTTPError, match=r"^404 Client Error: .*No table named .*nosuch"):
        client.materialize.query_table("nosuch", materialization_version=3)
    kind = serve(hostile_seed=7, hostile_off=only())  # without the option: today's statuses
    assert _query(kind.url, table="nosuch").status_code == 404 and _query(kind.url, version=1).status_code == 404


def test_pychunkedgraph_answers_a_bad_argument_500_with_its_body(serve):
    twin = serve(hostile_seed=7, hostile_off=only("server_errors_500"))
    resp = requests.get(f"{twin.url}{CG}/operation_details", params={"operation_ids": "not json"}, headers=AUTH,
                        timeout=10)  # fmt: skip
    assert resp.status_code == 500
    body = resp.json()
    assert set(body) == {"timestamp", "duration", "code", "message", "traceback"} and body["code"] == 500
    kind = serve(hostile_seed=7, hostile_off=only())
    assert requests.get(f"{kind.url}{CG}/operation_details", params={"operation_ids": "not json"}, headers=AUTH,
                        timeout=10).status_code == 400  # fmt: skip


# ------------------------------------------------------------------------------------------------- items
def test_items_are_distinct_proofread_roots_drawn_the_same_for_a_seed(small_world):
    roots = set(proofread_roots(small_world))
    drawn = {seed: draw_items(seed, small_world) for seed in SEEDS}
    assert draw_items(7, small_world) == drawn[7]
    for items in drawn.values():
        assert {"change_log_500", "change_log_timeout", "level2_graph_500"} <= set(items)
        assert set(items.values()) <= roots and len(set(items.values())) == len(items)
        assert small_world.change_log(items["change_log_500"], True)  # it has edits: its change log matters
        assert small_world.change_log(items["change_log_timeout"], True)
    assert drawn[7] != drawn[11]


def test_item_faults_hit_only_the_requests_holding_the_item():
    faults = ItemFaults({"change_log_500": 11, "change_log_timeout": 12, "manifest_500": 13, "level2_graph_500": 14},
                        0.0, lambda key: None)  # fmt: skip

    def req(path: str, roots: list[int] | None = None) -> Request:
        return Request("GET", path, {}, {}, json.dumps({"root_ids": roots}).encode() if roots is not None else b"")

    log = f"{CG}/tabular_change_log_many"
    assert faults.refuse(req(log, [1, 11, 2])).status == 500
    assert "removed_edges" in json.loads(faults.refuse(req(log, [11])).body)["message"]  # pcgv1's KeyError
    assert faults.refuse(req(log, [1, 2])) is None
    for path in (f"/meshing/api/v1/table/{TABLE_ID}/manifest/13:0", f"/meshing/1.0/{TABLE_ID}/manifest/13:0"):
        assert faults.refuse(req(path)).status == 500
    assert faults.refuse(req(f"/meshing/api/v1/table/{TABLE_ID}/manifest/131:0")) is None
    assert faults.refuse(req(f"{CG}/node/14/lvl2_graph")).status == 500
    assert faults.refuse(req(f"{CG}/node/13/lvl2_graph")) is None
    held: list[float] = []
    faults.sleep = held.append
    assert faults.stall(req(log, [1, 2])) is None and held == []
    assert faults.stall(req(log, [12, 1])).status == 504 and held == [STALL_S]
    assert STALL_S > 4 * CLIENT_FIRST_TIMEOUT_S  # past the first wait and the one 4x resend, each on its own


def test_item_faults_over_http(serve):
    twin = serve(hostile_seed=7, hostile_off=only("item_faults"))
    items = twin.app.hostility.items
    others = [r for r in proofread_roots(twin.world) if r not in items.values()][:3]
    assert _change_log(twin.url, others + [items["change_log_500"]]).status_code == 500
    assert _change_log(twin.url, others).status_code == 200
    bad = requests.get(f"{twin.url}{CG}/node/{items['level2_graph_500']}/lvl2_graph", headers=AUTH, timeout=10)
    good = requests.get(f"{twin.url}{CG}/node/{others[0]}/lvl2_graph", headers=AUTH, timeout=10)
    assert (bad.status_code, good.status_code) == (500, 200)
    assert twin.app.hostility.met["item_500"] == 2


# ------------------------------------------------------------------------------------------------- auth
def test_no_token_is_redirected_to_a_login_page_a_bad_header_is_401(serve):
    from caveclient import CAVEclient
    from caveclient.base import AuthException

    twin = serve(hostile_seed=7, hostile_off=only("auth_redirect"))
    info = f"{twin.url}/info/api/v2/datastack/full/{DATASTACK}"
    moved = requests.get(info, timeout=10, allow_redirects=False)
    assert moved.status_code == 302
    assert moved.headers["Location"] == (
        f"{twin.url}{LOGIN_PATH}?redirect=http%3A//127.0.0.1%3A{twin.port}/info/api/v2/datastack/full/{DATASTACK}"
    )
    page = requests.get(info, timeout=10)
    assert page.status_code == 200 and page.history and page.headers["Content-Type"].startswith("text/html")
    with pytest.raises(json.JSONDecodeError):
        page.json()
    bad = requests.get(info, headers={"Authorization": "Bearer wrong"}, timeout=10)
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_token" and "WWW-Authenticate" in bad.headers
    assert requests.get(info, headers=AUTH, timeout=10).status_code == 200
    assert requests.get(info, cookies={"middle_auth_token": TOKEN}, timeout=10).status_code == 200
    assert requests.get(f"{twin.url}/ws/info", timeout=10).status_code == 200  # public buckets: no auth
    with pytest.raises(AuthException):  # caveclient sees the login page came through a redirect
        CAVEclient(DATASTACK, server_address=twin.url, auth_token=None)
    assert twin.app.hostility.met["redirected"] >= 2


# ------------------------------------------------------------------------------------------------- overload
def test_at_most_p_requests_are_served_at_once_the_others_wait_their_turn():
    gates = {i: threading.Event() for i in range(5)}  # request i holds its process until its gate opens
    entered: list[int] = []

    def hold(_: float) -> None:
        i = int(threading.current_thread().name)
        entered.append(i)
        gates[i].wait()

    procs = Processes(2, 1.0, sleep=hold)

    def request() -> None:
        with procs.serve():
            pass

    threads = [threading.Thread(target=request, name=str(i)) for i in range(5)]
    for i, t in enumerate(threads):  # one by one, so that the arrival order is known
        t.start()
        wait_until(lambda i=i: procs.met["max_in_flight"] == i + 1, "the request to arrive", timeout=10)
    assert entered == [0, 1] and procs.met["queued"] == 3  # two hold a process, three wait
    for done, then in ((1, [0, 1, 2]), (0, [0, 1, 2, 3]), (2, [0, 1, 2, 3, 4])):
        gates[done].set()  # a process is freed: the longest waiting request gets it, never a later one
        wait_until(lambda then=then: entered == then, f"request {then[-1]} to be served", timeout=10)
    for gate in gates.values():
        gate.set()
    for t in threads:
        t.join(timeout=10)


def test_32_requests_in_flight_meet_the_first_timeout(serve):
    twin = serve(hostile_seed=7, hostile_off=only("overload"))
    procs = twin.app.hostility.processes
    outcomes: list[str] = []

    def ask() -> None:
        try:
            requests.get(f"{twin.url}{CG}/oldest_timestamp", headers=AUTH, timeout=CLIENT_FIRST_TIMEOUT_S)
            outcomes.append("ok")
        except requests.exceptions.Timeout:
            outcomes.append("timeout")

    threads = [threading.Thread(target=ask) for _ in range(OVER_IN_FLIGHT)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == OVER_IN_FLIGHT and outcomes.count("timeout") >= 1, outcomes
    wait_until(lambda: twin.log.wait_idle(0.0), "the twin to finish the abandoned requests", timeout=60)
    met = twin.app.hostility.met
    assert met["queued"] > 0 and met["max_in_flight"] > procs.n and met["max_wait_ms"] > 0


# ------------------------------------------------------------------------------------------------- outage
def test_an_outage_refuses_then_serves_again_on_the_same_port(serve):
    twin = serve()
    session = requests.Session()
    assert session.get(f"{twin.url}/ws/info", timeout=10).status_code == 200  # a kept-alive connection
    twin.go_down(600.0)  # down until the test says it is back (come_back): nothing here depends on the clock
    assert twin.down
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{twin.url}/ws/info", timeout=10)
    with pytest.raises(requests.ConnectionError):
        session.get(f"{twin.url}/ws/info", timeout=10)
    twin.come_back()
    wait_until(lambda: not twin.down, "the twin to be back", timeout=30)
    assert requests.get(f"{twin.url}/ws/info", timeout=10).status_code == 200 and twin.outages == 1


def test_the_outage_option_takes_the_twin_down_at_its_request(serve):
    twin = serve(outage=(3, 600.0))
    assert [requests.get(f"{twin.url}/ws/info", timeout=10).status_code for _ in range(2)] == [200, 200]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{twin.url}/ws/info", timeout=10)  # the 3rd: its connection goes down with the twin
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{twin.url}/ws/info", timeout=10)  # and the twin stays down
    twin.come_back()
    wait_until(lambda: not twin.down, "the twin to be back", timeout=30)
    assert requests.get(f"{twin.url}/ws/info", timeout=10).status_code == 200 and twin.outages == 1
    with pytest.raises(ValueError):
        TwinServer(twin.world, outage=(0, 1.0))


def test_hidden_limits_are_deterministic_per_seed():
    assert hostile_mod.HiddenLimits.draw(7) == hostile_mod.HiddenLimits.draw(7)
    assert np.unique([hostile_mod.HiddenLimits.draw(s).processes for s in range(40)]).size > 1
