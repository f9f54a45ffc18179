"""Requests that find the server's limits instead of knowing them: batches bisected, sizes learned, items isolated.

Real CAVE deployments have limits nobody can read from here (uWSGI's header buffer, a front server's URL
limit, how many roots' lineages fit in one request before the proxy's timeout), and they differ between
deployments. So every batched call goes through `Adaptive.run`:

- per (host, endpoint) a working batch size, shared by a process's threads (a lock), starting at the
  conservative size the caller gives;
- a batch answered 413 / 414 / 431 (the request itself is too large, every time) is BISECTED and its size becomes
  a ceiling, the working size its half;
- a batch that timed out, was answered 502 / 503 / 504 or had its connection reset is bisected too (its halves are
  needed anyway), but the working size changes only on evidence that size is the cause: three batches in a row
  failed, none as large answering between, while smaller ones of that endpoint answered (`_Size`); then the size
  becomes the largest that answered below the smallest that failed. A slow or overloaded server is not told apart by
  size: while the budget finds the host under load, a failed batch is sent whole again (it teaches nothing of the
  size) and the timeouts and 502s lower the build's concurrency instead (budget.py), which is what helps;
- a batch answered 500 (PyChunkedGraph and the l2cache answer any exception so; one bad item fails every batch
  holding it) is bisected with no effect on the size, so that the bad item is isolated;
- the materialization engine answers its rate limit as a 500 wrapping `429 Too Many Requests: N per W unit`
  (flask-restx's errorhandler(Exception), no Retry-After): that, or a 429, tells the build's budget to pace the
  endpoint below N per W for every worker (budget.py), and the request is sent again at its turn (not bisected);
  a 500 wrapping a 404 or 410 (a missing table, an expired version) propagates for the caller to name;
- a batch of one is resent a few times (config `cave_requests.item_sends`; after a timeout once, with a four times
  longer wait); sends during an outage of its host (budget.py pauses the host) are not counted. Then the item is
  UNAVAILABLE: `Unavailable("<endpoint>_unavailable")`, a reason of the item, ledgered by the stage that asked
  (the root's candidates, the sample), and the call goes on with the other items when the caller takes partial
  answers (`failed=`), else it raises it;
- each request's read timeout is its endpoint's (config `cave_requests.read_timeout_s`), applied by
  `ScopedTimeoutAdapter` on the clients' sessions; a request slower than `slow_request_s` is logged.

What it met is counted per process (`take_counters`): refused answers, 500s, 429s honoured, resets, timeouts,
bisections, items unavailable, slow requests, and each endpoint's working size. No output depends on any of this:
sizes and timeouts change how the rows are asked for, never which rows come back.
"""

from __future__ import annotations

import email.utils
import itertools
import json
import logging
import re
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
from urllib3.exceptions import MaxRetryError, ReadTimeoutError

from config.schema import CaveRequests
from core.errors import Unavailable
from pipeline.sources import budget as budgets
from pipeline.sources.budget import BudgetedAdapter, HostDown
from pipeline.sources.transport import endpoint_of

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

SIZE_ONLY = frozenset({413, 414, 431})  # the request itself is too large: a ceiling; resending one item cannot help
AMBIGUOUS = frozenset({502, 503, 504})  # too large (pcgv1's uWSGI drops it, a proxy times it out) or too busy
GROW_AFTER = 8  # successes in a row at the working size before it grows
EVIDENCE = 3  # ambiguous failures in a row above a size that answers before the size is taken for a limit
FORGET_AFTER = 128  # successes after which a failed size may be tried again (a server's limits may change)
TIMEOUT_RESEND_FACTOR = 4.0  # the one resend after a timeout waits this much longer
MAX_429 = 30  # rate limits met by one request before its item is unavailable
MAX_OUTAGE_SENDS = 50  # sends of one item not counted because its host was paused (each pause ends by a deadline)
LOAD_RESENDS = 2  # a batch that failed while its host is under load is sent whole again this often before bisection
BACKOFF_S = 0.2
MAX_WAIT_S = 120.0
# the engine wraps werkzeug's HTTPException text in a 500: "429 Too Many Requests: 200 per 1 minute"
_WRAPPED = re.compile(r"^\s*(\d{3}) ")
_LIMIT = re.compile(r"(\d+)\s+per\s+(\d+)\s+(second|minute|hour|day)", re.I)
_UNIT_S = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}
_COUNTER = {"refused": "refused", "timeout": "timeouts", "reset": "resets", "server_error": "server_errors",
            "down": "refused"}  # fmt: skip
# the reason an item's failure is ledgered under: the endpoint a user knows it by
REASON_OF = {"manifest": "mesh", "query": "materialization", "synapses": "synapses"}


# ------------------------------------------------------------------------------------ what went wrong


@dataclass(frozen=True)
class Failure:
    kind: str  # "refused" | "rate_limited" | "timeout" | "reset" | "server_error" | "down"
    status: int = 0
    retry_after_s: float | None = None
    message: str = ""  # the server's message (a 500's), shortened
    url: str = ""
    amount: int | None = None  # a rate limit's, as the server named it
    window_s: float | None = None

    @property
    def definite(self) -> bool:
        """The request is too large every time it is sent (413, 414, 431)."""
        return self.status in SIZE_ONLY

    def describe(self) -> str:
        if self.kind == "down":
            return self.message
        text = f"HTTP {self.status}" if self.status else self.kind
        return f"{text} ({self.message})" if self.message else text


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


def server_message(resp: requests.Response | None) -> str:
    """The message of an error answer: the JSON `message` the CAVE services send, else the text, shortened."""
    if resp is None:
        return ""
    try:
        body = json.loads(resp.content or b"")
    except ValueError:
        body = None
    text = body.get("message") if isinstance(body, dict) else None
    if not isinstance(text, str):
        text = (resp.text or "") if "html" not in resp.headers.get("Content-Type", "") else ""
    return " ".join(text.split())[:300]


def wrapped_status(resp: requests.Response | None) -> int | None:
    """The HTTP status a 500 wraps (the materialization engine answers every error as a 500 whose message starts
    with the real status: `404 Not Found: ...`, `429 Too Many Requests: ...`), or None."""
    if resp is None or resp.status_code != 500:
        return None
    found = _WRAPPED.match(server_message(resp))
    return int(found.group(1)) if found else None


def rate_limit_of(text: str) -> tuple[int | None, float | None]:
    """(amount, window seconds) a rate-limit message names (`200 per 1 minute`), or (None, None)."""
    found = _LIMIT.search(text or "")
    if not found:
        return None, None
    return int(found.group(1)), int(found.group(2)) * _UNIT_S[found.group(3).lower()]


def classify(exc: BaseException, now: Callable[[], float] = time.time) -> Failure | None:
    """What a client's exception says about the request, or None when it is not a limit's or the server's (it
    propagates: a 404, a 401, a 500 wrapping a 404 or 410)."""
    if isinstance(exc, HostDown):
        return Failure("down", message=str(exc))
    if isinstance(exc, requests.HTTPError):
        resp = exc.response
        status = resp.status_code if resp is not None else 0
        url = resp.url if resp is not None and resp.url else ""
        if status == 429 or wrapped_status(resp) == 429:
            message = server_message(resp)
            amount, window = rate_limit_of(message)
            after = retry_after_s(resp.headers.get("Retry-After"), now) if resp is not None else None
            return Failure("rate_limited", 429, after, message, url, amount, window)
        if status in SIZE_ONLY or status in AMBIGUOUS:
            return Failure("refused", status, url=url)
        if status >= 500 and wrapped_status(resp) not in (404, 410):
            return Failure("server_error", status, message=server_message(resp), url=url)
        return None
    if isinstance(exc, requests.ConnectTimeout):
        return Failure("reset")  # after first contact (CaveSource probes before): the host is away, as a refusal
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


class ScopedTimeoutAdapter(BudgetedAdapter):
    """An HTTPAdapter with a default (connect, read) timeout whose read part the adaptive layer sets per request
    (caveclient's calls take no timeout argument); every request goes through the build's budget (budget.py)."""

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
    """One endpoint's working size on one host.

    Evidence that ambiguous failures (a timeout, 502, 503, 504, a reset) are about size: EVIDENCE batches failed with
    no batch at least as large answering in between, two of them holding different items (not one inside the
    other's bisection), and a smaller one answered. A size limit fails every batch above it, both halves of one
    included; a fault of the moment rarely fails three in a row; an item that fails every batch holding it fails
    only batches nested around it (whose siblings answer). Then the size becomes the largest that answered (lately,
    or in between) below the smallest that failed."""

    size: int
    start: int
    ceiling: int | None = None  # a size that failed recently: growth stays below it
    streak: int = 0  # successes in a row at the working size
    since_failure: int = 0
    failed: list[int] = field(default_factory=list)  # sizes that failed ambiguously, none that large answered since
    spans: list[tuple] = field(default_factory=list)  # (call, first, last item) of each of them
    answered: int = 0  # the largest size answered since the first of them
    recent: deque = field(default_factory=lambda: deque(maxlen=FORGET_AFTER))  # sizes of the latest answers
    below: int | None = None  # the largest size answered since, below every size in `failed`
    version: int = 0  # the build's shared size (budget.learned) this process last took
    epoch: int = 0  # the host's outages begun when the evidence began (failures before an outage are the outage's)

    def success(self, n: int, epoch: int | None = None) -> None:
        if self.failed and epoch is not None and epoch != self.epoch:
            self._forget()
        self.since_failure += 1
        self.recent.append(n)
        if self.ceiling is not None and self.since_failure >= FORGET_AFTER:
            self.ceiling = None
        if self.failed:
            self.answered = max(self.answered, n)
            kept = [i for i, f in enumerate(self.failed) if f > n]  # that size answers after all
            self.failed, self.spans = [self.failed[i] for i in kept], [self.spans[i] for i in kept]
            if not self.failed:
                self._forget()
            elif n < min(self.failed):
                self.below = max(self.below or 0, n)
                self._confirm()
        if n < self.size:
            # a remainder or a half says nothing about the working size; after long without a failure, growth
            # goes on all the same (calls whose batches never reach the size would otherwise never grow it back)
            if self.since_failure < FORGET_AFTER or self.since_failure % GROW_AFTER:
                return
            self.streak = GROW_AFTER
        else:
            self.streak += 1
        if self.streak < GROW_AFTER or self.size >= self.start:
            return
        grown = min(self.start, self.size + max(1, self.size // 4))
        if self.ceiling is not None:
            grown = min(grown, self.ceiling - 1)
        if grown > self.size:
            self.size, self.streak = grown, 0

    def too_large(self, n: int) -> None:
        """A batch of n was refused as too large (413 / 414 / 431): n is a ceiling, the working size its half."""
        self.ceiling = n if self.ceiling is None else min(self.ceiling, n)
        self.size = max(1, min(self.size, n // 2))
        self.streak = self.since_failure = 0
        self._forget()

    def ambiguous(self, n: int, epoch: int = 0, span: tuple = ()) -> None:
        """A batch of n timed out or was answered 502 / 503 / 504: too large, or the server too busy, or a fault of
        the moment. Only evidence changes the size (see the class)."""
        self.streak = 0
        if self.failed and epoch != self.epoch:
            self._forget()  # an outage came between: what failed before it said nothing of the size
        if n <= 1 or (self.failed and self.answered >= n):
            return  # one item, or a size that answered since: not the size
        if not self.failed:
            self.epoch, self.answered = epoch, 0
        self.failed.append(n)
        self.spans.append(span)
        if self.below is not None and self.below >= min(self.failed):
            self.below = None
        self._confirm()

    def _confirm(self) -> None:
        if len(self.failed) >= EVIDENCE and self.below is not None and not _nested(self.spans):
            smallest = min(self.failed)
            self.ceiling = smallest if self.ceiling is None else min(self.ceiling, smallest)
            answered = max([self.below, *(r for r in self.recent if r < smallest)])
            self.size = max(1, min(self.size, answered))
            self.streak = self.since_failure = 0
            self._forget()

    def _forget(self) -> None:
        self.failed, self.spans, self.answered, self.below = [], [], 0, None


def _nested(spans: list[tuple]) -> bool:
    """Whether every two of these batches (call, first, last item) hold one inside the other: one item's failures."""
    for i, a in enumerate(spans):
        for b in spans[i + 1 :]:
            if not a or not b or a[0] != b[0]:
                return False  # different calls: different batches
            if not (a[1] <= b[1] and b[2] <= a[2]) and not (b[1] <= a[1] and a[2] <= b[2]):
                return False
    return True


@dataclass
class Counters:
    refused: int = 0
    server_errors: int = 0
    rate_limited: int = 0
    resets: int = 0
    timeouts: int = 0
    bisections: int = 0
    unavailable: int = 0
    slow: int = 0
    sizes: dict[str, int] = field(default_factory=dict)  # endpoint -> working size (host dropped)

    def as_dict(self) -> dict:
        counts = {k: getattr(self, k) for k in ("refused", "server_errors", "rate_limited", "resets", "timeouts",
                                                 "bisections", "unavailable", "slow")}  # fmt: skip
        return {**counts, "sizes": {k: [v] for k, v in sorted(self.sizes.items())}}


def reason_of(endpoint: str) -> str:
    """The endpoint's name in a ledger reason (`<name>_unavailable`)."""
    return REASON_OF.get(endpoint, endpoint)


class Adaptive:
    """The process's learned sizes and counters (`ADAPTIVE`; tests make their own). Requests in flight, paces and
    outages are the build's, not the process's: the budget (budget.py)."""

    def __init__(self, sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self._lock = threading.Lock()
        self._sizes: dict[tuple[str, str], _Size] = {}
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
    def _send(self, host: str, what: str, batch: list, send: Callable[[list], R], opts: CaveRequests,
              read_s: float) -> R:  # fmt: skip
        start = self.clock()
        with read_timeout(read_s):
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
        failed: list[tuple[T, Unavailable]] | None = None,
    ) -> list[tuple[list[T], R]]:
        """`send` over `items` in batches of the learned size; (batch, answer) pairs in the items' order.

        An item still failing after its resends is `Unavailable`: appended to `failed` with the call going on when
        the caller takes partial answers, else raised. Exceptions `classify` does not know propagate at once (a
        404, a 401: not a limit's)."""
        url = host
        host = urllib.parse.urlsplit(host).netloc or host
        read_s = opts.read_timeout(endpoint)
        call = next(_CALLS)
        before = self._take_shared(url, host, endpoint, start)
        todo: deque[tuple[list[T], int]] = deque()  # (batch, the index of its first item in `items`)
        size = self.size(host, endpoint, start)
        for i in range(0, len(items), size):
            todo.append((list(items[i : i + size]), i))
        out: list[tuple[list[T], R]] = []
        while todo:
            batch, first = todo.popleft()
            size = self.size(host, endpoint, start)
            if len(batch) > size:  # learned meanwhile (here or on another thread): never send a size known to fail
                todo.extendleft(reversed([(batch[i : i + size], first + i) for i in range(0, len(batch), size)]))
                continue
            span = (call, first, first + len(batch))
            try:
                answer = self._one_batch(url, host, endpoint, what, batch, span, send, start, opts, read_s, todo)
            except Unavailable as gone:
                if failed is None:
                    raise
                failed.append((batch[0], gone))
                continue
            if answer is not _BISECTED:
                out.append((batch, answer))
        self._share(url, host, endpoint, start, before)
        return out

    def _take_shared(self, url: str, host: str, endpoint: str, start: int) -> tuple[int, int | None]:
        """Start from the size another process of the build learned last (budget.learned); (size, ceiling) now."""
        shared = budgets.current().learned(url, endpoint) if start > 1 else None
        with self._lock:
            state = self._state(host, endpoint, start)
            if shared is not None and shared[0] > state.version:
                state.version, state.size, state.ceiling = shared[0], max(1, min(shared[1], state.start)), shared[2]
                state.streak = 0
            return state.size, state.ceiling

    def _share(self, url: str, host: str, endpoint: str, start: int, before: tuple[int, int | None]) -> None:
        """Tell the build a size this call learned (a limit found here is not found again by every worker)."""
        if start <= 1:
            return
        with self._lock:
            state = self._state(host, endpoint, start)
            now = (state.size, state.ceiling)
        if now != before:
            version = budgets.current().learn(url, endpoint, *now)
            with self._lock:
                state.version = max(state.version, version)

    def _one_batch(
        self, url: str, host: str, endpoint: str, what: str, batch: list, span: tuple, send: Callable[[list], R],
        start: int, opts: CaveRequests, read_s: float, todo: deque,
    ) -> Any:  # fmt: skip
        """One batch to its answer: the answer, `_BISECTED` (its halves put first in `todo`), or Unavailable."""
        sends, timeouts, limited, uncounted, loaded = 0, 0, 0, 0, 0
        seen_epoch: int | None = None
        while True:
            wait = read_s * (TIMEOUT_RESEND_FACTOR if timeouts else 1.0)
            try:
                answer = self._send(host, what, batch, send, opts, wait)
            except Exception as exc:  # noqa: BLE001 - classified below, else re-raised
                failure, error = classify(exc), exc
                if failure is None:
                    raise
            else:
                with self._lock:
                    evidence = bool(self._state(host, endpoint, start).failed)
                epoch = budgets.current().health(url)[0] if evidence else None
                with self._lock:
                    self._state(host, endpoint, start).success(len(batch), epoch)
                return answer
            if failure.kind == "down":
                self._count(unavailable=1)
                raise Unavailable(reason_of(endpoint), f"{what}: {failure.describe()}") from error
            if failure.kind == "rate_limited":
                limited += 1
                self._count(rate_limited=1)
                if limited > MAX_429:
                    self._count(unavailable=1)
                    raise Unavailable(reason_of(endpoint), f"{what}: rate limited {limited} times in a row by "
                                                           f"{host} ({failure.message})") from error  # fmt: skip
                window = failure.window_s or failure.retry_after_s or opts.rate_limit_wait_s
                budgets.current().rate_limited(failure.url or url, endpoint_of(failure.url or url), failure.amount,
                                               window, failure.message or "429")  # fmt: skip
                if failure.window_s is None and failure.retry_after_s is None and not failure.message:
                    self.sleep(min(MAX_WAIT_S, BACKOFF_S * 2 ** min(limited, 8)))
                continue  # the budget holds the resend until the endpoint's turn
            self._count(**{_COUNTER[failure.kind]: 1})
            ambiguous = not failure.definite and failure.kind != "server_error"
            epoch, paused, troubled = budgets.current().health(url) if ambiguous else (0, False, False)
            # a load symptom: no answer came (a timeout, a reset) while the host is under load. A 502 / 503 / 504 that
            # was answered is the server or its proxy refusing the request: a size, or a fault of the moment
            loaded_out = troubled and failure.kind in ("timeout", "reset")
            if paused and uncounted < MAX_OUTAGE_SENDS:
                uncounted += 1
                continue  # the host is paused (an outage): the same batch again once it answers, nothing learned
            if len(batch) > 1 and loaded_out and loaded < LOAD_RESENDS:
                # the host is under load (its bound is being lowered): the batch whole again, after a timeout with
                # the longer wait; bisecting would send more requests exactly when the server has too many
                loaded += 1
                timeouts = 1 if failure.kind == "timeout" else timeouts
                continue
            if len(batch) > 1:
                half = len(batch) // 2
                with self._lock:
                    state = self._state(host, endpoint, start)
                    if failure.definite:
                        state.too_large(len(batch))
                    elif ambiguous and not loaded_out:  # under load, a timeout says nothing of the size
                        state.ambiguous(len(batch), epoch, span)
                    self._counters.bisections += 1
                todo.extendleft([(batch[half:], span[1] + half), (batch[:half], span[1])])
                return _BISECTED
            if not failure.definite:
                if not ambiguous:
                    epoch, paused, _ = budgets.current().health(url)
                if (paused or (seen_epoch is not None and epoch != seen_epoch)) and uncounted < MAX_OUTAGE_SENDS:
                    seen_epoch, uncounted = epoch, uncounted + 1
                    continue  # the host's outage, not the item's: the budget holds the resend until it answers
                seen_epoch = epoch
            sends += 1
            timeouts += failure.kind == "timeout"
            if failure.definite or timeouts > 1 or sends >= opts.item_sends:
                self._count(unavailable=1)
                raise Unavailable(
                    reason_of(endpoint),
                    f"{what}: {failure.describe()} from {host} for a single item ({batch[0]!r}) after {sends} "
                    f"send{'s' if sends > 1 else ''} while its host answered others",
                ) from error
            if failure.kind != "timeout":
                self.sleep(min(MAX_WAIT_S, BACKOFF_S * 2 ** (sends - 1)))


_BISECTED = object()
_CALLS = itertools.count()  # each run() a call of its own (batches of two calls never nest)
ADAPTIVE = Adaptive()  # one per process: its threads share what was learned


def take_counters() -> dict:
    """This process's counters since the last call (see Adaptive.take_counters)."""
    return ADAPTIVE.take_counters()
