"""Faults set by hand on a running twin: the answer a real server gives when something is wrong on its side.

What a client does with a refused request (a 5xx is transient, a 403 asks for a token, a 404 on a chunk is an
absent chunk) is checked by asking the twin to refuse exactly the requests a test names, and no others:
`server.faults.add("/lvl2_graph", 503)` answers 503 to every request whose path contains "/lvl2_graph",
`times=2` to the next two only, `headers` added to the answer (a 429's Retry-After); `server.faults.clear()`
ends them. The hostile twin (hostile.py) draws faults at random, this one does what
it is told: both go through the same gate (TwinApp.handle), after the token check, as a server's own answer.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from pipeline.sim.twin.http import Request, Response, error


@dataclass
class Fault:
    path: str  # a substring of the request's path
    status: int  # the answer's status
    times: int | None = None  # how many matching requests it answers (None: every one)
    headers: dict[str, str] = field(default_factory=dict)
    answered: int = 0


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []

    def add(self, path: str, status: int, times: int | None = None, headers: dict[str, str] | None = None) -> Fault:
        fault = Fault(path, status, times, dict(headers or {}))
        with self._lock:
            self._rules.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def before(self, req: Request) -> Response | None:
        """The answer of the first fault matching `req` that has answers left, else None (the request goes on)."""
        with self._lock:
            for fault in self._rules:
                if fault.path in req.path and (fault.times is None or fault.answered < fault.times):
                    fault.answered += 1
                    resp = error(fault.status, f"fault set on the twin for paths containing {fault.path!r}")
                    resp.headers.update(fault.headers)
                    return resp
        return None
