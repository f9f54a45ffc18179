"""One request budget per host for the whole build: requests in flight, requests per minute, and outages.

Why one for the whole build: the servers are shared and their limits are per user, not per process. The
materialization engine counts a user's queries across all of that user's processes (flask-limiter through redis);
PyChunkedGraph's 64 uWSGI processes serve everyone. A bound per worker process multiplies by the workers, and a
process that backs off alone leaves the others hammering. So every HTTP request of every worker goes through one
`HostBudget` (`BudgetedAdapter.send`, below the clients' sessions and cloud-files'), held once per build:

- in flight: per host, at most `limit` requests at once. The limit starts at the config's `max_in_flight_per_host`,
  halves when timeouts, 502s, 503s, 504s, resets, refused connections or late answers (past half their read
  timeout: the server's queue filling up, before its timeouts come) come dense (`TROUBLE_DENSE` of the last
  `TROUBLE_WINDOW` answers; at most once per `DECREASE_EVERY_S`: one overloaded moment times out many requests at
  once, and a fault of the moment among many answers is no sign of load), and grows by one per `limit` answers
  (additive increase, multiplicative decrease, as TCP does): the build finds how much concurrency a server takes;
- per minute: a host's configured pace (`requests_per_minute_per_host`), and a pace per endpoint after a server said
  it is rate limited with numbers (`rate_limited`: below the amount per window the server named; a bare 429 holds the
  endpoint for its Retry-After or the configured wait); each request reserves its turn;
- batch sizes: what one process learned of an endpoint's size limit (adaptive.py) every other starts from
  (`learned`, `learn`), so that a limit costs its refusals once per build, not once per worker process;
- outages: when the requests to a host fail in a row (`OUTAGE_FAILS` of them, on at least `OUTAGE_TARGETS` different
  URLs: one item failing again and again is not an outage) with no answer for `OUTAGE_QUIET_S`, the host is paused:
  one probe request at a time, waits growing from 1 to 60 s, until a probe is answered or the deadline
  (`outage_deadline_s`) passes; then the requests waiting on it are told the host is down. Requests that fail while
  the host is paused do not spend their item's resends (adaptive.py asks `health`).

Where the one budget lives (`BudgetHandle`): in the process for the threads and sync schedulers; else in a
`multiprocessing` manager beside the build's main process, served on 127.0.0.1 to local worker processes and, for a
`dask.distributed` scheduler, on this machine's address towards the scheduler to the cluster's workers (not in a
dask actor: an actor dies with its worker). `HostBudget`'s methods never block (a manager's calls must not hold its
thread): they answer "go", "wait N s" or "down", and `BudgetClient` sleeps. Every slot is a lease: a worker killed
mid-request never gives its slots back, so they come back when their lease ends.
No output depends on any of this: it decides when a request is sent, never what it asks.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import socket
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.managers import BaseManager
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from pipeline.sources.transport import endpoint_of

log = logging.getLogger(__name__)

DECREASE_EVERY_S = 1.0  # one halving per overloaded moment, not one per request it timed out
TROUBLE_WINDOW = 20  # the last answers of a host that say whether trouble is dense ...
TROUBLE_DENSE = 4  # ... when at least this many of them were trouble
TROUBLED_FOR_S = 5.0  # a host whose bound was halved this recently is still under load
# a slot's lease: LEASE_FACTOR x the request's connect + read timeouts + LEASE_MARGIN_S (a live request releases it
# long before: requests bounds each read by the read timeout; a slow body past that is rare and costs only one slot
# over the bound for a while); a request with no timeout holds it LEASE_UNBOUNDED_S
LEASE_FACTOR = 2.0
LEASE_MARGIN_S = 30.0
LEASE_UNBOUNDED_S = 3600.0
CONNECTIONS_PER_PROCESS = 4  # a worker process's connections to the build's budget (_PooledCalls)
CALL_TIMEOUT_S = 120.0  # a budget call unanswered this long: the process goes on under its own budget
LATE_FRACTION = 0.5  # an answer slower than this share of its read timeout: the host is filling up
OUTAGE_FAILS = 6  # failures in a row to one host ...
OUTAGE_TARGETS = 3  # ... on this many different URLs ...
OUTAGE_QUIET_S = 2.0  # ... and no answer from it for this long: the host is down, not an item
PROBE_FIRST_S = 1.0
PROBE_MAX_S = 60.0
POLL_S = 0.05  # a request waiting for a slot asks again this often (an answer frees one)
# pace at this share of the amount per window a server named, less one (a fixed window may see one more than the
# pace gives, and requests' arrival jitters): 200 per minute -> 159, 6 per 2 s -> 3.8
RATE_MARGIN = 0.8
DEFAULT_MAX_IN_FLIGHT = 16
DEFAULT_DEADLINE_S = 1800.0

# what an answer says about the host (BudgetedAdapter.send classifies; adaptive.py reads the same answers for items)
OK, TROUBLE, ERROR, LIMITED = "ok", "trouble", "error", "limited"
RATE_LIMIT_TEXT = b"429 Too Many Requests"  # werkzeug's text for a 429, inside the engine's 500 (adaptive.py)


class HostDown(Exception):
    """The host failed every request for longer than its outage deadline."""

    def __init__(self, host: str, seconds: float) -> None:
        super().__init__(f"{host} answered nothing for {seconds:.0f} s (outage deadline)")
        self.host = host
        self.seconds = seconds


@dataclass
class _Host:
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    deadline_s: float = DEFAULT_DEADLINE_S
    per_minute: float | None = None
    limit: float = float(DEFAULT_MAX_IN_FLIGHT)
    in_flight: int = 0
    most_in_flight: int = 0
    lowest_limit: float = float(DEFAULT_MAX_IN_FLIGHT)
    decreases: int = 0
    decrease_at: float = float("-inf")
    recent: deque = field(default_factory=lambda: deque(maxlen=TROUBLE_WINDOW))  # True: trouble
    # outage
    fails_in_row: int = 0
    failed_targets: set[str] = field(default_factory=set)
    last_answer: float = 0.0
    opened_at: float | None = None
    probe_at: float = 0.0
    probe_wait: float = PROBE_FIRST_S
    probing: bool = False
    epoch: int = 0  # outages begun so far
    outages: list[tuple[float, float]] = field(default_factory=list)  # (began, lasted) of each ended outage
    down: bool = False
    # slots held, by lease: a lease expires when its holder is gone (a worker killed mid-request never releases)
    leases: dict[str, tuple[float, bool]] = field(default_factory=dict)  # lease -> (expires at, is the probe)
    reclaimed: int = 0  # leases taken back after they expired


class HostBudget:
    """The build's one budget (see the module docstring). Thread-safe; no method blocks."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._hosts: dict[str, _Host] = {}
        self._next_at: dict[tuple[str, str], float] = {}  # (host, endpoint or "*") -> earliest next send
        self._pace: dict[tuple[str, str], float] = {}  # (host, endpoint or "*") -> seconds between sends
        self._rate_limits: dict[tuple[str, str], str] = {}  # (host, endpoint) -> the limit the server named
        self._pace_version: dict[tuple[str, str], int] = {}  # (host, endpoint) -> paces set so far
        self._learned: dict[tuple[str, str], tuple[int, int, int | None]] = {}  # (host, endpoint) -> learn()

    def _host(self, host: str) -> _Host:
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _Host(last_answer=self._clock())
        return state

    def configure(self, host: str, max_in_flight: int, per_minute: float | None, deadline_s: float) -> None:
        """A species' settings for `host` (the most cautious of every species' that uses it wins)."""
        with self._lock:
            fresh = host not in self._hosts
            h = self._host(host)
            h.max_in_flight = max_in_flight if fresh else min(h.max_in_flight, max_in_flight)
            h.limit = min(h.limit, float(h.max_in_flight)) if not fresh else float(max_in_flight)
            h.lowest_limit = min(h.lowest_limit, h.limit)
            h.deadline_s = deadline_s if fresh else min(h.deadline_s, deadline_s)
            if per_minute is not None:
                h.per_minute = per_minute if h.per_minute is None else min(h.per_minute, per_minute)
                self._pace[(host, "*")] = 60.0 / h.per_minute

    # -------------------------------------------------------------- pacing
    def reserve(self, host: str, endpoint: str) -> tuple[float, int]:
        """This request's turn under the host's and the endpoint's pace: (seconds to wait before sending, the
        endpoint's pace version: a slot asked for under an older one is refused, `acquire`)."""
        with self._lock:
            now = self._clock()
            at = now
            for key in ((host, "*"), (host, endpoint)):
                if key in self._pace:
                    at = max(at, self._next_at.get(key, now))
            for key in ((host, "*"), (host, endpoint)):
                if key in self._pace:
                    self._next_at[key] = at + self._pace[key]
            return max(0.0, at - now), self._pace_version.get((host, endpoint), 0)

    def rate_limited(self, host: str, endpoint: str, amount: int | None, window_s: float | None, named: str) -> None:
        """The server said `endpoint` on `host` is rate limited (`amount` per `window_s`, when it named them): from
        now on every request of the build to it is paced below that, the first after a whole window."""
        with self._lock:
            now = self._clock()
            self._host(host)
            key = (host, endpoint)
            if amount and window_s:  # the limit named: every request of the build paced below it
                self._pace[key] = max(self._pace.get(key, 0.0), window_s / max(1.0, amount * RATE_MARGIN - 1))
            else:  # no numbers (a proxy's 429): the endpoint held for the wait, its pace unchanged
                self._pace.setdefault(key, 0.0)
            self._next_at[key] = max(self._next_at.get(key, now), now + (window_s or 0.0))
            self._rate_limits[key] = named
            self._pace_version[key] = self._pace_version.get(key, 0) + 1

    # -------------------------------------------------------------- in flight and outages
    def acquire(
        self, host: str, endpoint: str = "", version: int = 0, lease: str = "", hold_s: float = float("inf")
    ) -> tuple[str, float]:
        """("go", 0) with a slot taken, ("probe", 0) with the paused host's one probe slot taken, ("wait", seconds)
        to ask again, ("repace", 0) when the endpoint was paced since the request's turn was reserved (reserve
        again), or ("down", seconds failing) past the outage deadline. A slot taken under `lease` (a name unique to
        the request) is the holder's for `hold_s` seconds at most: a slot whose holder died (a worker killed
        mid-request) is taken back then, so that lost workers never shrink the host's bound for good."""
        with self._lock:
            now = self._clock()
            h = self._host(host)
            self._reclaim(h, now)
            if self._pace_version.get((host, endpoint), 0) != version:
                return "repace", 0.0
            if h.opened_at is not None:
                failing = now - h.opened_at
                if failing > h.deadline_s:
                    h.down = True
                if h.probing or now < h.probe_at:
                    if h.down:
                        return "down", failing
                    return "wait", max(POLL_S, h.probe_at - now) if not h.probing else PROBE_FIRST_S
                h.probing = True  # this request is the probe: the host's only one until it is answered
                h.in_flight += 1
                if lease:
                    h.leases[lease] = (now + hold_s, True)
                return "probe", 0.0
            if h.in_flight >= max(1, int(h.limit)):
                return "wait", POLL_S
            h.in_flight += 1
            h.most_in_flight = max(h.most_in_flight, h.in_flight)
            if lease:
                h.leases[lease] = (now + hold_s, False)
            return "go", 0.0

    @staticmethod
    def _reclaim(h: _Host, now: float) -> None:
        """Take back the slots whose leases expired (their holders are gone: nothing will release them)."""
        expired = [k for k, (until, _) in h.leases.items() if until <= now]
        for key in expired:
            _, was_probe = h.leases.pop(key)
            h.in_flight = max(0, h.in_flight - 1)
            h.reclaimed += 1
            if was_probe:
                h.probing = False

    def release(
        self, host: str, outcome: str, target: str = "", probe: bool = False, late: bool = False, lease: str = ""
    ) -> str | None:
        """The answer to a request that had a slot (`probe`: the paused host's probe; `late`: answered, but after more
        than LATE_FRACTION of its read timeout: the host is filling up, and counts as trouble for the bound before the
        timeouts come; `lease`: the name it was taken under). Returns a line to log when it changed the host's state."""
        with self._lock:
            now = self._clock()
            h = self._host(host)
            if lease and h.leases.pop(lease, None) is None:
                return None  # its slot was taken back already (the request outlived its lease): nothing to free
            h.in_flight = max(0, h.in_flight - 1)
            if probe:
                h.probing = False
            was_probe = probe and h.opened_at is not None
            h.recent.append(outcome == TROUBLE or late)
            if outcome in (OK, LIMITED):  # an answer: the host is there
                h.last_answer = now
                h.fails_in_row = 0
                h.failed_targets.clear()
                if outcome == OK and not late:
                    h.limit = min(float(h.max_in_flight), h.limit + 1.0 / max(1.0, h.limit))
                elif late:
                    self._decrease(h, now)
                if h.opened_at is not None:
                    lasted = now - h.opened_at
                    h.outages.append((h.opened_at, lasted))
                    h.opened_at, h.down, h.probe_wait = None, False, PROBE_FIRST_S
                    return f"{host} answers again after {lasted:.0f} s: resuming its requests"
                return None
            h.fails_in_row += 1
            if len(h.failed_targets) < OUTAGE_TARGETS:
                h.failed_targets.add(target)
            if outcome == TROUBLE:
                self._decrease(h, now)
            if h.opened_at is not None:
                if was_probe:
                    h.probe_wait = min(PROBE_MAX_S, 2 * h.probe_wait)
                    h.probe_at = now + h.probe_wait
                return None
            quiet = now - h.last_answer
            if h.fails_in_row >= OUTAGE_FAILS and len(h.failed_targets) >= OUTAGE_TARGETS and quiet >= OUTAGE_QUIET_S:
                h.opened_at, h.probe_at, h.probe_wait = now, now + PROBE_FIRST_S, PROBE_FIRST_S
                h.epoch += 1
                return (
                    f"{host}: {h.fails_in_row} requests in a row failed and nothing answered for {quiet:.0f} s: "
                    f"pausing it (one probe at a time, waits 1-60 s, for up to {h.deadline_s:.0f} s)"
                )
            return None

    @staticmethod
    def _decrease(h: _Host, now: float) -> None:
        """Halve the host's bound when trouble is dense among its recent answers (once per DECREASE_EVERY_S)."""
        if sum(h.recent) >= TROUBLE_DENSE and now >= h.decrease_at + DECREASE_EVERY_S and h.opened_at is None:
            h.limit = max(1.0, h.limit / 2)
            h.lowest_limit = min(h.lowest_limit, h.limit)
            h.decreases += 1
            h.decrease_at = now
            h.recent.clear()  # the next halving needs trouble after this one

    def health(self, host: str) -> tuple[int, bool, bool]:
        """(outages begun on `host` so far, whether one is going on, whether it is troubled: trouble dense among its
        recent answers, or its bound halved lately). A failure met while the epoch moved or an outage is on is the
        host's, not the item's; one met while the host is troubled is its load's, not the batch's size."""
        with self._lock:
            h = self._host(host)
            troubled = sum(h.recent) >= TROUBLE_DENSE or self._clock() - h.decrease_at < TROUBLED_FOR_S
            return h.epoch, h.opened_at is not None, troubled

    def learned(self, host: str, endpoint: str) -> tuple[int, int, int | None] | None:
        """(version, batch size, ceiling) that some process of the build learned last for `endpoint` on `host`, or
        None: every process starts a call from it, so that a limit is found once per build, not once per worker."""
        with self._lock:
            return self._learned.get((host, endpoint))

    def learn(self, host: str, endpoint: str, size: int, ceiling: int | None) -> int:
        """A process's batch size (and ceiling) for `endpoint` after a call that changed it; returns its version."""
        with self._lock:
            version = (self._learned.get((host, endpoint)) or (0,))[0] + 1
            self._learned[(host, endpoint)] = (version, int(size), None if ceiling is None else int(ceiling))
            return version

    def stats(self) -> dict[str, Any]:
        """What the budget did, per host: the most requests in flight, the lowest limit, halvings, outages, paces."""
        with self._lock:
            out: dict[str, Any] = {}
            for host, h in sorted(self._hosts.items()):
                paced = {ep: round(60.0 / p, 1) for (hh, ep), p in sorted(self._pace.items()) if hh == host and p}
                out[host] = {
                    "most_in_flight": h.most_in_flight,
                    "max_in_flight": h.max_in_flight,
                    "lowest_limit": int(h.lowest_limit),
                    "limit": int(h.limit),
                    "decreases": h.decreases,
                    "reclaimed": h.reclaimed,
                    "outages": [round(lasted, 1) for _, lasted in h.outages]
                    + ([round(self._clock() - h.opened_at, 1)] if h.opened_at is not None else []),
                    "per_minute": paced,
                    "rate_limits": {ep: text for (hh, ep), text in sorted(self._rate_limits.items()) if hh == host},
                }
            return out


# ------------------------------------------------------------------------------------ the client side


class BudgetClient:
    """A process's door to the build's budget (`remote`: a HostBudget or a manager's proxy)."""

    def __init__(
        self, remote: Any, call: Callable[..., Any] | None = None, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._remote = remote
        self._call = call or (lambda name, *a: getattr(remote, name)(*a))
        self._sleep = sleep
        self._configured: set[str] = set()

    def call(self, name: str, *args: Any) -> Any:
        return self._call(name, *args)

    def configure(self, host: str, max_in_flight: int, per_minute: float | None, deadline_s: float) -> None:
        if host not in self._configured:
            self._call("configure", host, max_in_flight, per_minute, deadline_s)
            self._configured.add(host)

    @contextmanager
    def slot(self, url: str, endpoint: str, hold_s: float = float("inf")) -> Iterator[_Slot]:
        """Wait for the request's turn and a slot on its host, held for `hold_s` at most (then taken back, as if
        its holder had died); `Slot.outcome` set by the caller is reported back."""
        host = host_of(url)
        lease = f"{os.getpid()}-{secrets.token_hex(6)}"
        verdict = "repace"
        while verdict != "go" and verdict != "probe":
            if verdict == "repace":
                wait, version = self._call("reserve", host, endpoint)
                if wait > 0:
                    self._sleep(float(wait))
            verdict, seconds = self._call("acquire", host, endpoint, version, lease, hold_s)
            if verdict == "down":
                raise HostDown(host, float(seconds))
            if verdict == "wait":
                self._sleep(float(seconds))
        slot = _Slot()
        try:
            yield slot
        finally:
            note = self._call("release", host, slot.outcome, urllib.parse.urlsplit(url).path, verdict == "probe",
                              slot.late, lease)  # fmt: skip
            if note:
                log.warning("%s", note)

    def rate_limited(self, url: str, endpoint: str, amount: int | None, window_s: float | None, named: str) -> None:
        self._call("rate_limited", host_of(url), endpoint, amount, window_s, named)

    def health(self, url: str) -> tuple[int, bool, bool]:
        epoch, on, troubled = self._call("health", host_of(url))
        return int(epoch), bool(on), bool(troubled)

    def learned(self, url: str, endpoint: str) -> tuple[int, int, int | None] | None:
        got = self._call("learned", host_of(url), endpoint)
        return None if got is None else (int(got[0]), int(got[1]), got[2])

    def learn(self, url: str, endpoint: str, size: int, ceiling: int | None) -> int:
        return int(self._call("learn", host_of(url), endpoint, size, ceiling))

    def stats(self) -> dict[str, Any]:
        return dict(self._call("stats"))


@dataclass
class _Slot:
    outcome: str = TROUBLE  # an exception before an answer is trouble unless the caller says otherwise
    late: bool = False  # answered after more than LATE_FRACTION of its read timeout


def host_of(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def outcome_of(resp: requests.Response) -> str:
    """What an answer says about its host: a rate limit (429, or the materialization engine's 500 wrapping one),
    trouble (502, 503, 504: a proxy or an overloaded server), an error of the request (other 5xx), else an answer."""
    status = resp.status_code
    if status == 429 or (status == 500 and RATE_LIMIT_TEXT in resp.content[:512]):
        return LIMITED
    if status in (502, 503, 504):
        return TROUBLE
    return ERROR if status >= 500 else OK


class BudgetedAdapter(HTTPAdapter):
    """An HTTPAdapter whose every request waits for its turn and a slot in the build's budget of its host, and reports
    how it went (mounted on the CAVE clients' sessions and, for cloud-files, on every bucket read)."""

    def send(self, request, **kwargs):  # noqa: ANN001, ANN201 - requests' signature
        hold = LEASE_FACTOR * _total_timeout(kwargs.get("timeout")) + LEASE_MARGIN_S
        with current().slot(request.url, endpoint_of(request.url), hold) as slot:
            start = time.monotonic()
            resp = super().send(request, **kwargs)  # an exception leaves the outcome "trouble"
            slot.outcome = outcome_of(resp)
            slot.late = time.monotonic() - start > LATE_FRACTION * _read_timeout(kwargs.get("timeout"))
            return resp


def _total_timeout(timeout: object) -> float:
    """Connect plus read timeout of a requests timeout (no bound: LEASE_UNBOUNDED_S, so that a dead holder's slot
    still comes back one day)."""
    parts = timeout if isinstance(timeout, tuple) else (timeout,)
    total = sum(float(t) for t in parts if isinstance(t, (int, float)))
    return total if total > 0 and all(isinstance(t, (int, float)) for t in parts) else LEASE_UNBOUNDED_S


def _read_timeout(timeout: object) -> float:
    """The read part of a requests timeout ((connect, read), a number, or None: no bound)."""
    if isinstance(timeout, tuple):
        timeout = timeout[1]
    return float(timeout) if isinstance(timeout, (int, float)) else float("inf")


# ------------------------------------------------------------------------------------ where the budget lives


@dataclass(frozen=True)
class BudgetHandle:
    """How a worker reaches the build's budget: `kind` "local" (this process's), "manager" (a multiprocessing
    manager beside the build's main process: `address`, `authkey`)."""

    kind: str
    address: tuple[str, int] | None = None
    authkey: bytes = field(default=b"", repr=False)
    owner: int = 0  # the pid that made it: a "local" handle means that process's budget only
    ident: str = field(default_factory=lambda: secrets.token_hex(8))  # one per build: a worker reconnects on a new one


_LOCAL = HostBudget()  # this process's budget (threads and sync schedulers: the build's; else until one is installed)
_CLIENT = BudgetClient(_LOCAL)
_INSTALLED: dict[str, Any] = {}
_INSTALL_LOCK = threading.Lock()
_LAST_STATS: dict[str, Any] = {}


def keep_stats(stats: dict[str, Any]) -> None:
    """What the budget of the build that just ran did (`last_stats`: the twin build's closing lines)."""
    _LAST_STATS.clear()
    _LAST_STATS.update(stats)


def last_stats() -> dict[str, Any]:
    return dict(_LAST_STATS)


def current() -> BudgetClient:
    """The budget this process's requests go through."""
    return _CLIENT


def install(handle: BudgetHandle | None) -> None:
    """Make `handle`'s budget this process's (idempotent; a local handle of this process is its own budget)."""
    global _CLIENT
    if handle is None or handle.kind == "local":
        return  # this process's own budget
    with _INSTALL_LOCK:
        if _INSTALLED.get("handle") == handle:
            return
        if handle.kind == "manager":
            calls = _PooledCalls(handle)
            client = BudgetClient(None, call=calls)
        else:
            raise ValueError(f"unknown budget handle kind {handle.kind!r}")
        _CLIENT = client
        _INSTALLED["handle"] = handle


class _PooledCalls:
    """A process's calls to the manager's budget, from any of its threads, through CONNECTIONS_PER_PROCESS
    long-lived threads. A manager's proxy opens a connection for every thread that calls it, and cloud-files starts
    threads for every read: thousands of connections, each a thread of the manager, overflowed its listen backlog
    (16) in a 6,000-sample run, and a connection the kernel dropped there left its caller waiting for a handshake
    forever. A call unanswered for CALL_TIMEOUT_S (the manager gone or stuck) turns this process to its own budget,
    said once: a bound per process is worse than one per build, a worker waiting forever is worse still."""

    def __init__(self, handle: BudgetHandle) -> None:
        self._handle = handle
        self._pool = ThreadPoolExecutor(CONNECTIONS_PER_PROCESS, thread_name_prefix="cb2-budget")
        self._proxy: Any = None
        self._lock = threading.Lock()
        self._lost = False

    def _remote(self, name: str, args: tuple) -> Any:
        with self._lock:
            if self._proxy is None:
                self._proxy = _connect_manager(self._handle)
        return getattr(self._proxy, name)(*args)

    def __call__(self, name: str, *args: Any) -> Any:
        if not self._lost:
            future = self._pool.submit(self._remote, name, args)
            try:
                return future.result(timeout=CALL_TIMEOUT_S)
            except FutureTimeout:
                self._lost = True
                log.warning("the build's request budget at %s:%s did not answer for %.0f s: this process goes on "
                            "under a budget of its own", *self._handle.address, CALL_TIMEOUT_S)  # fmt: skip
        return getattr(_LOCAL, name)(*args)


def reset_local() -> HostBudget:
    """A fresh local budget for this process (tests; a build that starts after another in the same process)."""
    global _LOCAL, _CLIENT
    with _INSTALL_LOCK:
        _LOCAL = HostBudget()
        _CLIENT = BudgetClient(_LOCAL)
        _INSTALLED.clear()
    return _LOCAL


def _shared() -> HostBudget:
    """The budget a manager's server process serves (its own process's)."""
    return _LOCAL


class BudgetManager(BaseManager):
    """Serves one HostBudget from a process of its own to the build's local worker processes (and the build)."""


BudgetManager.register("budget", callable=_shared)


def _watch_parent(parent: int) -> None:
    """In the manager's process: end it when the build's process is gone (a `kill -9` of the build alone would
    otherwise leave it serving forever)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="cb2-budget-parent", daemon=True).start()


def _connect_manager(handle: BudgetHandle) -> Any:
    manager = BudgetManager(address=handle.address, authkey=handle.authkey)
    manager.connect()
    return manager.budget()


@contextmanager
def serve_budget(scheduler: str) -> Iterator[BudgetHandle]:
    """The build's one budget for `scheduler`, served while the block runs: in this process (threads, sync), else by
    a manager process beside the build's own, listening where the workers reach it: 127.0.0.1 for local worker
    processes; for a dask.distributed scheduler (tcp://host:port), this machine's address on the route to the
    scheduler (its workers reach the scheduler's network), authenticated by a key of 16 random bytes that travels
    with the handle. Not a dask actor: an actor lives on one worker and dies with it, and the budget must outlive
    any worker (a cluster loses workers); the manager ends with the build's process."""
    reset_local()
    if scheduler in ("threads", "sync"):
        yield BudgetHandle("local", owner=os.getpid())
        return
    host = "127.0.0.1" if scheduler == "processes" else _host_towards(scheduler)
    authkey = secrets.token_bytes(16)
    manager = BudgetManager(address=(host, 0), authkey=authkey, ctx=multiprocessing.get_context("spawn"))
    manager.start(_watch_parent, (os.getpid(),))
    try:
        yield BudgetHandle("manager", address=manager.address, authkey=authkey, owner=os.getpid())
    finally:
        reset_local()  # this process's requests go through its own budget again
        manager.shutdown()


def _host_towards(address: str) -> str:
    """This machine's address on the route to `address` (a dask scheduler's tcp://host:port): what its workers,
    on the scheduler's network, can reach. A UDP connect sends nothing; it only picks the route."""
    parts = urllib.parse.urlsplit(address if "://" in address else f"tcp://{address}")
    target = parts.hostname or "127.0.0.1"
    if target in ("localhost", "127.0.0.1", "::1"):
        return "127.0.0.1"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((target, parts.port or 8786))
            return probe.getsockname()[0]
        except OSError:  # no route known: the address this machine's name resolves to
            return socket.gethostbyname(socket.gethostname())
