"""The twin's log of every request: what tests and benchmarks count (requests, bytes, statuses)."""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class RequestRecord:
    seq: int
    method: str
    path: str
    query: str
    status: int
    bytes_sent: int  # response body bytes
    url_bytes: int  # length of the request target (path + query)
    duration_ms: float


class RequestLog:
    """Thread-safe, in memory; with `jsonl`, also appended (one JSON object a line) to that file.

    The server records a request before its answer leaves (a client holding its answer finds it here), and
    counts requests from arrival: `wait_idle` waits until every request that arrived has its record (a
    client that gave up on a slow answer has not waited for the server to finish it)."""

    def __init__(self, jsonl: str | Path | None = None) -> None:
        self._lock = threading.Condition()
        self._records: list[RequestRecord] = []
        self._in_flight = 0
        self._file = open(jsonl, "a", encoding="utf-8") if jsonl else None  # noqa: SIM115 - kept open

    def arrived(self) -> None:
        """A request came in: it will be recorded by `add`."""
        with self._lock:
            self._in_flight += 1

    def add(self, **fields) -> RequestRecord:  # noqa: ANN003
        with self._lock:
            rec = RequestRecord(seq=len(self._records), **fields)
            self._records.append(rec)
            if self._file is not None:
                self._file.write(json.dumps(asdict(rec), sort_keys=True) + "\n")
                self._file.flush()
            self._in_flight = max(0, self._in_flight - 1)
            self._lock.notify_all()
        return rec

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until every request that arrived is recorded; False if that did not happen within `timeout`."""
        with self._lock:
            return self._lock.wait_for(lambda: self._in_flight == 0, timeout)

    def records(self, since: int = 0) -> list[RequestRecord]:
        with self._lock:
            return list(self._records[since:])

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def summarize(records: list[RequestRecord]) -> dict:
    """Requests and bytes by kind of path (the first two path components)."""
    out: dict[str, dict[str, int]] = {}
    for r in records:
        key = "/".join(r.path.split("/")[:3])
        s = out.setdefault(key, {"requests": 0, "bytes": 0})
        s["requests"] += 1
        s["bytes"] += r.bytes_sent
    return out
