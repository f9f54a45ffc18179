"""Faults: answers the twin gives on purpose instead of its own, for the tests that need one exact misbehaviour.

Why: what the real servers do wrong is modelled where it is known (limits.py, the hostile twin's drawn faults in
hostile.py, drift.py's states); those bite where and when their rules say. A test of how a client meets ONE failure
(a 503 on the level-2 graph resent a bounded number of times, a 403 on the change log, a 404 for one chunk, a 429
with Retry-After, a connection lost mid-body, an empty answer) needs it at one request it chooses, so it installs
a rule:

    twin.app.faults.add(Fault(r"/lvl2_graph", status=503, times=2))

A rule matches a request whose path `re.search`es `path` (and whose method is `method`, when given). The first
matching rule with uses left answers instead of the twin: its status, body (default: a JSON error naming the
fault), content type and headers; with `reset`, the connection is lost halfway through that body (as hostile.py's
resets). Rules are checked before anything else the twin does (limits, token, latency, handlers): a fault is the
server failing, whoever asks. `times=None`: every matching request; `hits` counts the requests a rule answered.
The answers are logged as every other (server.py). No rule, no effect: the twin never installs one itself.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from sim.twin.hostile import Reset
from sim.twin.http import Request, Response


@dataclass
class Fault:
    """One rule: requests matching `path` (a regex, searched) and `method` answer `status` with `body`."""

    path: str
    status: int = 500
    body: bytes | None = None  # None: {"code": status, "message": "fault injected ..."}
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = None  # how many matching requests it answers (None: all)
    reset: bool = False  # lose the connection halfway through the body
    method: str | None = None
    hits: int = 0

    def __post_init__(self) -> None:
        self._regex = re.compile(self.path)

    def matches(self, req: Request) -> bool:
        method = "GET" if req.method == "HEAD" else req.method
        return bool(self._regex.search(req.path)) and (self.method is None or self.method == method)

    def response(self) -> Response:
        body = self.body
        if body is None:
            body = json.dumps({"code": self.status, "message": f"fault injected on {self.path}"}).encode()
        cls = Reset if self.reset else Response
        return cls(self.status, body, self.content_type, dict(self.headers))


class Faults:
    """The rules of one server (thread-safe: request threads consume `times`)."""

    def __init__(self, rules: Iterable[Fault] = ()) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = list(rules)

    def add(self, *rules: Fault) -> None:
        with self._lock:
            self._rules.extend(rules)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def __len__(self) -> int:
        return len(self._rules)

    def answer(self, req: Request) -> Response | None:
        """The answer of the first matching rule with uses left (spending one), else None."""
        if not self._rules:
            return None
        with self._lock:
            for rule in self._rules:
                if (rule.times is None or rule.hits < rule.times) and rule.matches(req):
                    rule.hits += 1
                    return rule.response()
        return None
