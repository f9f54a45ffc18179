"""The adaptive request layer on a fake transport: bisection, learned sizes, resends, 429s, the in-flight bound."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from config.schema import CaveRequests
from pipeline.sources import adaptive
from pipeline.sources.adaptive import GROW_AFTER, Adaptive, ExhaustedRequest, classify, merge_counters, retry_after_s
from pipeline.sources.retrying import with_retries

OPTS = CaveRequests(read_timeout_s={"default": 7.0})


def _http_error(status: int, headers: dict[str, str] | None = None) -> requests.HTTPError:
    resp = requests.Response()
    resp.status_code = status
    resp.headers.update(headers or {})
    return requests.HTTPError(f"{status}", response=resp)


FAILURES = {
    **{f"http_{s}": (lambda s=s: _http_error(s)) for s in (413, 414, 431, 502, 503, 504)},
    "timeout": lambda: requests.ReadTimeout("read timed out"),
    "reset": lambda: requests.ConnectionError("connection reset by peer"),
    "reset_mid_body": lambda: requests.exceptions.ChunkedEncodingError("IncompleteRead"),
}


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


@pytest.mark.parametrize("name", sorted(FAILURES))
def test_a_refused_batch_is_bisected_and_the_size_remembered(name):
    layer = Adaptive(sleep=lambda s: None)
    server = Server(5, FAILURES[name])
    items = list(range(20))  # 4 batches of the learned size: fewer than GROW_AFTER, so no growth yet
    got = layer.run("h:1", "change_log", items, server, start=40, opts=OPTS, what="change logs")
    assert _flat(got) == [2 * i for i in items]  # every item answered once, in order
    assert [len(b) for b in server.sent[:3]] == [20, 10, 5]  # halves until one is answered
    # an answer that always means "too big" sets the size to the failed batch's half at once; an ambiguous one
    # (502, 503, a reset) halves the working size at most, so the next batch of 10 is tried and bisected once more
    size_signal = name in ("http_413", "http_414", "http_431", "http_504", "timeout")
    counters = layer.take_counters()
    if size_signal:
        assert [len(b) for b in server.sent[3:]] == [5, 5, 5]
        assert counters["bisections"] == 2  # 20 -> 10 -> 5; the half waiting behind is cut at 5 before sending
    else:
        # ambiguous (502, 503, a reset: pcgv1 drops an oversized request, or a fault of the moment): a second one
        # within GROW_AFTER successes halves the working size at most, so a size limit is learned over a few calls
        for _ in range(3):
            layer.run("h:1", "change_log", items, server, start=40, opts=OPTS, what="change logs")
        counters = merge_counters(counters, layer.take_counters())
    kind = {"timeout": "timeouts", "reset": "resets", "reset_mid_body": "resets"}.get(name, "refused")
    assert counters[kind] == counters["bisections"]
    learned = layer.size("h:1", "change_log", 40)
    # exactly the limit after a size signal; after ambiguous answers, around it (growth tries a quarter more, and a
    # 502 there bisects that batch without a ceiling)
    assert learned == 5 if size_signal else 3 <= learned <= 6
    # a new call starts at the learned size
    server.sent.clear()
    layer.run("h:1", "change_log", items, server, start=40, opts=OPTS, what="change logs")
    assert len(server.sent[0]) == learned


def test_sizes_are_per_host_and_endpoint():
    layer = Adaptive(sleep=lambda s: None)
    layer.run("a:1", "roots", list(range(8)), Server(2), start=16, opts=OPTS, what="roots")
    assert layer.size("a:1", "roots", 16) == 2
    assert layer.size("b:1", "roots", 16) == 16 and layer.size("a:1", "l2cache", 16) == 16


def test_a_timed_out_request_is_resent_unchanged_at_most_once_and_with_a_longer_wait():
    layer = Adaptive(sleep=lambda s: None)
    server = Server(0, FAILURES["timeout"])
    with pytest.raises(ExhaustedRequest, match=r"timeout .* single item \(7\) after 2 sends"):
        layer.run("h:1", "level2_graph", [7], server, start=1, opts=OPTS, what="level-2 graph")
    assert server.sent == [[7], [7]]
    assert server.timeouts == [7.0, 4 * 7.0]


def test_the_retrying_wrapper_does_not_resend_an_exhausted_request():
    layer = Adaptive(sleep=lambda s: None)
    server = Server(0, FAILURES["timeout"])

    def call() -> list:
        return layer.run("h:1", "manifest", [3], server, start=1, opts=OPTS, what="manifest")

    with pytest.raises(ExhaustedRequest):
        with_retries(call, attempts=5, sleep=lambda s: None)
    assert len(server.sent) == 2  # not 2 x 5


def test_a_single_item_5xx_is_resent_a_few_times_then_fails_with_its_reason():
    layer = Adaptive(sleep=lambda s: None)
    server = Server(0, FAILURES["http_502"])
    with pytest.raises(ExhaustedRequest, match=r"HTTP 502 .* single item"):
        layer.run("h:1", "manifest", [3], server, start=1, opts=OPTS, what="manifest")
    assert server.sent == [[3]] * adaptive.ONE_ITEM_TRIES
    flaky = iter([_http_error(502), None])

    def once_then_ok(batch: list[int]) -> list[int]:
        err = next(flaky)
        if err is not None:
            raise err
        return batch

    assert _flat(layer.run("h:1", "manifest", [3], once_then_ok, start=1, opts=OPTS, what="m")) == [3]


def test_a_single_item_too_large_is_not_resent():
    layer = Adaptive(sleep=lambda s: None)
    server = Server(0, FAILURES["http_414"])
    with pytest.raises(ExhaustedRequest, match="HTTP 414"):
        layer.run("h:1", "operation_details", [1], server, start=1, opts=OPTS, what="details")
    assert server.sent == [[1]]


def test_other_errors_propagate_untouched():
    layer = Adaptive(sleep=lambda s: None)
    server = Server(0, lambda: _http_error(404))
    with pytest.raises(requests.HTTPError):
        layer.run("h:1", "manifest", [1, 2], server, start=2, opts=OPTS, what="m")
    assert server.sent == [[1, 2]]


def test_growth_back_is_slow_and_never_straight_to_a_size_that_failed():
    layer = Adaptive(sleep=lambda s: None)
    server = Server(10)
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


def test_a_429_waits_what_retry_after_says_and_does_not_bisect():
    waits: list[float] = []
    layer = Adaptive(sleep=waits.append)
    answers = iter([_http_error(429, {"Retry-After": "3"}), _http_error(429), None])
    sent = []

    def send(batch: list[int]) -> list[int]:
        sent.append(list(batch))
        err = next(answers)
        if err is not None:
            raise err
        return batch

    assert _flat(layer.run("h:1", "query", [1, 2, 3], send, start=3, opts=OPTS, what="q")) == [1, 2, 3]
    assert sent == [[1, 2, 3]] * 3
    assert waits[0] == 3.0 and waits[1] > 0  # the header, then a backoff when there is none
    counters = layer.take_counters()
    assert counters["rate_limited"] == 2 and counters["bisections"] == 0


def test_retry_after_reads_seconds_and_http_dates():
    now = dt.datetime(2026, 5, 1, 12, 0, 0, tzinfo=dt.timezone.utc).timestamp()
    assert retry_after_s("120") == 120.0
    assert retry_after_s("Fri, 01 May 2026 12:00:30 GMT", now=lambda: now) == 30.0
    assert retry_after_s("Fri, 01 May 2026 11:00:00 GMT", now=lambda: now) == 0.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None
    failure = classify(_http_error(429, {"Retry-After": "Fri, 01 May 2026 12:00:05 GMT"}), now=lambda: now)
    assert failure is not None and failure.retry_after_s == 5.0


def test_in_flight_requests_per_host_are_bounded():
    layer = Adaptive(sleep=lambda s: None)
    opts = CaveRequests(max_in_flight_per_host=2)
    cond = threading.Condition()
    state = {"in": 0, "max": 0, "release": False}

    def send(batch: list[int]) -> list[int]:
        with cond:
            state["in"] += 1
            state["max"] = max(state["max"], state["in"])
            cond.notify_all()
            assert cond.wait_for(lambda: state["release"], timeout=60)
            state["in"] -= 1
        return batch

    with ThreadPoolExecutor(6) as pool:
        futures = [
            pool.submit(layer.run, "h:1", "query", [i], send, start=1, opts=opts, what="q") for i in range(6)
        ]
        with cond:
            assert cond.wait_for(lambda: state["in"] == 2, timeout=60)
        slot = layer._slot("h:1", 2)
        assert not slot.acquire(blocking=False)  # both slots are held by the two requests inside
        with cond:
            state["release"] = True
            cond.notify_all()
        assert sorted(_flat(f.result(timeout=60))[0] for f in futures) == list(range(6))
    assert state["max"] == 2


def test_counters_merge_across_processes():
    a = {"refused": 2, "bisections": 1, "sizes": {"change_log": [12]}}
    b = {"refused": 1, "rate_limited": 4, "sizes": {"change_log": [6], "roots": [100]}}
    assert merge_counters(a, b) == {
        "refused": 3, "bisections": 1, "rate_limited": 4, "sizes": {"change_log": [6, 12], "roots": [100]}
    }  # fmt: skip


def test_one_fault_of_the_moment_does_not_shrink_the_size_but_a_second_halves_it():
    """A 502 on the 2-item remainder of a call is bisected, and the working size of 16 stays; a second one within
    GROW_AFTER successes confirms it: the size halves (not to that small batch's half: a fault on a remainder says
    little of the size, and at scale such faults walked the level-2 cache's size down to 2)."""
    layer = Adaptive(sleep=lambda s: None)
    faults = {"left": 1}

    def send(batch: list[int]) -> list[int]:
        if len(batch) == 2 and faults["left"]:
            faults["left"] -= 1
            raise _http_error(502)
        return batch

    got = layer.run("h:1", "roots", list(range(18)), send, start=16, opts=OPTS, what="roots")
    assert _flat(got) == list(range(18))
    assert layer.size("h:1", "roots", 16) == 16
    faults["left"] = 1
    layer.run("h:1", "roots", list(range(2)), send, start=16, opts=OPTS, what="roots")
    assert layer.size("h:1", "roots", 16) == 8


def test_random_502s_do_not_walk_the_size_down():
    """Faults of the moment (a 502 on one request in 30, ~3% as the hostile twin's) bisect their batches but leave
    the working size alone; halving on each of them walks it down to 2 or 3 within 100 calls."""
    layer = Adaptive(sleep=lambda s: None)
    count = {"n": 0}

    def send(batch: list[int]) -> list[int]:
        count["n"] += 1
        if count["n"] % 30 == 0:
            raise _http_error(502)
        return batch

    for _ in range(100):
        got = layer.run("h:1", "l2cache", list(range(64)), send, start=64, opts=OPTS, what="l2")
        assert _flat(got) == list(range(64))
    assert count["n"] > 100 and layer.size("h:1", "l2cache", 64) == 64


def test_a_read_timeout_under_urllib3s_retry_is_a_timeout_not_a_reset(tmp_path):
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
