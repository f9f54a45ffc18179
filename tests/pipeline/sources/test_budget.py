"""The build's one request budget per host: in flight (AIMD), paces after a rate limit, outages, slots as leases, and
one budget for every process of a build (a manager beside the build, for local worker processes and a cluster's)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest
import requests

from pipeline.sources import budget as budgets
from pipeline.sources.budget import (
    LIMITED,
    OK,
    OUTAGE_FAILS,
    TROUBLE,
    BudgetClient,
    HostBudget,
    HostDown,
    outcome_of,
)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _budget(max_in_flight: int = 4, deadline: float = 100.0) -> tuple[HostBudget, Clock]:
    clock = Clock()
    b = HostBudget(clock)
    b.configure("h", max_in_flight, None, deadline)
    return b, clock


def _grants(b: HostBudget, n: int) -> list[str]:
    return [b.acquire("h")[0] for _ in range(n)]


def test_requests_in_flight_to_a_host_are_bounded_and_the_bound_follows_aimd():
    """At most the limit in flight; trouble (timeouts, 502, 503, resets) halves it once per overloaded moment; each
    answer adds 1/limit back: additive increase, multiplicative decrease."""
    b, clock = _budget(8)
    assert _grants(b, 9) == ["go"] * 8 + ["wait"]
    for _ in range(8):  # a burst of timeouts from one overloaded moment halves it once
        b.release("h", TROUBLE, "/x")
    assert b.stats()["h"]["limit"] == 4 and b.stats()["h"]["decreases"] == 1
    clock.t += 2.0
    assert _grants(b, 5) == ["go"] * 4 + ["wait"]
    for _ in range(4):  # a later overloaded moment: halved again
        b.release("h", TROUBLE, "/y")
    assert b.stats()["h"]["limit"] == 2
    for _ in range(40):  # answers grow it back, one by one, never past the configured most
        assert b.acquire("h")[0] == "go"
        b.release("h", OK, "/z")
    stats = b.stats()["h"]
    assert stats["limit"] == 8 and stats["lowest_limit"] == 2 and stats["most_in_flight"] == 8


def test_faults_of_the_moment_among_many_answers_do_not_lower_the_bound():
    """A 502 or a reset now and then (one answer in 10) is no sign of load: only dense trouble halves the bound."""
    b, clock = _budget(8)
    for i in range(200):
        assert b.acquire("h")[0] == "go"
        clock.t += 0.1
        b.release("h", TROUBLE if i % 10 == 0 else OK, "/x")
    assert b.stats()["h"]["decreases"] == 0 and b.stats()["h"]["limit"] == 8


def test_answers_coming_late_lower_the_bound_before_any_timeout():
    """An overloaded server answers later and later before it times out: answers past half their read timeout,
    dense among the recent ones, halve the bound as timeouts would, and add nothing back."""
    b, clock = _budget(8)
    for _ in range(8):
        assert b.acquire("h")[0] == "go"
    for _ in range(8):
        clock.t += 0.1
        b.release("h", OK, "/x", late=True)
    stats = b.stats()["h"]
    assert stats["decreases"] == 1 and stats["limit"] == 4


def test_a_rate_limit_paces_every_request_of_the_endpoint_below_what_the_server_named():
    """After `6 per 2 second`, the endpoint's next request waits a whole window and the rest are spaced so that no
    2 s window holds more than 4 (0.8 x 6 - 1 a window: a fixed window may see one more, arrivals jitter); other
    endpoints of the host are not held."""
    b, clock = _budget()
    b.rate_limited("h", "query", 6, 2.0, "429 Too Many Requests: 6 per 2 second")
    times = []
    for _ in range(12):
        wait, version = b.reserve("h", "query")
        times.append(clock.t + wait)
    assert times[0] == pytest.approx(clock.t + 2.0)
    assert all(sum(1 for t in times if start <= t < start + 2.0) <= 4 for start in times)
    assert b.reserve("h", "roots")[0] == 0.0


def test_a_turn_reserved_before_the_endpoint_was_paced_is_reserved_again():
    b, _ = _budget()
    _, version = b.reserve("h", "query")
    b.rate_limited("h", "query", 10, 60.0, "429")
    assert b.acquire("h", "query", version)[0] == "repace"
    _, version = b.reserve("h", "query")
    assert b.acquire("h", "query", version)[0] == "go"


def test_a_host_that_fails_everything_is_paused_with_one_probe_then_resumed():
    """Failures in a row on several URLs with no answer for a while: the host is paused (one probe at a time, waits
    growing); the probe's answer resumes it and the outage is counted with its length."""
    b, clock = _budget()
    for i in range(OUTAGE_FAILS):
        assert b.acquire("h")[0] == "go"
        clock.t += 0.5
        note = b.release("h", TROUBLE, f"/path/{i}")
    assert note is not None and "pausing it" in note
    epoch, paused, _ = b.health("h")
    assert epoch == 1 and paused
    assert b.acquire("h")[0] == "wait"  # before the first probe's time
    clock.t += 1.0
    assert b.acquire("h")[0] == "probe" and b.acquire("h")[0] == "wait"  # one probe at a time
    b.release("h", TROUBLE, "/p", probe=True)
    clock.t += 1.5
    assert b.acquire("h")[0] == "wait"  # the wait doubled to 2 s
    clock.t += 0.5
    assert b.acquire("h")[0] == "probe"
    assert "answers again" in b.release("h", OK, "/p", probe=True)
    assert b.health("h")[:2] == (1, False) and _grants(b, 2) == ["go", "go"]
    assert b.stats()["h"]["outages"] == [pytest.approx(3.0)]  # paused at the 6th failure, back 3 s later


def test_one_item_failing_again_and_again_is_not_an_outage():
    b, clock = _budget()
    for _ in range(3 * OUTAGE_FAILS):
        b.acquire("h")
        clock.t += 1.0
        assert b.release("h", TROUBLE, "/segmentation/api/v1/root/7/lineage") is None
    assert b.health("h")[:2] == (0, False)


def test_past_the_deadline_the_requests_waiting_on_a_down_host_are_told_so():
    b, clock = _budget(deadline=30.0)
    for i in range(OUTAGE_FAILS):
        b.acquire("h")
        clock.t += 1.0
        b.release("h", TROUBLE, f"/{i}")
    clock.t += 31.0
    assert b.acquire("h")[0] == "probe"  # a probe still goes (the host may come back)
    verdict, seconds = b.acquire("h")
    assert verdict == "down" and seconds > 30.0
    client = BudgetClient(b, sleep=lambda s: None)
    with pytest.raises(HostDown, match="outage deadline"), client.slot("http://h/segmentation/x", "chunkedgraph"):
        pass


def test_what_an_answer_says_about_its_host():
    def resp(status: int, body: bytes = b"") -> requests.Response:
        r = requests.Response()
        r.status_code, r._content = status, body
        return r

    assert outcome_of(resp(200)) == OK and outcome_of(resp(404)) == OK
    assert outcome_of(resp(429)) == LIMITED
    assert outcome_of(resp(500, b'{"message": "429 Too Many Requests: 200 per 1 minute"}')) == LIMITED
    assert outcome_of(resp(502)) == TROUBLE and outcome_of(resp(504)) == TROUBLE
    assert outcome_of(resp(500, b'{"message": "KeyError"}')) == "error"


def _hold_slots(handle: budgets.BudgetHandle, n: int) -> list[str]:
    """In a worker process: take `n` slots of host h through the build's budget, keep them."""
    budgets.install(handle)
    return [budgets.current().call("acquire", "h", "", 0)[0] for _ in range(n)]


@pytest.mark.slow  # starts a manager and two worker processes
def test_local_worker_processes_share_one_budget():
    """The processes scheduler: a manager process serves the one budget; two worker processes asking 3 slots each
    of a host allowed 4 get 4 between them, and the build's own process sees them in flight."""
    with budgets.serve_budget("processes") as handle:
        budgets.install(handle)
        budgets.current().configure("h", 4, None, 60.0)
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(2, mp_context=spawn) as pool:
            got = [f.result(timeout=120) for f in [pool.submit(_hold_slots, handle, 3) for _ in range(2)]]
        assert sorted(v for g in got for v in g).count("go") == 4
        assert budgets.current().stats()["h"]["most_in_flight"] == 4
    assert budgets.current().stats() == {}  # after the build, the process's own budget again


@pytest.mark.slow  # a dask cluster of two worker processes
def test_a_dask_cluster_shares_one_budget_that_outlives_its_workers():
    """On a dask.distributed cluster the budget is served beside the build (a manager, not an actor on a worker):
    its workers share it, and losing every worker loses nothing of it."""
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    with cluster, distributed.Client(cluster) as client, budgets.serve_budget(cluster.scheduler_address) as h:
        assert h.kind == "manager" and h.address[0] == "127.0.0.1"
        budgets.install(h)
        budgets.current().configure("h", 4, None, 60.0)
        got = client.gather(client.map(_hold_slots, [h, h], [3, 3], pure=False))
        assert sorted(v for g in got for v in g).count("go") == 4
        client.restart()  # every worker process replaced
        assert budgets.current().stats()["h"]["most_in_flight"] == 4


def test_a_slot_whose_holder_died_comes_back_when_its_lease_ends():
    """A worker killed mid-request never releases its slot: the lease ends it, so lost workers never shrink the
    host's bound for good; a release after that frees nothing twice."""
    clock = Clock()
    b = HostBudget(clock)
    b.configure("h", 2, None, 60.0)
    assert b.acquire("h", "", 0, "dead-1", 10.0)[0] == "go"
    assert b.acquire("h", "", 0, "live", 100.0)[0] == "go"
    assert b.acquire("h", "", 0, "x", 10.0)[0] == "wait"
    clock.t += 11
    assert b.acquire("h", "", 0, "next", 10.0)[0] == "go"  # dead-1's slot, taken back
    assert b.acquire("h", "", 0, "more", 10.0)[0] == "wait"  # live still holds its own
    assert b.stats()["h"]["reclaimed"] == 1
    clock.t += 11  # next and more's leases end too; then a late release of next frees nothing
    b.release("h", OK, "/a", lease="next")
    assert b.acquire("h", "", 0, "a", 10.0)[0] == "go"
    assert b.acquire("h", "", 0, "b", 10.0)[0] == "wait"


def test_a_probe_whose_holder_died_lets_another_probe_go():
    clock = Clock()
    b = HostBudget(clock)
    b.configure("h", 4, None, 600.0)
    for i in range(OUTAGE_FAILS):
        assert b.acquire("h", "", 0, f"r{i}", 10.0)[0] == "go"
        clock.t += 1
        b.release("h", TROUBLE, f"/{i}", lease=f"r{i}")
    clock.t += 5
    assert b.acquire("h", "", 0, "probe-1", 10.0)[0] == "probe"
    assert b.acquire("h", "", 0, "p2", 10.0)[0] == "wait"
    clock.t += 11  # the probe's holder died
    assert b.acquire("h", "", 0, "probe-2", 10.0)[0] == "probe"


@pytest.mark.slow  # starts a manager process
def test_a_process_calls_the_budget_through_a_few_connections_whatever_its_threads():
    """A manager's proxy opens a connection per calling thread; cloud-files starts threads for every read. The calls
    of a process go through CONNECTIONS_PER_PROCESS threads, so threads that come and go open no connections."""
    import threading

    with budgets.serve_budget("processes") as handle:
        budgets.reset_local()
        budgets.install(handle)
        budgets.current().configure("h", 4, None, 60.0)
        for _ in range(5):  # waves of short-lived threads, as cloud-files makes them
            wave = [threading.Thread(target=lambda: budgets.current().stats()) for _ in range(20)]
            for t in wave:
                t.start()
            for t in wave:
                t.join()
        callers = [t for t in threading.enumerate() if t.name.startswith("cb2-budget")]
        assert 1 <= len(callers) <= budgets.CONNECTIONS_PER_PROCESS
        assert budgets.current().stats()["h"]["max_in_flight"] == 4


def test_a_budget_that_never_answers_turns_the_process_to_its_own(monkeypatch, caplog):
    """A connection the manager never serves (its backlog overflowed, or it is stuck) must not hold a worker for
    ever: past CALL_TIMEOUT_S the process goes on under its own budget, and says so once."""
    import socket

    monkeypatch.setattr(budgets, "CALL_TIMEOUT_S", 0.5)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts connections, never says a word: the handshake waits
    try:
        budgets.reset_local()
        handle = budgets.BudgetHandle("manager", address=silent.getsockname(), authkey=b"k" * 16)
        budgets.install(handle)
        with caplog.at_level("WARNING"):
            assert budgets.current().call("acquire", "h", "", 0)[0] == "go"  # the process's own budget
            assert budgets.current().call("acquire", "h", "", 0)[0] == "go"
        assert sum("did not answer" in r.message for r in caplog.records) == 1
        assert budgets.current().stats()["h"]["most_in_flight"] == 2
    finally:
        silent.close()
        budgets.reset_local()
