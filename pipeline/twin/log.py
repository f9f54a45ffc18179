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
    """Thread-safe, in memory; with `jsonl`, also appended (one JSON object a line) to that file."""

    def __init__(self, jsonl: str | Path | None = None) -> None:
        self._lock = threading.Lock()
        self._records: list[RequestRecord] = []
        self._file = open(jsonl, "a", encoding="utf-8") if jsonl else None  # noqa: SIM115 - kept open

    def add(self, **fields) -> RequestRecord:  # noqa: ANN003
        with self._lock:
            rec = RequestRecord(seq=len(self._records), **fields)
            self._records.append(rec)
            if self._file is not None:
                self._file.write(json.dumps(asdict(rec), sort_keys=True) + "\n")
                self._file.flush()
        return rec

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
