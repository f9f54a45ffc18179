"""`python -m pipeline twin --replay DIR`: serve a recording (`preflight --record DIR`) as the servers answered it.

A recording holds every exchange of one preflight (pipeline/sources/transport.py: requests.jsonl, bodies/,
and the species config it ran with, config.yaml). The replay listens on 127.0.0.1, one port per origin the
recording talked to (a datastack's CAVE server, its chunkedgraph host, buckets), and answers each request
with the recorded answer to the same method, URL and body (in recorded order when the same request was
answered several times; the last one again after that). Recorded origins in answers and in the config are
rewritten to the replay's, so the real clients follow them here; `gs://` and `s3://` paths too, to the port
standing in for storage.googleapis.com / s3.amazonaws.com. A request not in the recording is answered 404
and counted (`misses`): preflight against the replay of its own recording makes none and gives its report.
"""

from __future__ import annotations

import contextlib
import threading
import urllib.parse
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from config.schema import SpeciesConfig
from core.errors import UserError
from pipeline.sources.transport import BODIES, EXCHANGES, Exchange, digest, read_exchanges, redact_url

CONFIG = "config.yaml"
_STORES = {"gs://": "https://storage.googleapis.com/", "s3://": "https://s3.amazonaws.com/"}
_URL_KEYS = ("server_address", "em_cloudpath", "seg_cloudpath")
_SCHEMES = ("precomputed://", "graphene://", "middleauth+")


def origin_of(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _key(url: str, method: str, body: bytes) -> tuple[str, str, str]:
    return method.upper(), redact_url(url, ()), digest(body) if body else ""


class ReplayServer:
    """A recording served on 127.0.0.1 (`port` for the first origin, free ports for the others)."""

    def __init__(self, directory: str | Path, port: int = 0) -> None:
        self.directory = Path(directory)
        if not (self.directory / EXCHANGES).is_file():
            raise UserError(f"{self.directory} is not a recording: {EXCHANGES} is missing (record one with "
                            "`python -m pipeline preflight --species S --record DIR`)")  # fmt: skip
        self.exchanges: list[Exchange] = read_exchanges(self.directory)
        self._answers: dict[tuple[str, str, str], list[Exchange]] = defaultdict(list)
        for ex in self.exchanges:
            if ex.status:  # a connection error has no answer to give
                body = self._body(ex.request_body)
                self._answers[_key(ex.url, ex.method, body)].append(ex)
        self._served: dict[tuple[str, str, str], int] = defaultdict(int)
        self._lock = threading.Lock()
        self.misses: list[str] = []
        self.origins: dict[str, str] = {}  # recorded origin -> replay origin
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        recorded = sorted({origin_of(ex.url) for ex in self.exchanges})
        for i, origin in enumerate(recorded):
            httpd = ThreadingHTTPServer(("127.0.0.1", port if i == 0 else 0), self._handler(origin))
            httpd.daemon_threads = True
            self._servers.append(httpd)
            self.origins[origin] = f"http://127.0.0.1:{httpd.server_address[1]}"
        self._rewrites = sorted(self.origins.items(), key=lambda kv: -len(kv[0]))
        for store, https in _STORES.items():
            if origin_of(https) in self.origins:
                self._rewrites.append((store, self.origins[origin_of(https)] + "/"))

    # ------------------------------------------------------------------ answers
    def _body(self, name: str) -> bytes:
        return (self.directory / BODIES / name).read_bytes() if name else b""

    def rewrite(self, text: str) -> str:
        """Recorded origins (and gs:// / s3:// paths) as the replay's."""
        for old, new in self._rewrites:
            text = text.replace(old, new)
        return text

    def answer(self, origin: str, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        key = _key(origin + path, method, body)
        with self._lock:
            found = self._answers.get(key)
            if not found:
                self.misses.append(f"{method} {origin}{path}")
                return 404, {"Content-Type": "application/json"}, b'{"message": "not in the recording"}'
            ex = found[min(self._served[key], len(found) - 1)]
            self._served[key] += 1
        data = self._body(ex.response_body)
        headers = dict(ex.response_headers)
        if not any(k.lower() == "content-encoding" for k in headers):
            with contextlib.suppress(UnicodeDecodeError):  # binary (chunks, fragments, Arrow) is served as is
                data = self.rewrite(data.decode()).encode()
        return ex.status, headers, data

    def _handler(self, origin: str) -> type[BaseHTTPRequestHandler]:
        replay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

            def _serve(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                method = "GET" if self.command == "HEAD" else self.command
                status, headers, data = replay.answer(origin, method, self.path, body)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _serve

        return Handler

    # ------------------------------------------------------------------ the config
    def config(self) -> SpeciesConfig:
        """The recorded species config with its endpoints pointing at the replay."""
        raw = yaml.safe_load((self.directory / CONFIG).read_text())
        for key in _URL_KEYS:
            if raw.get(key):
                raw[key] = self._rewrite_path(str(raw[key]))
        return SpeciesConfig.model_validate(raw)

    def _rewrite_path(self, value: str) -> str:
        prefix, rest = "", value
        for scheme in _SCHEMES:
            while rest.startswith(scheme):
                prefix, rest = prefix + scheme, rest[len(scheme):]  # fmt: skip
        for store, https in _STORES.items():
            if rest.startswith(store):
                rest = https + rest[len(store):]  # fmt: skip
        return prefix + self.rewrite(rest)

    def write_config(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        cfg = self.config()
        path = folder / f"{cfg.species}.yaml"
        path.write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=True))
        return path

    # ------------------------------------------------------------------ running
    def start(self) -> ReplayServer:
        for httpd in self._servers:
            thread = threading.Thread(target=httpd.serve_forever, name="cb2-replay", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop serving (if started) and close the sockets."""
        for httpd in self._servers:
            if self._threads:
                httpd.shutdown()
            httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=5)


def run_replay_cli(directory: Path, port: int, echo: Callable[[str], None]) -> None:
    """Serve the recording until SIGINT / SIGTERM, after printing how to point preflight at it."""
    import signal

    try:
        server = ReplayServer(directory, port)
    except OSError as exc:
        raise UserError(
            f"cannot serve the replay on 127.0.0.1:{port} ({exc.strerror or exc}); pick another --port"
        ) from None
    folder = Path(directory) / "replay-config"
    path = server.write_config(folder)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    echo(f"replay of {directory}: {len(server.exchanges)} recorded exchanges")
    for old, new in server.origins.items():
        echo(f"  {old} -> {new}")
    echo(f"  config: {path}")
    echo(f"  run: CB2_CONFIG_DIR={folder} CAVE_TOKEN=replay python -m pipeline preflight --species {path.stem}")
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.stop()
        echo(f"replay stopped; {len(server.misses)} requests were not in the recording"
             + (f" (first: {server.misses[0]})" if server.misses else ""))  # fmt: skip


__all__ = ["ReplayServer", "run_replay_cli"]
