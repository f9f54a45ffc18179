"""Every HTTP exchange of this process, seen in one place: counted, timed and (optionally) recorded.

caveclient's clients are `requests` sessions, and so is cloud-files (its HttpInterface makes a
`requests.Session` per interface, mounting its own HTTPAdapter subclass, and `requests.get` / `requests.head`
open one each), so `requests.adapters.HTTPAdapter.send` is the one door every request of caveclient and
cloud-volume goes through (below the sessions' response hooks: an answer a hook refuses, such as CaveSource's
`missing_tos` one, is still seen). `Recorder` wraps it while active: each exchange is timed and classed by
endpoint, and with a directory it is written there (requests.jsonl + bodies/) for
`python -m pipeline twin --replay DIR`.

Never written: the Authorization header, cookies (Cookie, Set-Cookie), and the token itself anywhere it
shows up (URLs, bodies); a query argument whose name contains "token" has its value replaced too.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import requests
from requests.adapters import HTTPAdapter

REDACTED = "REDACTED"
DROPPED_REQUEST_HEADERS = {"authorization", "cookie", "proxy-authorization"}
DROPPED_RESPONSE_HEADERS = {"set-cookie", "content-length", "transfer-encoding", "connection"}
EXCHANGES = "requests.jsonl"
BODIES = "bodies"
# (endpoint class, regex on the URL path): the first match names the endpoint in the latency table
ENDPOINTS = (
    ("change_log", r"/tabular_change_log"),
    ("operation_details", r"/operation_details"),
    ("level2_graph", r"/lvl2_graph"),
    ("roots", r"/roots_binary|/roots\b"),
    ("root_timestamps", r"/root_timestamps"),
    ("mesh_manifest", r"/manifest"),
    ("l2cache", r"/l2cache/"),
    ("materialization_query", r"/materialize/.*/(query|count)$"),
    ("materialization", r"/materialize/"),
    ("info", r"/info/|/info$|/version$|/versions$"),
    ("chunkedgraph", r"/segmentation/"),
)


def endpoint_of(url: str) -> str:
    path = urllib.parse.urlsplit(url).path
    for name, pattern in ENDPOINTS:
        if re.search(pattern, path):
            return name
    return "bucket"  # EM, segmentation chunks, mesh fragments


def redact_url(url: str, secrets: Iterable[str]) -> str:
    """The URL with every secret replaced and every *token* query argument's value replaced."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, REDACTED if "token" in k.lower() else v) for k, v in urllib.parse.parse_qsl(parts.query, True)]
    return redact_text(urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query))), secrets)


def redact_text(text: str, secrets: Iterable[str]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, REDACTED)
    return text


def redact_bytes(data: bytes, secrets: Iterable[str]) -> bytes:
    for s in secrets:
        if s:
            data = data.replace(s.encode(), REDACTED.encode())
    return data


def body_bytes(body: object) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    return b""  # a stream: not recorded (nothing here sends one)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Exchange:
    seq: int
    method: str
    url: str  # redacted
    endpoint: str
    request_headers: dict[str, str]
    request_body: str  # sha256 of the (redacted) body, "" for none
    status: int
    response_headers: dict[str, str]
    response_body: str  # sha256 of the (decoded, redacted) body
    response_bytes: int
    duration_ms: float
    error: str = ""  # a connection error instead of an answer


class Recorder:
    """While active (a context manager), every `requests` exchange of this process is timed, classed and,
    with `directory`, written there. `secrets`: strings never written (the token)."""

    def __init__(self, directory: Path | None = None, secrets: Iterable[str] = ()) -> None:
        self.directory = Path(directory) if directory else None
        self.secrets = {s for s in secrets if s}
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._original = None
        self._log = None

    # ------------------------------------------------------------------ the door
    def __enter__(self) -> Recorder:
        if self.directory is not None:
            (self.directory / BODIES).mkdir(parents=True, exist_ok=True)
            self._log = (self.directory / EXCHANGES).open("w")
        self._original = original = HTTPAdapter.send
        recorder = self

        def send(adapter: HTTPAdapter, request: requests.PreparedRequest, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            start = time.perf_counter()
            try:
                response = original(adapter, request, *args, **kwargs)
            except requests.RequestException as exc:
                recorder._add(request, None, time.perf_counter() - start, type(exc).__name__)
                raise
            wire = None
            if kwargs.get("stream", args[0] if args else False):
                # cloud-files reads `raw` itself, undecoded: keep the bytes as sent and give it them again
                wire = response.raw.read(decode_content=False)
                response.raw.release_conn()
                response.raw = WireBody(wire, response.headers.get("Content-Encoding", ""))
            else:
                _ = response.content  # as the session would read it: the latency covers the body
            recorder._add(request, response, time.perf_counter() - start, "", wire)
            return response

        HTTPAdapter.send = send
        return self

    def __exit__(self, *exc: object) -> None:
        HTTPAdapter.send = self._original
        if self._log is not None:
            self._log.close()
            self._log = None

    # ------------------------------------------------------------------ one exchange
    def _add(
        self,
        request: requests.PreparedRequest,
        response: requests.Response | None,
        seconds: float,
        error: str,
        wire: bytes | None = None,
    ) -> None:
        self._learn_secret(request)
        sent = redact_bytes(body_bytes(request.body), self.secrets)
        # a streamed answer is kept as sent (its Content-Encoding with it); any other was decoded by requests
        content = wire if wire is not None else (response.content if response is not None else b"")
        got = content if wire is not None and _encoded(response) else redact_bytes(content, self.secrets)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in DROPPED_REQUEST_HEADERS}
        dropped = DROPPED_RESPONSE_HEADERS | (set() if wire is not None else {"content-encoding"})
        answer = {} if response is None else {k: v for k, v in response.headers.items() if k.lower() not in dropped}
        with self._lock:
            ex = Exchange(
                seq=len(self.exchanges),
                method=str(request.method),
                url=redact_url(str(request.url), self.secrets),
                endpoint=endpoint_of(str(request.url)),
                request_headers={k: redact_text(str(v), self.secrets) for k, v in headers.items()},
                request_body=digest(sent) if sent else "",
                status=response.status_code if response is not None else 0,
                response_headers=answer,
                response_body=digest(got),
                response_bytes=len(content),
                duration_ms=round(seconds * 1000.0, 3),
                error=error,
            )
            self.exchanges.append(ex)
            if self.directory is not None:
                for data in (sent, got):
                    path = self.directory / BODIES / digest(data)
                    if data and not path.exists():
                        path.write_bytes(data)
                self._log.write(json.dumps(asdict(ex), sort_keys=True) + "\n")
                self._log.flush()

    def _learn_secret(self, request: requests.PreparedRequest) -> None:
        """A bearer token a client sends is a secret from then on, whoever found it (env, secret file)."""
        auth = request.headers.get("Authorization", "")
        if auth.lower().startswith("bearer "):
            self.secrets.add(auth[7:].strip())

    # ------------------------------------------------------------------ figures
    def __len__(self) -> int:
        return len(self.exchanges)

    def latency(self) -> dict[str, dict[str, float]]:
        """Per endpoint class: requests, p50 / p90 / max latency in ms."""
        by: dict[str, list[float]] = {}
        for ex in self.exchanges:
            by.setdefault(ex.endpoint, []).append(ex.duration_ms)
        return {
            name: {
                "requests": len(ms),
                "p50_ms": round(float(np.percentile(ms, 50)), 1),
                "p90_ms": round(float(np.percentile(ms, 90)), 1),
                "max_ms": round(max(ms), 1),
            }
            for name, ms in sorted(by.items())
        }


def _encoded(response: requests.Response | None) -> bool:
    return response is not None and bool(response.headers.get("Content-Encoding"))


class WireBody(io.BytesIO):
    """A streamed answer's body, read once by the recorder, readable again as urllib3's response reads:
    `read(amt, decode_content=...)` and `stream(amt, decode_content=...)` (gzip and deflate decoded on ask)."""

    def __init__(self, data: bytes, encoding: str) -> None:
        super().__init__(data)
        self.encoding = encoding.lower()
        self.decode_content = False

    def _decoded(self, data: bytes, decode: bool | None) -> bytes:
        if not (decode if decode is not None else self.decode_content) or not data:
            return data
        if self.encoding == "gzip":
            return zlib.decompress(data, 16 + zlib.MAX_WBITS)
        if self.encoding == "deflate":
            return zlib.decompress(data)
        return data

    def read(self, amt: int | None = None, decode_content: bool | None = None, cache_content: bool = False) -> bytes:
        if decode_content or (decode_content is None and self.decode_content):
            return self._decoded(super().read(), True)  # a compressed body decodes whole
        return super().read(-1 if amt is None else amt)

    def stream(self, amt: int = 2**16, decode_content: bool | None = None) -> Iterator[bytes]:
        if decode_content and self.encoding in ("gzip", "deflate"):
            yield self.read(decode_content=True)
            return
        while chunk := super().read(amt):
            yield chunk

    def release_conn(self) -> None:
        pass


def read_exchanges(directory: Path) -> list[Exchange]:
    lines = (Path(directory) / EXCHANGES).read_text().splitlines()
    return [Exchange(**json.loads(line)) for line in lines if line.strip()]
