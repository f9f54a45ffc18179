"""The twin's HTTP server: one process, threads per connection, on 127.0.0.1.

`serve_twin(world_dir, flavor=..., latency_ms=...)` starts it in-process on a free port (tests, the
build) and stops it on exit; `TwinServer.serve_forever()` is what the CLI runs. Every request goes
through the same gate, in this order: the faults a test installed (faults.py; none otherwise), URL length (414),
the hostile twin's hidden limits and faults when it is hostile (hostile.py: header buffer 502, URL 414, latency,
429, 502, 504 past a drawn batch size), token on the CAVE APIs (401), latency, the handler (a hostile twin may then
reset the connection mid-body); and every request, whatever its answer, is logged with its status and the bytes
sent.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from pipeline.sim.twin import chunkedgraph, hostile, info, l2cache, layers, materialization, meshing
from pipeline.sim.twin.cache import cache_summary, default_draco_bin_nm, ensure_cache
from pipeline.sim.twin.drift import Drift
from pipeline.sim.twin.faults import Fault, Faults
from pipeline.sim.twin.http import Request, Response, Router, error, parse_query
from pipeline.sim.twin.limits import TwinLimits
from pipeline.sim.twin.log import RequestLog, RequestRecord
from pipeline.sim.twin.model import TwinWorld
from pipeline.sim.twin.scale import ScaleWorld

FLAVORS = ("v1", "v2")
TOKEN = "cb2d0e7f1a2b3c4d5e6f708192a3b4c5"  # the twin's CAVE token (a hex string, as the real ones)
_PUBLIC = ("/em/", "/ws/")


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
        self.hostility = None if hostile_seed is None else hostile.Hostility(hostile_seed, flavor, limits.latency_ms,
                                                                             l2_range)  # fmt: skip
        self.url = ""  # set once the socket is bound
        self.drift = Drift()  # no drift unless TwinServer(drift=...) applies one
        self.faults = Faults(faults)  # none unless a test adds them (faults.py)
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
        if self.hostility is not None:
            refused = self.hostility.before(req, url_bytes, buffer_bytes)
            if refused is not None:
                return refused
        public = req.path.startswith(_PUBLIC)
        if self.require_token and not public and req.header("Authorization") != f"Bearer {TOKEN}":
            return error(401, "a valid token is needed (Authorization: Bearer ...)")
        if self.limits.latency_ms > 0 and (self.hostility is None or hostile.endpoint_class(req.path) is None):
            time.sleep(self.limits.latency_ms / 1000.0)  # a hostile twin draws the API's latency itself
        refused = self.drift.before(req)
        if refused is not None:
            return refused
        try:
            resp = self.drift.after(req, self.router.dispatch(req))
        except (ValueError, KeyError) as exc:  # a malformed argument
            return error(400, f"{type(exc).__name__}: {exc}")
        return resp if self.hostility is None else self.hostility.after(req, resp)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # noqa: ANN001
        """A client closing its keep-alive connection is not an error worth a traceback."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
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
            hostile_seed=hostile_seed, faults=faults,
        )  # fmt: skip
        self.app.drift = Drift.of(drift)
        self.app.drift.apply(self.app)
        self.httpd = _Server(("127.0.0.1", port), _handler(self.app))
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.app.url = self.url
        self.token = TOKEN
        self._thread: threading.Thread | None = None

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
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="cb2-twin", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
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
