"""MaterializationEngine's rate limits: flask-limiter's fixed windows per user and endpoint, shared by every client.

What the engine does (MaterializationEngine 5.26.4):
- limiter.py `limit_by_category(category)` registers `limiter.limit(LIMITER_CATEGORIES[category],
  key_func=_user_key)`: the key is the token's user id (`g.auth_user["id"]`), and flask-limiter scopes a limit by
  its endpoint when it is given no scope (limiter.py's docstring of get_service_account_rate_limit), so each
  (user, endpoint) pair has its own counter; the storage is redis in a deployment (`LIMITER_URI`), shared by all of
  a user's requests whatever process or connection answers them.
- Category "query" on FrozenTableQuery (api2.py line 1061), LiveTableQuery (line 1816) and the other query
  resources; "fast_query" on the version and table listings and metadata (api2.py lines 719-998). The v2 namespace
  (api.py) applies none. The decorators run auth first, then the limiter, then validate_datastack (flask-restx
  applies `method_decorators` in order, the last outermost: limiter.py's docstring of is_service_account).
- flask-limiter 3.12 defaults: strategy "fixed-window" (extension.py line 338), headers off (line 317: no
  Retry-After, no X-RateLimit-*). `RateLimitExceeded`'s description is `str(limit.limit)` (errors.py line 31), and
  limits 5.4.0 gives a RateLimitItem no __str__ but `__repr__` = f"{amount} per {multiples} {granularity}"
  (limits/limits.py line 136): "200 per 1 minute". The answer, through the engine's error handler (errors.py):
  `500 {"message": "429 Too Many Requests: 200 per 1 minute"}`.
- limits' fixed window (storage/memory.py `incr`): a key's window starts at its first hit and lasts the window;
  every hit counts, refused ones too.
- The reference deployment's values (CAVEdeployment, per shared/REAL_SOURCES.md: 200 queries and 2000 fast
  queries per minute) are unverified here: the stored version of its local_env_template.sh has no limiter line.
  The twin scales the window to seconds and draws the amounts (hostile.py).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

# (path regex, category, endpoint): the engine's resources the twin serves that carry a limit (api2.py, /api/v3)
_V3 = r"/materialize/api/v3/datastack/[^/]+"
LIMITED = (
    (re.compile(_V3 + r"/version/-?\d+/table/[^/]+/query\Z"), "query", "FrozenTableQuery"),
    (re.compile(_V3 + r"/query\Z"), "query", "LiveTableQuery"),
    (re.compile(_V3 + r"/versions\Z"), "fast_query", "DatastackVersions"),
    (re.compile(_V3 + r"/version/-?\d+\Z"), "fast_query", "DatastackVersion"),
    (re.compile(_V3 + r"/metadata\Z"), "fast_query", "DatastackMetadata"),
    (re.compile(_V3 + r"/version/-?\d+/tables/metadata\Z"), "fast_query", "FrozenTablesMetadata"),
    (re.compile(_V3 + r"/version/-?\d+/table/[^/]+/metadata\Z"), "fast_query", "FrozenTableMetadata"),
)


def limited_endpoint(path: str) -> tuple[str, str] | None:
    """(category, endpoint) of a rate-limited resource, else None."""
    for regex, category, endpoint in LIMITED:
        if regex.match(path):
            return category, endpoint
    return None


@dataclass(frozen=True)
class RateLimitItem:
    """One limit: `amount` hits per `window_s` seconds."""

    amount: int
    window_s: int

    def __str__(self) -> str:
        """limits' RateLimitItemPerSecond repr: '20 per 5 second' (singular granularity, as limits writes it)."""
        return f"{self.amount} per {self.window_s} second"


class FixedWindows:
    """Counters per (user, endpoint), one window each, started by its first hit; thread-safe (the twin's request
    threads are every client's). `clock` is injectable so that a test steps time instead of sleeping."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple, tuple[float, int]] = {}  # key -> (window start, hits in it)
        self._first_limited: dict[tuple, float] = {}  # key -> start of the first window in which it was refused
        self.limited = 0  # hits refused
        self.over_after_first = 0  # hits refused in a window after the first one in which the key was refused

    def hit(self, key: tuple, item: RateLimitItem) -> bool:
        """Count one hit; True when it is within the limit."""
        now = self._clock()
        with self._lock:
            start, hits = self._windows.get(key, (now, 0))
            if now - start >= item.window_s:
                start, hits = now, 0
            hits += 1
            self._windows[key] = (start, hits)
            if hits <= item.amount:
                return True
            self.limited += 1
            first = self._first_limited.setdefault(key, start)
            if start != first:
                self.over_after_first += 1
            return False
