"""The hostile twin: limits drawn per run from plausible ranges and hidden from the client until the build ends.

`--hostile SEED` (python -m pipeline twin, make build SOURCE=twin TWIN_HOSTILE=SEED). What the real servers do
and where it was read:

- v1 (FlyWire, PyChunkedGraph `pcgv1`): uWSGI `buffer-size = 4096` ("Max request header size", uwsgi.ini). The
  request line, the URI again as REQUEST_URI, QUERY_STRING and every header must fit; a request over it is
  dropped by uWSGI and nginx answers 502. Applied to the chunkedgraph and meshing paths (the uWSGI app).
- v2: a front server's URL limit, drawn in [2048, 8192] bytes, answered 414.
- roots per change-log request (tabular_change_log_many builds every root's lineage in one request and
  the proxy cuts it at 600 s) and ids per level-2 cache request: drawn, 504 past them.
- latency per endpoint class: log-normal around the twin's median with a drawn spread; lineage, manifests and
  level-2 graphs also have a drawn tail (`TAIL_S`) past the client's first timeout (CLIENT_FIRST_TIMEOUT_S,
  which the twin build writes into the client's config: the real 600 s scaled down).
- ~2% of the API answers are 502, ~1% of connections are reset mid-body, materialization queries meet 429
  bursts with Retry-After (MaterializationEngine limiter.py limit_by_category("query")).

Every draw comes from numpy's generator seeded by (seed, what is drawn) or (seed, request number): the same seed
gives the same hidden limits in every process (never Python's salted hash()). Which request meets a fault
depends on the order requests arrive in, which threads decide: the limits do not.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from dataclasses import dataclass, field

import numpy as np

from pipeline.sim.twin.http import Request, Response

UWSGI_BUFFER_BYTES = 4096  # pcgv1 uwsgi.ini buffer-size (the real value, not drawn)
CLIENT_FIRST_TIMEOUT_S = 1.0  # the twin build's client read timeout (the real servers': 600 s)
TAIL_S = (1.3, 2.5)  # a slow answer: past the client's first timeout, within its one longer resend
P_502 = 0.02
P_RESET = 0.01
# 429 bursts: the first at a drawn early query, then one every drawn number of queries (a build makes tens of
# queries: every run meets some)
FIRST_BURST = (2, 6)
BURST_EVERY = (12, 30)
BURST_LEN = (2, 5)
RETRY_AFTER_S = 1
# ids per level-2 cache request: at the demo's scale (tens of level-2 nodes per neuron), so that the limit bites; the
# scale world's (hundreds to thousands per neuron) draws from SCALE_L2_IDS, else a neuron's graph costs ~75 requests
# (measured on 1,000 neurons with the demo's range). No public figure of the real l2cache's limit was found.
L2_IDS = (8, 64)
SCALE_L2_IDS = (256, 2048)

# (path fragment, endpoint class): the requests the hostility applies to (the API; not EM or segmentation chunks)
CLASSES = (
    ("/tabular_change_log_many", "change_log"),
    ("/operation_details", "operation_details"),
    ("/roots_binary", "roots"),
    ("/root_timestamps", "root_timestamps"),
    ("/delta_roots", "delta_roots"),
    ("/lvl2_graph", "level2_graph"),
    ("/l2cache/api/v1/table/", "l2cache"),
    ("/query", "query"),
    ("/manifest/", "manifest"),
)
SLOW = frozenset({"change_log", "level2_graph", "manifest"})  # the classes with a tail past the first timeout
UWSGI_PATHS = ("/segmentation/api/", "/meshing/")  # served by PyChunkedGraph's uWSGI on v1


def endpoint_class(path: str) -> str | None:
    for fragment, name in CLASSES:
        if fragment in path:
            return name
    return None


class Reset(Response):
    """An answer whose connection is closed after half its body (server.py sends it so)."""


def _rng(seed: int, *what: object) -> np.random.Generator:
    """A generator for one named draw: crc32 of the name (stable across processes, unlike hash())."""
    return np.random.default_rng([int(seed), *(zlib.crc32(str(w).encode()) for w in what)])


@dataclass(frozen=True)
class HiddenLimits:
    seed: int
    url_bytes: int  # v2's URL limit (414)
    change_log_roots: int  # roots per change-log request (504 past it)
    l2_ids: int  # ids per level-2 cache request (504 past it)
    first_burst: int  # the materialization query that meets the first 429 burst
    burst_every: int  # queries between bursts
    spread: dict[str, float] = field(default_factory=dict)  # log-normal sigma per endpoint class
    tail: dict[str, float] = field(default_factory=dict)  # probability of a slow answer per slow class

    @classmethod
    def draw(cls, seed: int, l2_ids: tuple[int, int] = L2_IDS) -> HiddenLimits:
        classes = sorted({name for _, name in CLASSES})
        return cls(
            seed=int(seed),
            url_bytes=int(_rng(seed, "url_bytes").integers(2048, 8193)),
            change_log_roots=int(_rng(seed, "change_log_roots").integers(3, 13)),
            l2_ids=int(_rng(seed, "l2_ids").integers(l2_ids[0], l2_ids[1] + 1)),
            first_burst=int(_rng(seed, "first_burst").integers(FIRST_BURST[0], FIRST_BURST[1] + 1)),
            burst_every=int(_rng(seed, "burst_every").integers(BURST_EVERY[0], BURST_EVERY[1] + 1)),
            spread={c: round(float(_rng(seed, "spread", c).uniform(0.3, 1.0)), 3) for c in classes},
            tail={c: round(float(_rng(seed, "tail", c).uniform(0.005, 0.02)), 4) for c in sorted(SLOW)},
        )

    def describe(self, flavor: str) -> dict[str, int]:
        """The limits a client could learn (printed only once the build has ended)."""
        out = {"change_log": self.change_log_roots, "l2cache": self.l2_ids}
        if flavor == "v1":
            out["header_buffer_bytes"] = UWSGI_BUFFER_BYTES
        else:
            out["url_bytes"] = self.url_bytes
        return out


def header_bytes(request_line: str, raw_path: str, query: str, headers: list[tuple[str, str]]) -> int:
    """What uWSGI's buffer must hold: the request line, the URI again (REQUEST_URI), QUERY_STRING, every header."""
    return len(request_line) + len(raw_path) + len(query) + sum(len(k) + len(v) for k, v in headers)


class Hostility:
    """Per server: the hidden limits, the request counter the per-request draws are seeded by, 429 bursts."""

    def __init__(self, seed: int, flavor: str, median_ms: float, l2_ids: tuple[int, int] = L2_IDS) -> None:
        self.limits = HiddenLimits.draw(seed, l2_ids)
        self.flavor = flavor
        self.median_ms = median_ms
        self._lock = threading.Lock()
        self._n = 0
        self._burst = 0
        self._queries = 0
        self.met: dict[str, int] = {"dropped_502": 0, "random_502": 0, "resets": 0, "rate_limited": 0,
                                    "over_limit_504": 0, "url_414": 0, "slow": 0}  # fmt: skip

    def _count(self, key: str) -> None:
        with self._lock:
            self.met[key] += 1

    def _draw(self) -> np.random.Generator:
        with self._lock:
            self._n += 1
            n = self._n
        return _rng(self.limits.seed, "request", n)

    def before(self, req: Request, url_bytes: int, buffer_bytes: int) -> Response | None:
        """The answer a limit gives instead of the handler's (None: the handler answers), after the latency."""
        if self.flavor == "v1" and req.path.startswith(UWSGI_PATHS) and buffer_bytes > UWSGI_BUFFER_BYTES:
            self._count("dropped_502")  # uWSGI: "invalid request block size", the request is dropped
            return _gateway(502)
        if self.flavor == "v2" and url_bytes > self.limits.url_bytes:
            self._count("url_414")
            return Response(414, b"<html><body><h1>414 Request-URI Too Large</h1></body></html>", "text/html")
        kind = endpoint_class(req.path)
        if kind is None:
            return None
        rng = self._draw()
        time.sleep(self._latency_s(kind, rng))
        if kind == "query" and self._rate_limited(rng):
            return Response(429, b'{"message":"rate limit exceeded"}', headers={"Retry-After": str(RETRY_AFTER_S)})
        if rng.random() < P_502:
            self._count("random_502")
            return _gateway(502)
        if kind == "change_log" and len(_ids(req, "root_ids")) > self.limits.change_log_roots:
            self._count("over_limit_504")
            return _gateway(504)
        if kind == "l2cache" and len(_ids(req, "l2_ids")) > self.limits.l2_ids:
            self._count("over_limit_504")
            return _gateway(504)
        return None

    def after(self, req: Request, resp: Response) -> Response:
        """Some answers lose their connection mid-body."""
        eligible = resp.status == 200 and endpoint_class(req.path) is not None and len(resp.body) > 1
        if eligible and self._draw().random() < P_RESET:
            self._count("resets")
            return Reset(resp.status, resp.body, resp.content_type, resp.headers)
        return resp

    def _latency_s(self, kind: str, rng: np.random.Generator) -> float:
        tail = self.limits.tail.get(kind, 0.0)
        if tail and rng.random() < tail:
            self._count("slow")
            return float(rng.uniform(*TAIL_S))
        if self.median_ms <= 0:
            return 0.0
        return float(self.median_ms / 1000.0 * np.exp(rng.normal(0.0, self.limits.spread[kind])))

    def _rate_limited(self, rng: np.random.Generator) -> bool:
        with self._lock:
            self._queries += 1
            due = self._queries >= self.limits.first_burst and (
                (self._queries - self.limits.first_burst) % self.limits.burst_every == 0
            )
            if self._burst == 0 and due:
                self._burst = int(rng.integers(BURST_LEN[0], BURST_LEN[1] + 1))
            if self._burst == 0:
                return False
            self._burst -= 1
            self.met["rate_limited"] += 1
            return True


def _ids(req: Request, key: str) -> list:
    try:
        return list(json.loads(req.body or b"{}").get(key, []))
    except (ValueError, AttributeError):
        return []


def _gateway(status: int) -> Response:
    text = {502: "502 Bad Gateway", 504: "504 Gateway Time-out"}[status]
    return Response(status, f"<html><body><h1>{text}</h1></body></html>".encode(), "text/html")
