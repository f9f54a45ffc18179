"""Requests that find the server's limits instead of knowing them: batches bisected, sizes learned, 429s honoured.

Real CAVE deployments have limits nobody can read from here (uWSGI's header buffer, a front server's URL
limit, how many roots' lineages fit in one request before the proxy's timeout), and they differ between
deployments. So every batched call goes through `Adaptive.run`:

- per (host, endpoint) a working batch size, shared by a process's threads (a lock), starting at the
  conservative size the caller gives;
- a batch answered 413 / 414 / 431 / 502 / 503 / 504, or that timed out or had its connection reset, is
  BISECTED: both halves are asked, the working size drops to the half, and a size that failed with an answer
  that always means "too big" (413/414/431/504, a timeout) is a ceiling for a while; after `GROW_AFTER`
  successes in a row the size grows by a quarter, so never straight back to a size that just failed; a 502,
  503 or reset (which may be a fault of the moment) bisects its batch but changes the working size only when
  a second one follows soon, and then by half at most (else ~3% random faults would walk every size down to 1);
- a request is never resent unchanged after a failure, except a batch of one: after a timeout once (with a
  longer timeout: the first one may be short), after a 5xx or a reset a few times with backoff; then the
  call fails with `ExhaustedRequest` (a TransientSourceError that says its resends are spent, so that the
  retrying wrapper does not resend it again: identical resends stay bounded overall);
- 429: wait what `Retry-After` says (seconds or an HTTP date), else back off, and resend (bounded);
- at most `max_in_flight_per_host` requests of a process wait on one host at a time;
- each request's read timeout is its endpoint's (config `cave_requests.read_timeout_s`), applied by
  `ScopedTimeoutAdapter` on the clients' sessions; a request slower than `slow_request_s` is logged.

What it met is counted per process (`take_counters`): refused answers, 429s honoured, resets, timeouts,
bisections, slow requests, and each endpoint's working size. No output depends on any of this: sizes and
timeouts change how the rows are asked for, never which rows come back.
"""

from __future__ import annotations

import email.utils
import logging
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import MaxRetryError, ReadTimeoutError

from config.schema import CaveRequests
from pipeline.core.errors import TransientSourceError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

TOO_BIG = frozenset({413, 414, 431, 502, 503, 504})  # a batch answered so is bisected
SIZE_ONLY = frozenset({413, 414, 431})  # the request itself is too large: resending one item cannot help
# Answers that say the size was too big every time they come; a 502 / 503 / reset may be a size limit (pcgv1's
# uWSGI drops an oversized request, nginx answers 502) or a fault of the moment: it bisects too, but sets no ceiling
# (random faults would otherwise ratchet the size down to 1), so growth may try that size again, slowly.
SIZE_SIGNALS = frozenset({413, 414, 431, 504})
GROW_AFTER = 8  # successes in a row at the working size before it grows
FORGET_AFTER = 64  # successes after which a failed size may be tried again
ONE_ITEM_TRIES = 4  # sends of a batch of one answered 5xx or reset (timeouts: 2)
TIMEOUT_RESEND_FACTOR = 4.0  # the one resend after a timeout waits this much longer
MAX_429 = 30  # 429s honoured for one request before it fails
BACKOFF_S = 0.2
MAX_WAIT_S = 120.0
_COUNTER = {"refused": "refused", "timeout": "timeouts", "reset": "resets"}


class ExhaustedRequest(TransientSourceError):
    """A request the adaptive layer resent as often as it may: retrying the whole call would only resend it."""

    final = True


# ------------------------------------------------------------------------------------ what went wrong


@dataclass(frozen=True)
class Failure:
    kind: str  # "refused" | "rate_limited" | "timeout" | "reset"
    status: int = 0
    retry_after_s: float | None = None

    def describe(self) -> str:
        return f"HTTP {self.status}" if self.status else self.kind


def retry_after_s(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def classify(exc: BaseException, now: Callable[[], float] = time.time) -> Failure | None:
    """What a client's exception says about the request, or None when it is not a limit's (it propagates)."""
    if isinstance(exc, requests.HTTPError):
        resp = exc.response
        status = resp.status_code if resp is not None else 0
        if status == 429:
            return Failure("rate_limited", 429, retry_after_s(resp.headers.get("Retry-After"), now))
        if status in TOO_BIG:
            return Failure("refused", status)
        return None
    if isinstance(exc, requests.ConnectTimeout):
        return None  # nothing was sent: the connection's own retries and the first-contact rules apply
    if isinstance(exc, requests.Timeout):
        return Failure("timeout")
    if isinstance(exc, requests.ConnectionError) and isinstance(_reason(exc), ReadTimeoutError):
        return Failure("timeout")  # urllib3 gave up reading (read retries 0): requests calls that a ConnectionError
    if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        return Failure("reset")
    return None


def _reason(exc: BaseException) -> BaseException | None:
    """The urllib3 error under a requests exception (MaxRetryError's reason), if any."""
    inner = exc.args[0] if exc.args else None
    return getattr(inner, "reason", None) if isinstance(inner, MaxRetryError) else None


# ------------------------------------------------------------------------------------ timeouts per request

_SCOPE = threading.local()


@contextmanager
def read_timeout(seconds: float) -> Iterator[None]:
    """Requests this thread sends inside the block wait `seconds` for an answer (ScopedTimeoutAdapter)."""
    previous = getattr(_SCOPE, "read_s", None)
    _SCOPE.read_s = seconds
    try:
        yield
    finally:
        _SCOPE.read_s = previous


class ScopedTimeoutAdapter(HTTPAdapter):
    """An HTTPAdapter with a default (connect, read) timeout whose read part the adaptive layer sets per request
    (caveclient's calls take no timeout argument)."""

    def __init__(self, timeout: tuple[float, float], **kwargs: Any) -> None:
        self._timeout = timeout
        super().__init__(**kwargs)

    def send(self, request, **kwargs):  # noqa: ANN001, ANN201 - requests' signature
        scoped = getattr(_SCOPE, "read_s", None)
        if scoped is not None:
            kwargs["timeout"] = (self._timeout[0], scoped)
        elif kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


# ------------------------------------------------------------------------------------ learned sizes


@dataclass
class _Size:
    """One endpoint's working size on one host."""

    size: int
    start: int
    ceiling: int | None = None  # a size that failed recently: growth stays below it
    streak: int = 0  # successes in a row at the working size
    since_failure: int = 0
    strike: int = 0  # successes left in which a second ambiguous failure confirms a first one

    def success(self, n: int) -> None:
        self.strike = max(0, self.strike - 1)
        self._success(n)

    def _success(self, n: int) -> None:
        self.since_failure += 1
        if self.ceiling is not None and self.since_failure >= FORGET_AFTER:
            self.ceiling = None
        if n < self.size:
            return  # a remainder or a half: says nothing about the working size
        self.streak += 1
        if self.streak < GROW_AFTER or self.size >= self.start:
            return
        grown = min(self.start, self.size + max(1, self.size // 4))
        if self.ceiling is not None:
            grown = min(grown, self.ceiling - 1)
        if grown > self.size:
            self.size, self.streak = grown, 0

    def failure(self, n: int, size_signal: bool) -> None:
        """A batch of n failed: the working size drops to n's half and, when the answer always means "too big"
        (`size_signal`), n becomes a ceiling. An ambiguous failure (502, 503, a reset: a fault of the moment, or
        pcgv1's uWSGI dropping an oversized request) changes nothing by itself: only a second one within GROW_AFTER
        successes does (random faults would otherwise walk the size down to 1). The batch is bisected either way."""
        if not size_signal and self.strike == 0:
            self.strike = GROW_AFTER
            self.streak = 0
            return
        self.strike = 0
        if size_signal:
            self.ceiling = n if self.ceiling is None else min(self.ceiling, n)
            self.size = max(1, min(self.size, n // 2))
        else:  # confirmed, but still ambiguous: halve the working size at most, whatever batch it hit (a fault on a
            # 5-item remainder would otherwise set a size of 2: seen at scale, 24 level-2 requests per neuron)
            self.size = max(1, min(self.size, max(n // 2, self.size // 2)))
        self.streak = self.since_failure = 0


@dataclass
class Counters:
    refused: int = 0
    rate_limited: int = 0
    resets: int = 0
    timeouts: int = 0
    bisections: int = 0
    slow: int = 0
    sizes: dict[str, int] = field(default_factory=dict)  # endpoint -> working size (host dropped)

    def as_dict(self) -> dict:
        return {
            "refused": self.refused,
            "rate_limited": self.rate_limited,
            "resets": self.resets,
            "timeouts": self.timeouts,
            "bisections": self.bisections,
            "slow": self.slow,
            "sizes": {k: [v] for k, v in sorted(self.sizes.items())},
        }


def merge_counters(a: dict, b: dict) -> dict:
    """Two processes' (or partitions') counters as one: counts summed, each endpoint's sizes listed."""
    out = {k: int(a.get(k, 0)) + int(b.get(k, 0)) for k in (*a, *b) if k != "sizes"}
    sizes: dict[str, list[int]] = {}
    for part in (a, b):
        for k, v in (part.get("sizes") or {}).items():
            sizes.setdefault(k, []).extend(v)
    out["sizes"] = {k: sorted(v) for k, v in sorted(sizes.items())}
    return out


class Adaptive:
    """The process's learned sizes, counters and per-host in-flight bounds (`ADAPTIVE`; tests make their own)."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self._lock = threading.Lock()
        self._sizes: dict[tuple[str, str], _Size] = {}
        self._hosts: dict[str, threading.BoundedSemaphore] = {}
        self._counters = Counters()
        self.sleep = sleep
        self.clock = clock

    # -------------------------------------------------------------- state
    def _state(self, host: str, endpoint: str, start: int) -> _Size:
        key = (host, endpoint)
        state = self._sizes.get(key)
        if state is None:
            state = self._sizes[key] = _Size(size=max(1, start), start=max(1, start))
        return state

    def size(self, host: str, endpoint: str, start: int) -> int:
        """The working size of `endpoint` on `host` (`start` until something was learned)."""
        with self._lock:
            return self._state(host, endpoint, start).size

    def _slot(self, host: str, bound: int) -> threading.BoundedSemaphore:
        with self._lock:
            sem = self._hosts.get(host)
            if sem is None:
                sem = self._hosts[host] = threading.BoundedSemaphore(max(1, bound))
            return sem

    def _count(self, **incr: int) -> None:
        with self._lock:
            for k, v in incr.items():
                setattr(self._counters, k, getattr(self._counters, k) + v)

    def take_counters(self) -> dict:
        """What this process met since the last call (and each endpoint's working size now), then zero."""
        with self._lock:
            counters, self._counters = self._counters, Counters()
            counters.sizes = {}
            for (_, endpoint), state in sorted(self._sizes.items()):
                if state.start > 1:  # single requests (a level-2 graph, a manifest) have no size to learn
                    counters.sizes[endpoint] = min(state.size, counters.sizes.get(endpoint, state.size))
        return counters.as_dict()

    # -------------------------------------------------------------- one request
    def _send(self, host: str, endpoint: str, what: str, batch: list, send: Callable[[list], R],
              opts: CaveRequests, read_s: float) -> R:  # fmt: skip
        start = self.clock()
        with self._slot(host, opts.max_in_flight_per_host), read_timeout(read_s):
            try:
                return send(batch)
            finally:
                took = self.clock() - start
                if took > opts.slow_request_s:
                    self._count(slow=1)
                    log.warning("slow request: %s (%d items) took %.0f s at %s", what, len(batch), took, host)

    def run(
        self,
        host: str,
        endpoint: str,
        items: Sequence[T],
        send: Callable[[list[T]], R],
        *,
        start: int,
        opts: CaveRequests,
        what: str,
    ) -> list[tuple[list[T], R]]:
        """`send` over `items` in batches of the learned size; (batch, answer) pairs in the items' order.

        Exceptions `classify` does not know propagate at once (a 404, a 401: not a limit's)."""
        host = urllib.parse.urlsplit(host).netloc or host
        read_s = opts.read_timeout(endpoint)
        todo: deque[list[T]] = deque()
        size = self.size(host, endpoint, start)
        for i in range(0, len(items), size):
            todo.append(list(items[i : i + size]))
        out: list[tuple[list[T], R]] = []
        while todo:
            batch = todo.popleft()
            size = self.size(host, endpoint, start)
            if len(batch) > size:  # learned meanwhile (here or on another thread): never send a size known to fail
                todo.extendleft(reversed([batch[i : i + size] for i in range(0, len(batch), size)]))
                continue
            sends, timeouts, limited = 0, 0, 0
            while True:
                wait = read_s * (TIMEOUT_RESEND_FACTOR if timeouts else 1.0)
                try:
                    answer = self._send(host, endpoint, what, batch, send, opts, wait)
                except Exception as exc:  # noqa: BLE001 - classified below, else re-raised
                    failure, error = classify(exc), exc
                    if failure is None:
                        raise
                    sends += 1
                else:
                    with self._lock:
                        self._state(host, endpoint, start).success(len(batch))
                    out.append((batch, answer))
                    break
                if failure.kind == "rate_limited":
                    limited += 1
                    self._count(rate_limited=1)
                    if limited > MAX_429:
                        raise ExhaustedRequest(f"{what}: HTTP 429 {limited} times in a row from {host}") from error
                    self.sleep(min(MAX_WAIT_S, failure.retry_after_s if failure.retry_after_s is not None
                                   else BACKOFF_S * 2 ** min(limited, 8)))  # fmt: skip
                    sends -= 1  # a 429 was not served: it does not spend the batch's resends
                    continue
                self._count(**{_COUNTER[failure.kind]: 1})
                if len(batch) > 1:
                    half = len(batch) // 2
                    with self._lock:
                        signal = failure.kind == "timeout" or failure.status in SIZE_SIGNALS
                        self._state(host, endpoint, start).failure(len(batch), signal)
                        self._counters.bisections += 1
                    todo.extendleft([batch[half:], batch[:half]])
                    break
                timeouts += failure.kind == "timeout"
                spent = failure.status in SIZE_ONLY or timeouts > 1 or sends >= ONE_ITEM_TRIES
                if spent:
                    raise ExhaustedRequest(
                        f"{what}: {failure.describe()} from {host} for a single item ({batch[0]!r}) after "
                        f"{sends} send{'s' if sends > 1 else ''}; the server cannot answer it"
                    ) from error
                if failure.kind != "timeout":
                    self.sleep(min(MAX_WAIT_S, BACKOFF_S * 2 ** (sends - 1)))
        return out


ADAPTIVE = Adaptive()  # one per process: its threads share what was learned


def take_counters() -> dict:
    """This process's counters since the last call (see Adaptive.take_counters)."""
    return ADAPTIVE.take_counters()
