"""The adaptive request layer on a fake transport: bisection, sizes learned only on evidence, items isolated and
ledgered, the engine's wrapped rate limit, sends during an outage not counted."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import requests

from config.schema import CaveRequests
from core.errors import Unavailable
from pipeline.sources import adaptive
from pipeline.sources import budget as budgets
from pipeline.sources.adaptive import (
    GROW_AFTER,
    Adaptive,
    classify,
    rate_limit_of,
    retry_after_s,
    wrapped_status,
)
from pipeline.sources.retrying import with_retries

OPTS = CaveRequests(read_timeout_s={"default": 7.0})


def _response(status: int, headers: dict[str, str] | None = None, body: object = None) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp.headers.update(headers or {})
    if body is not None:
        resp._content = json.dumps(body).encode()
        resp.headers.setdefault("Content-Type", "application/json")
    resp.url = "http://h:1/materialize/api/v3/datastack/d/version/2/table/t/query"
    return resp


def _http_error(status: int, headers: dict[str, str] | None = None, body: object = None) -> requests.HTTPError:
    return requests.HTTPError(f"{status}", response=_response(status, headers, body))


FAILURES = {
    **{f"http_{s}": (lambda s=s: _http_error(s)) for s in (413, 414, 431, 502, 503, 504)},
    "timeout": lambda: requests.ReadTimeout("read timed out"),
    "reset": lambda: requests.ConnectionError("connection reset by peer"),
    "reset_mid_body": lambda: requests.exceptions.ChunkedEncodingError("IncompleteRead"),
}
DEFINITE = ("http_413", "http_414", "http_431")


class Server:
    """Answers batches of at most `limit` items with the items doubled; past it, raises `failure()`."""

    def __init__(self, limit: int, failure=lambda: _http_error(504)) -> None:  # noqa: ANN001
        self.limit, self.failure = limit, failure
        self.sent: list[list[int]] = []
        self.timeouts: list[float | None] = []

    def __call__(self, batch: list[int]) -> list[int]:
        self.sent.append(list(batch))
        self.timeouts.append(getattr(adaptive._SCOPE, "read_s", None))
        if len(batch) > self.limit:
            raise self.failure()
        return [2 * i for i in batch]


def _flat(pairs: list) -> list[int]:
    return [v for _, answer in pairs for v in answer]


class _Shares:
    """What a fake budget answers about the build's shared sizes: nothing learned yet."""

    def learned(self, url: str, endpoint: str) -> None:
        return None

    def learn(self, url: str, endpoint: str, size: int, ceiling: int | None) -> int:
        return 0


@pytest.fixture(autouse=True)
def fresh_budget():
    """Each test with a budget of its own (the process's is shared by every request of the process)."""
    yield budgets.reset_local()
    budgets.reset_local()


@pytest.mark.parametrize("name", sorted(FAILURES))
def test_a_batch_too_large_is_bisected_and_its_size_learned(name):
    """413/414/431 say "too large" every time: a ceiling at once. 502/503/504, timeouts and resets may also be a
    proxy's or an overloaded server's: they are learned from contrast (two failures at or above a size, an answer
    below it), which a real size limit gives at once: 20 and 10 fail, 5 answers."""
    layer = Adaptive(sleep=lambda s: None)
    server = Server(5, FAILURES[name])
    items = list(range(20))
    got = layer.run("h:1", "change_log", items, server, start=40, opts=OPTS, what="change logs")
    assert _flat(got) == [2 * i for i in items]  # every item answered once, in order
    if name in DEFINITE:  # a ceiling at once: the 10 waiting behind is cut at 5 unsent
        assert [len(b) for b in server.sent] == [20, 10, 5, 5, 5, 5]
    else:  # three failures in a row above 5, which answers: the evidence is complete at the third
        assert [len(b) for b in server.sent] == [20, 10, 5, 5, 10, 5, 5]
    counters = layer.take_counters()
    kind = {"timeout": "timeouts", "reset": "resets", "reset_mid_body": "resets"}.get(name, "refused")
    assert counters[kind] == counters["bisections"] == (2 if name in DEFINITE else 3)
    assert layer.size("h:1", "change_log", 40) == 5
    server.sent.clear()  # a new call starts at the learned size
    layer.run("h:1", "change_log", items, server, start=40, opts=OPTS, what="change logs")
    assert len(server.sent[0]) == 5


@pytest.mark.parametrize("name", ["timeout", "http_502", "http_504"])
def test_a_slow_or_busy_server_never_shrinks_the_batch(name):
    """Failures that do not follow size (every 7th request, whatever its size: an overloaded server) bisect their
    batch but leave the working size: a slow answer is not a size signal (it lowers concurrency, budget.py)."""
    layer = Adaptive(sleep=lambda s: None)
    count = {"n": 0}

    def send(batch: list[int]) -> list[int]:
        count["n"] += 1
        if count["n"] % 7 == 0:
            raise FAILURES[name]()
        return batch

    for _ in range(60):
        assert _flat(layer.run("h:1", "roots", list(range(64)), send, start=32, opts=OPTS, what="roots")) == list(
            range(64)
        )
    assert layer.size("h:1", "roots", 32) == 32


def test_faults_of_the_moment_on_batches_of_every_size_never_shrink_the_batch():
    """Segmentation cutouts ask roots for a few hundred to a few thousand supervoxels, always below the working size:
    a fault of the moment on one of them, then on another a little smaller, is not a size limit (the halves of each
    answered). Seen before: roots' size walked from 100,000 to 30 (1.4x the kind twin's requests)."""
    layer = Adaptive(sleep=lambda s: None)
    count = {"n": 0}

    def send(batch: list[int]) -> list[int]:
        count["n"] += 1
        if count["n"] % 13 == 0:
            raise FAILURES["http_502"]()
        return batch

    for k in range(200):
        n = 4000 - 17 * k  # each call a little smaller than the last
        assert len(_flat(layer.run("h:1", "roots", list(range(n)), send, start=100_000, opts=OPTS, what="r"))) == n
    assert layer.size("h:1", "roots", 100_000) == 100_000


def test_growth_finds_the_limit_exactly_and_then_stays_below_it():
    """A limit of 18 answered 504: learned below it, grown back to it and, after the sizes past it failed EVIDENCE
    times, asked past it again only once in FORGET_AFTER answers (a server's limit may change)."""
    layer = Adaptive(sleep=lambda s: None)
    server = Server(18, FAILURES["http_504"])
    for _ in range(60):
        layer.run("h:1", "l2cache", list(range(40)), server, start=64, opts=OPTS, what="l2")
    assert layer.size("h:1", "l2cache", 64) == 18
    server.sent.clear()
    for _ in range(20):
        layer.run("h:1", "l2cache", list(range(40)), server, start=64, opts=OPTS, what="l2")
    refused = [len(b) for b in server.sent if len(b) > 18]
    assert len(refused) <= adaptive.EVIDENCE and len(server.sent) <= 3 * 20 + 6  # one probe past it at most


def test_a_size_one_process_learned_is_where_every_other_process_of_the_build_starts(fresh_budget):
    """Worker processes share the build's budget: the limit one of them found costs the others no refusal."""
    first, second = Adaptive(sleep=lambda s: None), Adaptive(sleep=lambda s: None)
    server = Server(5, FAILURES["http_414"])
    first.run("h:1", "l2cache", list(range(20)), server, start=40, opts=OPTS, what="l2")
    server.sent.clear()
    got = second.run("h:1", "l2cache", list(range(20)), server, start=40, opts=OPTS, what="l2")
    assert _flat(got) == [2 * i for i in range(20)] and [len(b) for b in server.sent] == [5, 5, 5, 5]
    assert second.size("h:1", "l2cache", 40) == 5


def test_an_item_that_always_fails_is_isolated_and_unavailable_while_the_others_are_answered():
    """PyChunkedGraph answers 500 for every batch holding one bad root (pcgv1 edges_failsafe): the batch is bisected
    down to that root, which is sent `item_sends` times, then given up with its endpoint and the server's answer;
    the working size is untouched (a 500 is no size signal)."""
    layer = Adaptive(sleep=lambda s: None)
    sent = []

    def send(batch: list[int]) -> list[int]:
        sent.append(list(batch))
        if 7 in batch:
            raise _http_error(500, body={"code": 500, "message": "KeyError: 'added_edges'"})
        return batch

    failed: list = []
    got = layer.run("h:1", "change_log", list(range(16)), send, start=16, opts=OPTS, what="change logs", failed=failed)
    assert _flat(got) == [i for i in range(16) if i != 7]
    ((item, gone),) = failed
    assert item == 7 and isinstance(gone, Unavailable) and gone.reason == "change_log_unavailable"
    assert "HTTP 500 (KeyError: 'added_edges')" in str(gone) and "after 4 sends" in str(gone)
    assert sent.count([7]) == OPTS.item_sends
    assert layer.size("h:1", "change_log", 16) == 16
    counters = layer.take_counters()
    assert counters["unavailable"] == 1 and counters["server_errors"] == counters["bisections"] + OPTS.item_sends


@pytest.mark.parametrize("name", ["timeout", "http_500"])
def test_an_item_failing_first_in_a_large_batch_teaches_no_size(name):
    """A root whose lineage never answers in time (or that a 500 follows) at the head of a batch of 64 fails every
    batch of the bisection that holds it, each before any sibling answers: those failures are one item's (all
    nested around it), not a size limit; the size stays."""
    layer = Adaptive(sleep=lambda s: None)
    error = {"timeout": FAILURES["timeout"], "http_500": lambda: _http_error(500, body={"message": "KeyError"})}[name]

    def send(batch: list[int]) -> list[int]:
        if 0 in batch:
            raise error()
        return batch

    failed: list = []
    got = layer.run("h:1", "change_log", list(range(64)), send, start=64, opts=OPTS, what="c", failed=failed)
    assert _flat(got) == list(range(1, 64)) and [item for item, _ in failed] == [0]
    assert layer.size("h:1", "change_log", 64) == 64


def test_500s_of_two_bad_items_in_two_halves_teach_no_size():
    """A 500 is an item's (PyChunkedGraph's answer to an exception), never a size: two bad roots in both halves of a
    batch fail disjoint batches, which timeouts would count as evidence of a limit; 500s do not."""
    layer = Adaptive(sleep=lambda s: None)

    def send(batch: list[int]) -> list[int]:
        if 0 in batch or 40 in batch:
            raise _http_error(500, body={"message": "KeyError"})
        return batch

    failed: list = []
    layer.run("h:1", "change_log", list(range(64)), send, start=64, opts=OPTS, what="c", failed=failed)
    assert sorted(item for item, _ in failed) == [0, 40] and layer.size("h:1", "change_log", 64) == 64


def test_a_500_on_every_request_during_an_outage_spends_no_resends(monkeypatch):
    """A host that answers 500 to everything is down, not the item: while the budget has it paused, the item's 500s
    are not counted; it is answered once the host is back."""
    layer = Adaptive(sleep=lambda s: None)
    state = {"n": 0}

    class Budget(_Shares):
        def health(self, url: str) -> tuple[int, bool, bool]:
            return 1, state["n"] < 8, False

    monkeypatch.setattr(budgets, "current", lambda: Budget())

    def send(batch: list[int]) -> list[int]:
        state["n"] += 1
        if state["n"] < 8:
            raise _http_error(500, body={"message": "upstream down"})
        return batch

    assert _flat(layer.run("h:1", "manifest", [5], send, start=1, opts=OPTS, what="manifest")) == [5]


def test_without_a_failed_list_an_unavailable_item_raises_and_is_not_resent_by_the_retrying_wrapper():
    layer = Adaptive(sleep=lambda s: None)
    server = Server(0, FAILURES["http_502"])

    def call() -> list:
        return layer.run("h:1", "manifest", [3], server, start=1, opts=OPTS, what="mesh manifest of 3")

    with pytest.raises(Unavailable, match=r"mesh_unavailable: mesh manifest of 3: HTTP 502 .* single item \(3\)"):
        with_retries(call, attempts=5, sleep=lambda s: None)
    assert server.sent == [[3]] * OPTS.item_sends  # not x 5


def test_a_timed_out_item_is_resent_once_with_a_longer_wait_then_unavailable():
    layer = Adaptive(sleep=lambda s: None)
    server = Server(0, FAILURES["timeout"])
    with pytest.raises(Unavailable, match=r"level2_graph_unavailable: .*timeout .* single item \(7\) after 2 sends"):
        layer.run("h:1", "level2_graph", [7], server, start=1, opts=OPTS, what="level-2 graph")
    assert server.sent == [[7], [7]]
    assert server.timeouts == [7.0, 4 * 7.0]


def test_an_item_too_large_alone_is_not_resent():
    layer = Adaptive(sleep=lambda s: None)
    server = Server(0, FAILURES["http_414"])
    with pytest.raises(Unavailable, match="HTTP 414"):
        layer.run("h:1", "operation_details", [1], server, start=1, opts=OPTS, what="details")
    assert server.sent == [[1]]


def test_other_errors_propagate_untouched_and_a_500_wrapping_a_404_or_410_too():
    """A 404 is the caller's to name (a missing table); the engine wraps its 404 and 410 in a 500."""
    for error in (_http_error(404), _http_error(500, body={"message": "404 Not Found: table t not found"}),
                  _http_error(500, body={"message": "410 Gone: version 2 expired"})):  # fmt: skip
        layer = Adaptive(sleep=lambda s: None)
        server = Server(0, lambda error=error: error)
        with pytest.raises(requests.HTTPError):
            layer.run("h:1", "query", [1, 2], server, start=2, opts=OPTS, what="q")
        assert server.sent == [[1, 2]]


def test_growth_back_is_slow_and_never_straight_to_a_size_that_failed():
    layer = Adaptive(sleep=lambda s: None)
    server = Server(10, FAILURES["http_414"])
    layer.run("h:1", "l2cache", list(range(32)), server, start=64, opts=OPTS, what="l2")
    assert layer.size("h:1", "l2cache", 64) == 8  # 32 -> 16 -> 8
    server.limit = 64  # the server recovers
    server.sent.clear()
    for _ in range(8):
        layer.run("h:1", "l2cache", list(range(64)), server, start=64, opts=OPTS, what="l2")
    sizes = [len(b) for b in server.sent]
    assert sizes[: GROW_AFTER - 4] == [8] * (GROW_AFTER - 4)  # no growth before GROW_AFTER successes in a row
    assert max(sizes) <= 15  # 16 failed: growth stays below it (until it is forgotten)
    assert sorted(set(sizes) - {64 % s for s in sizes}) == [8, 10, 12, 15]  # a quarter more per step
    assert layer.size("h:1", "l2cache", 64) > 8


def test_the_size_grows_only_after_successes_in_a_row():
    """A failure between successes starts the count again: growth needs GROW_AFTER answers in a row at the size."""
    layer = Adaptive(sleep=lambda s: None)
    layer.run("h:1", "roots", list(range(32)), Server(8, FAILURES["http_414"]), start=32, opts=OPTS, what="r")
    assert layer.size("h:1", "roots", 32) == 8
    flaky = {"n": 0}

    def send(batch: list[int]) -> list[int]:
        flaky["n"] += 1
        if flaky["n"] % (GROW_AFTER - 1) == 1:  # the first, then every GROW_AFTER - 1 requests
            raise _http_error(502)
        return batch

    for _ in range(4 * GROW_AFTER):
        layer.run("h:1", "roots", list(range(8)), send, start=32, opts=OPTS, what="r")
    assert layer.size("h:1", "roots", 32) == 8  # never GROW_AFTER in a row
    for _ in range(GROW_AFTER):
        layer.run("h:1", "roots", list(range(8)), Server(64), start=32, opts=OPTS, what="r")
    assert layer.size("h:1", "roots", 32) == 10


def test_the_engines_rate_limit_inside_a_500_paces_the_endpoint_for_the_build_and_is_not_bisected(fresh_budget):
    """MaterializationEngine answers its flask-limiter 429 as `500 {"message": "429 Too Many Requests: 6 per 2
    second"}` with no Retry-After: the layer tells the build's budget, which holds every later request of that
    endpoint (every worker's) to its pace, the first one a whole window later; the batch is sent again whole."""
    layer = Adaptive(sleep=lambda s: None)
    answers = iter([_http_error(500, body={"message": "429 Too Many Requests: 6 per 2 second"}), None])
    sent = []

    def send(batch: list[int]) -> list[int]:
        sent.append(list(batch))
        err = next(answers)
        if err is not None:
            raise err
        return batch

    url = "http://h:1/materialize/api/v3/datastack/d/version/2/table/t/query"
    assert _flat(layer.run(url, "query", [1, 2, 3], send, start=3, opts=OPTS, what="q")) == [1, 2, 3]
    assert sent == [[1, 2, 3]] * 2
    counters = layer.take_counters()
    assert counters["rate_limited"] == 1 and counters["bisections"] == 0
    paced = fresh_budget.stats()["h:1"]
    assert paced["rate_limits"] == {"materialization_query": "429 Too Many Requests: 6 per 2 second"}
    assert paced["per_minute"]["materialization_query"] == pytest.approx(60 / (2 / (6 * 0.8 - 1)), rel=1e-3)


def test_sends_while_the_host_is_down_do_not_spend_the_items_resends(monkeypatch):
    """An outage is not the item's fault: failures met while the budget has the host paused are not counted."""
    layer = Adaptive(sleep=lambda s: None)
    paused = {"left": 10}

    class Budget(_Shares):
        def health(self, url: str) -> tuple[int, bool, bool]:
            paused["left"] -= 1
            return 1, paused["left"] >= 0, False

    monkeypatch.setattr(budgets, "current", lambda: Budget())
    answers = iter([*[FAILURES["reset"]()] * 10, None])

    def send(batch: list[int]) -> list[int]:
        err = next(answers)
        if err is not None:
            raise err
        return batch

    assert _flat(layer.run("h:1", "manifest", [5], send, start=1, opts=OPTS, what="manifest")) == [5]


def test_failures_that_an_outage_explains_teach_no_size(monkeypatch):
    """A host going down fails a batch and its half before the budget pauses it (as a size limit would); once it
    answers again, those failures are the outage's: the size stays."""
    layer = Adaptive(sleep=lambda s: None)
    state = {"sent": 0}

    class Budget(_Shares):  # paused from the third failure on, back (a new outage epoch) after the fifth request
        def health(self, url: str) -> tuple[int, bool, bool]:
            sent = state["sent"]
            return (1, False, False) if sent >= 5 else (0 if sent < 3 else 1, sent >= 3, False)

    monkeypatch.setattr(budgets, "current", lambda: Budget())

    def send(batch: list[int]) -> list[int]:
        state["sent"] += 1
        if state["sent"] < 5:
            raise FAILURES["reset"]()
        return batch

    assert _flat(layer.run("h:1", "roots", list(range(16)), send, start=16, opts=OPTS, what="roots")) == list(range(16))
    assert layer.size("h:1", "roots", 16) == 16


def test_a_batch_that_times_out_while_its_host_is_under_load_is_sent_whole_again_not_bisected(monkeypatch):
    """An overloaded server times out whatever it is asked: while the budget finds the host under load (its bound
    being halved), the batch goes again whole with the longer wait; bisecting would add requests exactly then, and
    the timeouts say nothing of the size."""
    layer = Adaptive(sleep=lambda s: None)

    class Budget(_Shares):
        def health(self, url: str) -> tuple[int, bool, bool]:
            return 0, False, True

    monkeypatch.setattr(budgets, "current", lambda: Budget())
    answers = iter([FAILURES["timeout"](), FAILURES["timeout"](), None])
    sent = []

    def send(batch: list[int]) -> list[int]:
        sent.append((len(batch), getattr(adaptive._SCOPE, "read_s", None)))
        err = next(answers)
        if err is not None:
            raise err
        return batch

    assert _flat(layer.run("h:1", "roots", list(range(40)), send, start=64, opts=OPTS, what="r")) == list(range(40))
    assert sent == [(40, 7.0), (40, 28.0), (40, 28.0)]
    assert layer.size("h:1", "roots", 64) == 64 and layer.take_counters()["bisections"] == 0


def test_a_size_limit_answered_504_is_learned_even_while_the_host_is_under_load(monkeypatch):
    """A 504 that comes back at once is the proxy refusing the batch, not a load symptom: under load too it is bisected
    and teaches the size (sent whole again, each neuron above the limit cost an extra request at scale)."""
    layer = Adaptive(sleep=lambda s: None)

    class Budget(_Shares):
        def health(self, url: str) -> tuple[int, bool, bool]:
            return 0, False, True

    monkeypatch.setattr(budgets, "current", lambda: Budget())
    server = Server(5, FAILURES["http_504"])
    layer.run("h:1", "l2cache", list(range(20)), server, start=40, opts=OPTS, what="l2")
    assert [len(b) for b in server.sent] == [20, 10, 5, 5, 10, 5, 5] and layer.size("h:1", "l2cache", 40) == 5


def test_parsing_what_the_servers_say():
    now = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc).timestamp()
    assert retry_after_s("120") == 120.0
    assert retry_after_s("Fri, 01 May 2026 12:00:30 GMT", now=lambda: now) == 30.0
    assert retry_after_s("Fri, 01 May 2026 11:00:00 GMT", now=lambda: now) == 0.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None
    failure = classify(_http_error(429, {"Retry-After": "Fri, 01 May 2026 12:00:05 GMT"}), now=lambda: now)
    assert failure is not None and failure.kind == "rate_limited" and failure.retry_after_s == 5.0
    assert rate_limit_of("429 Too Many Requests: 200 per 1 minute") == (200, 60.0)
    assert rate_limit_of("rate limit exceeded") == (None, None)
    assert wrapped_status(_response(500, body={"message": "410 Gone: expired"})) == 410
    assert wrapped_status(_response(500, body={"message": "KeyError: 3"})) is None
    assert classify(_http_error(500, body={"message": "KeyError: 3"})).kind == "server_error"
    assert classify(_http_error(500, body={"message": "429 Too Many Requests: 2 per 1 second"})).amount == 2


def test_counters_of_two_processes_merge_as_plain_stats():
    """Two processes' counters (`take_counters`: counts, each endpoint's size as a list) merge as any unit's stats
    (core/stats.py, what the runner does without importing a source): counts summed, each endpoint's sizes listed."""
    from core.stats import merge_stats

    a = {"refused": 2, "bisections": 1, "sizes": {"change_log": [12]}}
    b = {"refused": 1, "rate_limited": 4, "sizes": {"change_log": [6], "roots": [100]}}
    assert merge_stats(a, b) == {
        "refused": 3, "bisections": 1, "rate_limited": 4, "sizes": {"change_log": [12, 6], "roots": [100]}
    }  # fmt: skip
    assert set(Adaptive().take_counters()) == {*a, *b, "server_errors", "resets", "timeouts", "unavailable", "slow"}


def test_a_read_timeout_under_urllib3s_retry_is_a_timeout_not_a_reset():
    """With read retries off (CaveSource's sessions), requests reports a read timeout as a ConnectionError over
    urllib3's MaxRetryError: it must still count as a timeout (one unchanged resend, with a longer wait)."""
    import socket

    from urllib3.util.retry import Retry

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)  # accepts (the kernel does) and never answers
    port = server.getsockname()[1]
    session = requests.Session()
    session.mount("http://", adaptive.ScopedTimeoutAdapter((5.0, 0.2), max_retries=Retry(total=2, connect=2, read=0)))
    try:
        with pytest.raises(requests.RequestException) as caught:
            session.get(f"http://127.0.0.1:{port}/x")
    finally:
        server.close()
    failure = classify(caught.value)
    assert failure is not None and failure.kind == "timeout"
