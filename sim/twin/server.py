"""The twin's HTTP server: one process, threads per connection, on 127.0.0.1.

`serve_twin(world_dir, flavor=..., latency_ms=...)` starts it in-process on a free port (tests, the build) and stops
it on exit; the CLI runs `TwinServer.serve_forever()`. Every request goes through the same gate, in this order: the
faults a test installed (faults.py; none otherwise), URL length (414); when hostile (hostile.py, each step only with
its option on): what nginx and uWSGI answer in front of the app (header buffer 502, URL 414, drawn latency, random
502s, batch 504s, an item's stall then 504), then one of the P processes (`overload`) around the app: auth (401, or
middle_auth's redirect and 401s with `auth_redirect`), rate limits (the engine's wrapped 500) and items' 500s, latency,
drift, the handler (a bad argument: 400, or the real apps' 500s with `server_errors_500` / `wrapped_errors`); a
hostile twin may then reset the connection mid-body. Every request, whatever its answer, is logged with its status
and the bytes sent.

Outages (`go_down(seconds)`, or `outage=(n, seconds)`: the n-th request takes the twin down): the listening socket is
closed and every open connection shut down, so clients see connection refused or reset; after `seconds` the twin
serves again on the same port. Why: a build must survive a host that is away for a while, mid-build.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from sim.twin import chunkedgraph, hostile, info, l2cache, layers, materialization, meshing
from sim.twin.cache import cache_summary, default_draco_bin_nm, ensure_cache
from sim.twin.drift import Drift
from sim.twin.faults import Fault, Faults
from sim.twin.http import Request, Response, Router, error, parse_query
from sim.twin.limits import TwinLimits
from sim.twin.log import RequestLog, RequestRecord
from sim.twin.model import TwinWorld
from sim.twin.scale import ScaleWorld

FLAVORS = ("v1", "v2")
TOKEN = "cb2d0e7f1a2b3c4d5e6f708192a3b4c5"  # the twin's CAVE token (a hex string, as the real ones)
_PUBLIC = ("/em/", "/ws/")
POLL_S = 0.05  # how often the accept loop looks for a shutdown (stop, an outage): a test's twin stops at once


class TwinApp:
    """Everything a handler needs: the world, the flavour, the limits, where the twin is reachable."""

    def __init__(
        self,
        world: TwinWorld | ScaleWorld,
        flavor: str,
        limits: TwinLimits,
        log: RequestLog,
        draco_bin_nm: float,
        l2cache_enabled: bool = True,
        require_token: bool = True,
        hostile_seed: int | None = None,
        faults: Iterable[Fault] = (),
        hostile_off: Iterable[str] = (),
    ) -> None:
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {FLAVORS}, got {flavor!r}")
        self.world = world
        self.flavor = flavor
        self.limits = limits
        self.log = log
        self.draco_bin_nm = draco_bin_nm
        self.l2cache = l2cache_enabled
        self.require_token = require_token
        l2_range = hostile.SCALE_L2_IDS if world.is_generated else hostile.L2_IDS
        self.hostility = None if hostile_seed is None else hostile.Hostility(
            hostile_seed, flavor, limits.latency_ms, l2_range, world=world, off=hostile_off
        )
        self.url = ""  # set once the socket is bound
        self.drift = Drift()  # no drift unless TwinServer(drift=...) applies one
        self.faults = Faults(faults)  # none unless a test adds them (faults.py)
        self.arrival: Callable[[], bool] | None = None  # TwinServer's outage trigger, when it has one
        self.ws_info = world.ws_info()
        self.resolution = np.asarray(self.ws_info["scales"][0]["resolution"], dtype=np.float64)
        self.router = Router()
        for module in (info, chunkedgraph, meshing, l2cache, materialization, layers):
            module.register(self.router, self)

    def handle(self, req: Request, url_bytes: int, buffer_bytes: int = 0) -> Response:
        faulted = self.faults.answer(req)
        if faulted is not None:
            return faulted
        if url_bytes > self.limits.url_bytes:
            return error(414, f"request URI of {url_bytes} bytes is longer than {self.limits.url_bytes}")
        public = req.path.startswith(_PUBLIC)
        hostility = self.hostility
        if hostility is None:
            return self._app(req, public)
        refused = hostility.front(req, url_bytes, buffer_bytes)
        if refused is not None:
            return refused
        if public:
            return hostility.after(req, self._app(req, public))
        with hostility.process(req):
            return hostility.after(req, self._app(req, public))

    def _app(self, req: Request, public: bool) -> Response:
        """What the service's app answers: its auth, its rate limits and items' faults (hostile), the drift, the
        handler (a handler's exception or bad argument in the real app's shape when hostile)."""
        hostility = self.hostility
        if self.require_token and not public:
            if hostility is not None and hostility.on("auth_redirect"):
                refused = hostility.auth(req, TOKEN, self.url)
                if refused is not None:
                    return refused
            elif req.header("Authorization") != f"Bearer {TOKEN}":
                return error(401, "a valid token is needed (Authorization: Bearer ...)")
        if hostility is not None and not public:
            refused = hostility.inside(req, TOKEN)
            if refused is not None:
                return refused
        if self.limits.latency_ms > 0 and (hostility is None or not hostility.draws_latency(req.path)):
            time.sleep(self.limits.latency_ms / 1000.0)  # a hostile twin draws the API's latency itself
        refused = self.drift.before(req)
        if refused is not None:
            return refused
        try:
            resp = self.drift.after(req, self.router.dispatch(req))
        except (ValueError, KeyError) as exc:  # a malformed argument
            shaped = None if hostility is None else hostility.handler_error(req, str(exc), type(exc).__name__)
            return shaped or error(400, f"{type(exc).__name__}: {exc}")
        if resp.status == 400 and hostility is not None:
            return hostility.handler_error(req, _message(resp), "ValueError") or resp
        return resp

    def engine_abort(self, status: int, description: str) -> Response:
        """MaterializationEngine's `abort(status, description)`: wrapped in a 500 by a hostile twin with
        `wrapped_errors` (hostile.py), else that status with the twin's JSON error."""
        if self.hostility is None:
            return error(status, description)
        return self.hostility.engine_error(status, description)

    @property
    def wraps_errors(self) -> bool:
        return self.hostility is not None and self.hostility.on("wrapped_errors")


def _message(resp: Response) -> str:
    try:
        return str(json.loads(resp.body).get("message", ""))
    except (ValueError, AttributeError):
        return resp.body.decode("utf-8", "replace")


class _Server(ThreadingHTTPServer):
    """Threads per connection; keeps the open connections so that an outage can drop them."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:  # noqa: ANN001
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:  # noqa: ANN001
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Shut every open connection down (kept-alive ones and those mid-request): their clients see them end."""
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        """A client closing its keep-alive connection (or an outage closing it) is not an error worth a traceback."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError, ConnectionAbortedError, OSError)):
            return
        super().handle_error(request, client_address)


def _handler(app: TwinApp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, *args) -> None:  # noqa: ANN002 - the twin keeps its own log
            pass

        def _serve(self) -> None:
            start = time.perf_counter()
            parsed = urllib.parse.urlsplit(self.path)
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            if app.arrival is not None and app.arrival():
                return  # this request started an outage: its connection is gone
            app.log.arrived()  # from here on, the request is recorded whatever happens
            req = Request(self.command, parsed.path, parse_query(parsed.query), dict(self.headers), body)
            buffer_bytes = hostile.header_bytes(self.requestline, self.path, parsed.query, list(self.headers.items()))
            try:
                resp = app.handle(req, len(self.path.encode()), buffer_bytes)
            except Exception as exc:  # noqa: BLE001 - a handler's bug: a 500 with its traceback, as a Flask app
                traceback.print_exc()
                resp = error(500, f"{type(exc).__name__}: {exc}")
            payload = b"" if self.command == "HEAD" else resp.body
            if isinstance(resp, hostile.Reset):
                payload = payload[: len(payload) // 2]  # Content-Length promises the whole body: the client sees
                self.close_connection = True  # the connection end mid-body
            # Logged before the answer leaves: a client that has its answer finds its request in the log.
            app.log.add(
                method=self.command,
                path=parsed.path,
                query=parsed.query if len(parsed.query) <= 1024 else parsed.query[:1024] + "...",
                status=resp.status,
                bytes_sent=len(payload),
                url_bytes=len(self.path.encode()),
                duration_ms=round((time.perf_counter() - start) * 1000.0, 3),
            )
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            for key, value in resp.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_HEAD = _serve

    return Handler


class TwinServer:
    """A twin bound to 127.0.0.1:`port` (0: a free port). `url`, `token`, `requests` for callers."""

    def __init__(
        self,
        world_dir: str | Path | ScaleWorld,
        flavor: str = "v2",
        port: int = 0,
        limits: TwinLimits | None = None,
        log_path: str | Path | None = None,
        draco_bin_nm: float | None = None,
        l2cache_enabled: bool = True,
        drift: Drift | Iterable[str] = (),
        hostile_seed: int | None = None,
        faults: Iterable[Fault] = (),
        hostile_off: Iterable[str] = (),
        outage: tuple[int, float] | None = None,
    ) -> None:
        if isinstance(world_dir, ScaleWorld):  # a generated world: no files, no mesh cache
            world = world_dir
            self.cache_summary = {"draco_bin_nm": draco_bin_nm or default_draco_bin_nm()}
        else:
            cache = ensure_cache(world_dir, draco_bin_nm)
            self.cache_summary = cache_summary(cache)
            world = TwinWorld(world_dir, cache)
        self.log = RequestLog(log_path)
        self.app = TwinApp(
            world, flavor, limits or TwinLimits(), self.log, self.cache_summary["draco_bin_nm"], l2cache_enabled,
            hostile_seed=hostile_seed, faults=faults, hostile_off=hostile_off,
        )  # fmt: skip
        self.app.drift = Drift.of(drift)
        self.app.drift.apply(self.app)
        self.httpd = _Server(("127.0.0.1", port), _handler(self.app))
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app.url = self.url
        self.token = TOKEN
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._revive = threading.Event()  # set: an outage ends now (come_back, stop)
        self.down = False  # True while an outage refuses connections
        self.outages = 0  # outages begun
        self._arrivals = 0
        if outage is not None:
            after, seconds = int(outage[0]), float(outage[1])
            if after < 1 or seconds <= 0:
                raise ValueError(f"an outage needs a request count >= 1 and seconds > 0, got {after}:{seconds:g}")
            self.outage = (after, seconds)
            self.app.arrival = self._arrived
        else:
            self.outage = None

    @property
    def flavor(self) -> str:
        return self.app.flavor

    @property
    def limits(self) -> TwinLimits:
        return self.app.limits

    @limits.setter
    def limits(self, value: TwinLimits) -> None:
        self.app.limits = value

    @property
    def world(self) -> TwinWorld | ScaleWorld:
        return self.app.world

    @property
    def requests(self) -> list[RequestRecord]:
        return self.log.records()

    def start(self) -> TwinServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(POLL_S,), name="cb2-twin", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve until stop() (outages included: the serving thread is restarted after each)."""
        self.start()
        self._stopped.wait()

    def go_down(self, seconds: float) -> None:
        """An outage: refuse connections for `seconds` (the listening socket closed, every open connection shut
        down: clients see connection refused or reset), then serve again on the same port. Returns once the twin is
        down; `down` says when it is back (`come_back()` ends the outage early). A second call while down does
        nothing."""
        with self._lock:
            if self.down or self._stopped.is_set():
                return
            self.down = True
            self.outages += 1
            httpd = self.httpd
            self._revive.clear()  # before anything a client can see: a come_back() from then on ends this outage
        if self._thread is not None:
            httpd.shutdown()  # the accept loop ends (within POLL_S)
        httpd.server_close()
        httpd.drop_connections()
        threading.Thread(target=self._down_for, args=(float(seconds),), name="cb2-twin-outage", daemon=True).start()

    def come_back(self) -> None:
        """End an outage now (a test's or a drill's "the host is back"); no-op when the twin is up."""
        self._revive.set()

    def _down_for(self, seconds: float) -> None:
        self._revive.wait(seconds)
        self._come_back()

    def _come_back(self) -> None:
        with self._lock:
            if self._stopped.is_set():
                return
            self.httpd = _Server(("127.0.0.1", self.port), _handler(self.app))
            self._thread = threading.Thread(target=self.httpd.serve_forever, args=(POLL_S,), name="cb2-twin",
                                            daemon=True)  # fmt: skip
            self._thread.start()
            self.down = False

    def _arrived(self) -> bool:
        """Counts requests; the outage's request takes the twin down (True: that request is dropped with it)."""
        with self._lock:
            self._arrivals += 1
            due = self.outage is not None and self._arrivals == self.outage[0]
        if due:
            self.go_down(self.outage[1])
        return due

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()
            httpd, down = self.httpd, self.down
        self._revive.set()
        if not down:
            if self._thread is not None:
                httpd.shutdown()
            httpd.server_close()
            httpd.drop_connections()  # a kept-alive connection would go on being served by this stopped twin
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.log.close()


@contextlib.contextmanager
def serve_twin(
    world_dir: str | Path,
    flavor: str = "v2",
    latency_ms: float = 0.0,
    limits: TwinLimits | None = None,
    **kwargs,  # noqa: ANN003 - TwinServer's options
) -> Iterator[TwinServer]:
    """A running twin on a free port for the duration of the block."""
    limits = limits or TwinLimits(latency_ms=latency_ms)
    server = TwinServer(world_dir, flavor=flavor, limits=limits, **kwargs).start()
    try:
        yield server
    finally:
        server.stop()
