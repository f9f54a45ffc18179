"""`show HASH --neuroglancer` for the demo species: a local Neuroglancer on the demo world's own layers.

The demo world has no public layers, so this serves them itself on 127.0.0.1: the EM layer and the supervoxel
segmentation as precomputed layers (gzip chunks sent with Content-Encoding, as a bucket does, CORS open), and
the viewer from the `neuroglancer` package (its bundled client and its own server: no build, no network), whose
state groups the supervoxels of segments A and B at the time the row's labels were resolved (`equivalences`),
with both selected, centred on the row's point in the world's voxels.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from config.schema import SpeciesConfig
from core.errors import UserError
from shard.neuroglancer import labels_time_ms, segment_roots, viewer_state

LAYERS = {"em": "em", "seg": "segmentation"}  # URL prefix -> the world's layer folder


class _Handler(BaseHTTPRequestHandler):
    """`/em/...` and `/seg/...` from the world's layers (`.gz` chunks decoded by the browser), nothing else."""

    def __init__(self, *args, world: Path, **kwargs) -> None:  # noqa: ANN002, ANN003
        self._world = world
        super().__init__(*args, **kwargs)

    def log_message(self, *args) -> None:  # noqa: ANN002 - quiet
        pass

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        head, _, rel = path.lstrip("/").partition("/")
        if head not in LAYERS or not rel or any(part in ("", ".", "..") for part in rel.split("/")):
            return self.send_error(400, "bad path")
        file = self._world / LAYERS[head] / rel
        encoding = None
        if not file.is_file():
            file, encoding = file.with_name(file.name + ".gz"), "gzip"
            if not file.is_file():
                return self.send_error(404, "no such object")
        data = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/json" if rel == "info" else "application/octet-stream")
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def demo_state(cfg: SpeciesConfig, world: Path, base_url: str, sample_type: str, meta: dict) -> dict:
    """The row's state on the locally served layers: supervoxels grouped into segments A and B at label time."""
    from pipeline.sources.demo import DemoSource

    info = json.loads((world / "segmentation" / "info").read_text())
    voxel = [float(v) for v in info["scales"][0]["resolution"]]
    source = DemoSource(cfg, world)
    when_ms = labels_time_ms(sample_type, meta)
    when = when_ms / 1000.0 if when_ms is not None else float(cfg.as_of or 0)
    groups = [source.supervoxels_of(int(root), when) for root in segment_roots(sample_type, meta)]
    groups = [[str(int(s)) for s in g] for g in groups if len(g)]
    return viewer_state(
        f"precomputed://{base_url}/em", f"precomputed://{base_url}/seg", sample_type, meta, voxel,
        segments=[g[0] for g in groups], equivalences=groups, window_nm=cfg.em_window_nm,
    )  # fmt: skip


@contextlib.contextmanager
def serve_layers(world: Path, port: int = 0) -> Iterator[str]:
    """Serve the world's layers on 127.0.0.1:`port` (0: a free one) for the block; yields the base URL."""
    world = Path(world)
    if not (world / "em" / "info").is_file():
        raise UserError(f"no demo world in {world}: run `make build` (or `make demo-world`) first")
    try:
        httpd = ThreadingHTTPServer(("127.0.0.1", port), partial(_Handler, world=world))
    except OSError as exc:
        raise UserError(f"cannot serve the demo world's layers on 127.0.0.1:{port} ({exc.strerror or exc})") from None
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="cb2-layers", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def open_viewer(state: dict, port: int = 0) -> str:
    """A Neuroglancer viewer (the package's client and server, on 127.0.0.1) holding `state`; its URL. It lives
    as long as this process."""
    try:
        import neuroglancer
    except ModuleNotFoundError:
        raise UserError("the neuroglancer package is not installed: run `make setup`") from None
    neuroglancer.set_server_bind_address("127.0.0.1", bind_port=port)
    viewer = neuroglancer.Viewer()
    viewer.set_state(neuroglancer.ViewerState(state))
    _VIEWERS.append(viewer)  # the server holds viewers weakly
    return viewer.get_viewer_url()


_VIEWERS: list = []
