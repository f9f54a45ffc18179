"""A server of few processes (hostile option `overload`): at most P API requests are served at once, the rest wait.

Why: pcgv1 runs `processes = 64` uWSGI workers (uwsgi.ini line 19) behind nginx, with a listen queue of 4096 (line
48): a request past the busy workers waits in the queue, so its answer time grows with the requests in flight beyond
the workers, and a client that keeps too many in flight meets its own timeouts, not an error. The twin's P is drawn
small (hostile.PROCESSES) with a service time per request S, so that the answer time of a client keeping N requests
in flight is about N x S / P once N > P: the in-flight count at which it reaches the client's first timeout T is
N* = P x T / S. hostile.py sets S from P so that N* is the geometric mean of 3P and 32: a client keeping ~3P in flight
waits ~0.6 T (almost never a timeout), one keeping 32 waits ~1.5-2.3 T (timeouts often).

Waiting is first come, first served (a ticket queue, as the listen queue is): a thread's turn never depends on the
scheduler's luck. A request whose client has given up is still served (uWSGI works on it after nginx has closed the
connection), so over-concurrency costs the server too. Only the service time is spent holding a process: the drawn
latency and slow tails of the `limits` option and the item stalls are spent outside it (the twin's choice, so that a
slow answer does not starve the tuning above; a real slow request holds its worker).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator


class Processes:
    """P slots handed out in arrival order; `met` counts requests that queued, the most in the server at once, and
    the longest wait (ms)."""

    def __init__(
        self, n: int, service_s: float, jitter: float = 0.2, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        if n < 1:
            raise ValueError("a server needs at least one process")
        self.n = int(n)
        self.service_s = float(service_s)
        self.jitter = float(jitter)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._free = self.n
        self._waiting: deque[threading.Event] = deque()
        self._inside = 0
        self.met = {"queued": 0, "max_in_flight": 0, "max_wait_ms": 0}

    def _acquire(self) -> float:
        start = time.monotonic()
        with self._lock:
            self._inside += 1
            self.met["max_in_flight"] = max(self.met["max_in_flight"], self._inside)
            if self._free > 0 and not self._waiting:
                self._free -= 1
                return 0.0
            turn = threading.Event()
            self._waiting.append(turn)
            self.met["queued"] += 1
        turn.wait()  # a releasing request hands its slot over (no free count in between)
        waited = time.monotonic() - start
        with self._lock:
            self.met["max_wait_ms"] = max(self.met["max_wait_ms"], int(waited * 1000))
        return waited

    def _release(self) -> None:
        with self._lock:
            self._inside -= 1
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._free += 1

    @contextlib.contextmanager
    def serve(self, u: float = 0.5) -> Iterator[None]:
        """Hold a process for the service time (scaled by 1 +- jitter from `u` in [0, 1)) around the block."""
        self._acquire()
        try:
            self._sleep(self.service_s * (1.0 + self.jitter * (2.0 * u - 1.0)))
            yield
        finally:
            self._release()
