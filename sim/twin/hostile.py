"""The hostile twin: the real servers' hidden limits and fault shapes, drawn per run and hidden until the build ends.

`--hostile SEED` (python -m pipeline twin, make build SOURCE=twin TWIN_HOSTILE=SEED) turns on every option of
HOSTILE_OPTIONS; `--hostile-off NAME` (repeatable; build and preflight: --twin-hostile-off; Make:
TWIN_HOSTILE_OFF=a,b) turns some off; `TwinServer(hostile_seed=S, hostile_off=(...))` in code. The options, what
each does and where the real behaviour was read (unverified, all of it: no machine here reaches a real server):

- `limits`: v1 (FlyWire, pcgv1): uWSGI `buffer-size = 4096` (uwsgi.ini line 51) must hold the request line, the URI
  again as REQUEST_URI, QUERY_STRING and every header; over it uWSGI drops the request and nginx answers 502 (the
  chunkedgraph and meshing paths). v2: a front server's URL limit drawn in [2048, 8192] bytes, 414. Roots per
  change-log request (tabular_change_log_many builds every lineage in one request, the proxy cuts it at 600 s) and
  ids per level-2 cache request: drawn, 504 past them. Latency per endpoint class, log-normal around the twin's
  median; change logs, manifests and level-2 graphs with a drawn tail (`TAIL_S`) past the client's first timeout
  (CLIENT_FIRST_TIMEOUT_S, which the twin build writes into the client's config: the real 600 s scaled down).
- `flaky`: ~2% of the API's answers are nginx 502s, ~1% of connections are reset mid-body (the twin's magnitudes).
- `wrapped_errors`: MaterializationEngine answers every error of its client APIs as `500 {"code": 500, "message":
  "<code> <Name>: <description>", "traceback": [...]}` (errors.py); the texts of materialization.py are the engine's:
  "404 Not Found: version 9 not found in <datastack>" (blueprints/client/datastack.py line 52), "404 Not Found:
  Analysis table 'x' not found for version 3 in datastack <datastack>" (common.py validate_table_args), "410 Gone:
  This materialization version is not available" (common.py line 199, get_flat_model, the v2 routes); a v3 query of
  an expired version passes both checks and fails opening its dropped database (a 500 naming it; its exact text is
  unverified). Version and table metadata that are missing answer their own 404 with a JSON string (api2.py
  DatastackVersion "No version found", FrozenTableMetadata "No table named ..."): those are returned, not raised.
- `rate_limit`: flask-limiter per user (token) and endpoint, fixed windows, shared by every client of the twin, no
  Retry-After (ratelimit.py, where each fact was read); answered through the engine's handler: `500 {"message":
  "429 Too Many Requests: 3 per 4 second"}`. Window and amounts drawn (RATE_WINDOW_S, QUERIES_PER_WINDOW; "fast"
  listings FAST_FACTOR x as many, as the reference deployment's 2000 vs 200).
- `server_errors_500`: PyChunkedGraph (pcgv1 and main app/common.py unhandled_exception) and PCGL2Cache answer any
  exception of a handler as a 500 with their body (errors.pcg_500): where the kind twin answers a bad argument of
  the chunkedgraph, meshing or l2cache 400, the hostile one answers that 500.
- `item_faults`: roots that fail every time (items.py): a change log that answers 500 (pcgv1 edges_failsafe), one
  held past the client's timeout and resend then 504, a manifest and a level-2 graph that answer 500; the roots are
  `Hostility.items`.
- `auth_redirect`: middle_auth_client's answers without a valid token (auth.py): 302 to a login page (200 HTML) for
  a request without an Authorization header; 400 / 401 JSON for a bad header.
- `overload`: P processes serve the API (overload.py; pcgv1 runs 64 uWSGI processes behind nginx): at most P requests
  at once, the others wait in arrival order, each holds its process for a service time S; P drawn in PROCESSES, S
  set from P so that ~3P requests in flight answer within the client's first timeout and 32 do not.

Every draw comes from numpy's generator seeded by (seed, what is drawn) or (seed, request number): the same seed
gives the same hidden limits and items in every process (never Python's salted hash()). Which request meets a
random fault depends on the order requests arrive in, which threads decide: the limits and items do not. `met`
counts what the twin did; `describe()` what a client could learn, printed only once the build has ended.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from sim.twin import auth
from sim.twin.errors import engine_500, engine_abort, gateway, pcg_500
from sim.twin.http import Request, Response, error
from sim.twin.items import ItemFaults, draw_items
from sim.twin.overload import Processes
from sim.twin.ratelimit import FixedWindows, RateLimitItem, limited_endpoint

HOSTILE_OPTIONS = (
    "limits", "flaky", "wrapped_errors", "rate_limit", "server_errors_500", "item_faults", "auth_redirect", "overload",
)  # fmt: skip

UWSGI_BUFFER_BYTES = 4096  # pcgv1 uwsgi.ini buffer-size (the real value, not drawn)
CLIENT_FIRST_TIMEOUT_S = 1.0  # the twin build's client read timeout (the real servers': 600 s)
TAIL_S = (1.3, 2.5)  # a slow answer: past the client's first timeout, within its one longer resend
P_502 = 0.02
P_RESET = 0.01
# ids per level-2 cache request: at the demo's scale (tens of level-2 nodes per neuron), so that the limit bites; the
# scale world's (hundreds to thousands per neuron) draws from SCALE_L2_IDS, else a neuron's graph costs ~75 requests
# (measured on 1,000 neurons with the demo's range). No public figure of the real l2cache's limit was found.
L2_IDS = (8, 64)
SCALE_L2_IDS = (256, 2048)
# rate limits, scaled: a window of seconds instead of a minute, amounts that a tiny build's bank meets (its queries
# come in bursts of a few per partition: measured, see the README's twin section)
RATE_WINDOW_S = (3, 5)
QUERIES_PER_WINDOW = (2, 4)
FAST_FACTOR = 10
# overload: processes (scaled from 64), and the in-flight counts the service time is set between
PROCESSES = (2, 4)
CALM_IN_FLIGHT_PER_PROCESS = 3  # a client keeping 3P in flight should almost never time out
OVER_IN_FLIGHT = 32  # one keeping 32 in flight should time out often

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
PCG_PATHS = ("/segmentation/api/", "/meshing/", "/l2cache/")  # PyChunkedGraph's and PCGL2Cache's Flask apps
ENGINE_PATHS = ("/materialize/",)


def endpoint_class(path: str) -> str | None:
    for fragment, name in CLASSES:
        if fragment in path:
            return name
    return None


def hostile_options(off: Iterable[str] = ()) -> frozenset[str]:
    """Every option but those named in `off` (ValueError naming an unknown one)."""
    off = set(off)
    unknown = sorted(off - set(HOSTILE_OPTIONS))
    if unknown:
        raise ValueError(f"unknown hostile option {', '.join(unknown)} (known: {', '.join(HOSTILE_OPTIONS)})")
    return frozenset(HOSTILE_OPTIONS) - off


class Reset(Response):
    """An answer whose connection is closed after half its body (server.py sends it so)."""


def _rng(seed: int, *what: object) -> np.random.Generator:
    """A generator for one named draw: crc32 of the name (stable across processes, unlike hash())."""
    return np.random.default_rng([int(seed), *(zlib.crc32(str(w).encode()) for w in what)])


def service_time_s(processes: int) -> float:
    """S such that N* = P x T / S (overload.py) is the geometric mean of 3P and 32 in flight."""
    calm = CALM_IN_FLIGHT_PER_PROCESS * processes
    return round(processes * CLIENT_FIRST_TIMEOUT_S / math.sqrt(calm * OVER_IN_FLIGHT), 4)


@dataclass(frozen=True)
class HiddenLimits:
    seed: int
    url_bytes: int  # v2's URL limit (414)
    change_log_roots: int  # roots per change-log request (504 past it)
    l2_ids: int  # ids per level-2 cache request (504 past it)
    rate_window_s: int  # the rate limits' window
    queries_per_window: int  # "query" hits per user and endpoint per window
    processes: int  # API requests served at once
    service_s: float  # the time a request holds a process
    spread: dict[str, float] = field(default_factory=dict)  # log-normal sigma per endpoint class
    tail: dict[str, float] = field(default_factory=dict)  # probability of a slow answer per slow class

    @classmethod
    def draw(cls, seed: int, l2_ids: tuple[int, int] = L2_IDS) -> HiddenLimits:
        classes = sorted({name for _, name in CLASSES})
        processes = int(_rng(seed, "processes").integers(PROCESSES[0], PROCESSES[1] + 1))
        return cls(
            seed=int(seed),
            url_bytes=int(_rng(seed, "url_bytes").integers(2048, 8193)),
            change_log_roots=int(_rng(seed, "change_log_roots").integers(3, 13)),
            l2_ids=int(_rng(seed, "l2_ids").integers(l2_ids[0], l2_ids[1] + 1)),
            rate_window_s=int(_rng(seed, "rate_window_s").integers(RATE_WINDOW_S[0], RATE_WINDOW_S[1] + 1)),
            queries_per_window=int(
                _rng(seed, "queries_per_window").integers(QUERIES_PER_WINDOW[0], QUERIES_PER_WINDOW[1] + 1)
            ),
            processes=processes,
            service_s=service_time_s(processes),
            spread={c: round(float(_rng(seed, "spread", c).uniform(0.3, 1.0)), 3) for c in classes},
            tail={c: round(float(_rng(seed, "tail", c).uniform(0.005, 0.02)), 4) for c in sorted(SLOW)},
        )

    def rate_item(self, category: str) -> RateLimitItem:
        factor = FAST_FACTOR if category == "fast_query" else 1
        return RateLimitItem(self.queries_per_window * factor, self.rate_window_s)

    def describe(self, flavor: str, options: Iterable[str] = HOSTILE_OPTIONS) -> dict[str, int | str]:
        """The limits a client could learn (printed only once the build has ended)."""
        options = set(options)
        out: dict[str, int | str] = {}
        if "limits" in options:
            out.update({"change_log": self.change_log_roots, "l2cache": self.l2_ids})
            if flavor == "v1":
                out["header_buffer_bytes"] = UWSGI_BUFFER_BYTES
            else:
                out["url_bytes"] = self.url_bytes
        if "rate_limit" in options:
            out["query_rate"] = str(self.rate_item("query"))
            out["fast_query_rate"] = str(self.rate_item("fast_query"))
        if "overload" in options:
            out["processes"] = self.processes
            out["service_ms"] = int(round(self.service_s * 1000))
        return out


def header_bytes(request_line: str, raw_path: str, query: str, headers: list[tuple[str, str]]) -> int:
    """What uWSGI's buffer must hold: the request line, the URI again (REQUEST_URI), QUERY_STRING, every header."""
    return len(request_line) + len(raw_path) + len(query) + sum(len(k) + len(v) for k, v in headers)


# What `Hostility.met` counts (a client-side test reads them): dropped_502 (v1 requests over uWSGI's buffer), url_414
# (v2 URLs over the drawn limit), over_limit_504 (batches past the drawn roots / l2 ids), slow (answers in the slow
# tail), random_502, resets (`flaky`), rate_limited (every rate-limit refusal), over_after_first (refusals in a window
# after the first one in which that user and endpoint met the limit: 0 for a client that slows down after its first
# limit), wrapped_500 (the engine's wrapped errors, rate limits included), server_500 (PCG / l2cache 500s for a bad
# argument), item_500 and item_stalled (requests the items' faults answered), redirected (302s to the login page),
# queued (API requests that waited for a process), max_in_flight (the most API requests inside the twin at once,
# waiting ones included), max_wait_ms (the longest wait for a process).
MET_KEYS = (
    "dropped_502", "url_414", "over_limit_504", "slow", "random_502", "resets", "rate_limited", "over_after_first",
    "wrapped_500", "server_500", "item_500", "item_stalled", "redirected", "queued", "max_in_flight", "max_wait_ms",
)  # fmt: skip


class Hostility:
    """Per server: the options on, the hidden limits, the drawn items, the rate windows, the processes, and `met`.

    server.py calls, in a request's order: `front` (before anything: nginx's and uWSGI's refusals, latency, random
    502s, batch 504s, item stalls), `process` (a context holding one of the P processes), `auth` (middle_auth's
    answers), `inside` (after auth: rate limits, items' 500s), `engine_error` / `handler_error` (an error of the
    engine or of a handler in the real app's shape), `after` (resets)."""

    def __init__(self, seed: int, flavor: str, median_ms: float, l2_ids: tuple[int, int] = L2_IDS,
                 world: object | None = None, off: Iterable[str] = ()) -> None:  # fmt: skip
        self.options = hostile_options(off)
        self.seed = int(seed)
        self.limits = HiddenLimits.draw(seed, l2_ids)
        self.flavor = flavor
        self.median_ms = median_ms
        self._lock = threading.Lock()
        self._n = 0
        self.met: dict[str, int] = dict.fromkeys(MET_KEYS, 0)
        self.as_of_s = float(world.summary["time"]["as_of"]) if world is not None else 0.0  # type: ignore[attr-defined]
        self.items: dict[str, int] = draw_items(seed, world) if self.on("item_faults") and world is not None else {}
        self.item_faults = ItemFaults(self.items, self.as_of_s, self._count)
        self.windows = FixedWindows()
        lim = self.limits
        self.processes = Processes(lim.processes, lim.service_s) if self.on("overload") else None

    def on(self, option: str) -> bool:
        return option in self.options

    def describe(self) -> dict[str, int | str]:
        return self.limits.describe(self.flavor, self.options)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.met[key] += n

    def _draw(self) -> np.random.Generator:
        with self._lock:
            self._n += 1
            n = self._n
        return _rng(self.limits.seed, "request", n)

    def draws_latency(self, path: str) -> bool:
        """True when this twin's latency for `path` is drawn here (else the kind twin's fixed latency applies)."""
        return self.on("limits") and endpoint_class(path) is not None

    # ------------------------------------------------------------------ in front of the app
    def front(self, req: Request, url_bytes: int, buffer_bytes: int) -> Response | None:
        """The answer nginx or uWSGI gives instead of the app's (None: the app answers), after the latency."""
        limits = self.on("limits")
        if limits and self.flavor == "v1" and req.path.startswith(UWSGI_PATHS) and buffer_bytes > UWSGI_BUFFER_BYTES:
            self._count("dropped_502")  # uWSGI: "invalid request block size", the request is dropped
            return gateway(502)
        if limits and self.flavor == "v2" and url_bytes > self.limits.url_bytes:
            self._count("url_414")
            return Response(414, b"<html><body><h1>414 Request-URI Too Large</h1></body></html>", "text/html")
        if self.on("item_faults"):
            stalled = self.item_faults.stall(req)
            if stalled is not None:
                return stalled
        kind = endpoint_class(req.path)
        if kind is None:
            return None
        rng = self._draw()
        if limits:
            time.sleep(self._latency_s(kind, rng))
        if self.on("flaky") and rng.random() < P_502:
            self._count("random_502")
            return gateway(502)
        if limits and kind == "change_log" and len(_ids(req, "root_ids")) > self.limits.change_log_roots:
            self._count("over_limit_504")
            return gateway(504)
        if limits and kind == "l2cache" and len(_ids(req, "l2_ids")) > self.limits.l2_ids:
            self._count("over_limit_504")
            return gateway(504)
        return None

    @contextlib.contextmanager
    def process(self, req: Request) -> Iterator[None]:
        """One of the P processes held around the app's work (no-op without `overload`)."""
        if self.processes is None:
            yield
            return
        try:
            with self.processes.serve(float(self._draw().random())):
                yield
        finally:
            with self._lock:
                self.met.update(self.processes.met)

    # ------------------------------------------------------------------ the app
    def auth(self, req: Request, token: str, base_url: str) -> Response | None:
        """middle_auth's answer to a missing or wrong token (`auth_redirect`; None: go on). Without the option the
        server answers its own 401."""
        if req.path == auth.LOGIN_PATH:
            return auth.login_page()
        refused = auth.refuse(req, token, base_url)
        if refused is not None and refused.status == 302:
            self._count("redirected")
        return refused

    def inside(self, req: Request, token: str) -> Response | None:
        """After auth: the rate limit of (user, endpoint), an item's 500."""
        if self.on("rate_limit"):
            limited = limited_endpoint(req.path)
            if limited is not None:
                category, endpoint = limited
                item = self.limits.rate_item(category)
                if not self.windows.hit((token, endpoint), item):
                    with self._lock:
                        self.met["rate_limited"] = self.windows.limited
                        self.met["over_after_first"] = self.windows.over_after_first
                    return self.engine_error(429, str(item))
        if self.on("item_faults"):
            return self.item_faults.refuse(req)
        return None

    def engine_error(self, status: int, description: str) -> Response:
        """MaterializationEngine's answer to `abort(status, description)`: the wrapped 500 (or, without
        `wrapped_errors`, that status with the twin's JSON error)."""
        if not self.on("wrapped_errors"):
            return error(status, description)
        self._count("wrapped_500")
        return engine_abort(status, description)

    def handler_error(self, req: Request, message: str, exc_type: str) -> Response | None:
        """A handler's exception or bad-argument 400 as the real app answers it: PyChunkedGraph's and PCGL2Cache's 500
        (`server_errors_500`), the engine's wrapped 500 (`wrapped_errors`); None: the kind twin's 400."""
        if req.path.startswith(PCG_PATHS) and self.on("server_errors_500"):
            self._count("server_500")
            return pcg_500(message, exc_type, self.as_of_s)
        if req.path.startswith(ENGINE_PATHS) and self.on("wrapped_errors"):
            self._count("wrapped_500")
            return engine_500(message, exc_type)
        return None

    def after(self, req: Request, resp: Response) -> Response:
        """Some answers lose their connection mid-body (`flaky`)."""
        eligible = resp.status == 200 and endpoint_class(req.path) is not None and len(resp.body) > 1
        if self.on("flaky") and eligible and self._draw().random() < P_RESET:
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


def _ids(req: Request, key: str) -> list:
    try:
        return list(json.loads(req.body or b"{}").get(key, []))
    except (ValueError, AttributeError):
        return []
