"""The real services' error answers, shaped as their code builds them, for the hostile twin's fault shapes.

Why one module: a client that reads an error (caveclient's `_raise_for_status` puts a 5xx body's `message` in its
HTTPError; the adaptive layer tells a rate limit or an item's fault from a server's bad moment by it) must meet the
real shapes, and every fault of the twin that imitates a real one answers through one of these.

- MaterializationEngine 5.26.4: both client namespaces register `errorhandler(Exception)` (blueprints/client/api.py
  line 49, api2.py line 93) returning `unhandled_exception` (blueprints/client/common.py lines 28-51): status 500 and
  `{"code": 500, "message": str(e), "traceback": [...]}`. flask-restx (1.3.0 in the engine's uv.lock) answers an error
  with the first handler registered for a matching class (flask_restx/api.py handle_error, per shared/REAL_SOURCES.md:
  not re-read here), and api.py's namespace is added first (app.py lines 119-121), so an `abort(404)`,
  an `abort(410)` and flask-limiter's RateLimitExceeded all become that 500. `str(e)` of a werkzeug HTTPException is
  `f"{code} {name}: {description}"` (werkzeug exceptions.py `HTTPException.__str__`, read in 3.1.8; the engine locks
  3.1.3). Unverified: what flask-restx 1.3.0 does with api2.py's BadRequest handler that re-raises (the twin: 500
  like every other error).
- PyChunkedGraph (pcgv1 app/common.py lines 85-115; main's app/common.py the same) and PCGL2Cache (app/common.py
  lines 86-111): `{"timestamp": request start, "duration": ms, "code": 500, "message": str(e), "traceback": [...]}`,
  the timestamp a str(datetime) (pcgv1 app/__init__.py CustomJsonEncoder). The twin never reads the clock: its
  timestamp is the world's as_of, its duration 0.
- nginx in front of both: 502 / 504 as HTML pages (the twin's are shorter than nginx's own).
"""

from __future__ import annotations

import datetime as dt
import http
import json

from sim.twin.http import Response

# the message of a pcgv1 KeyError raised by `edges_failsafe` on an undo/redo log row (backend/history.py lines
# 427-455: no sink/source ids, then `self.row[RemovedEdge]` of a row without edges): str(KeyError(_Column(...))) is the
# NamedTuple's repr (backend/utils/column_keys.py _Column, RemovedEdge); the object address is the twin's own
UNDO_ROW_KEYERROR = (
    "_Column(key=b'removed_edges', family_id='2', "
    "serializer=<pychunkedgraph.backend.utils.serializers.NumPyArray object at 0x7f3c2a1d9e50>)"
)


def _json(status: int, obj: dict, headers: dict[str, str] | None = None) -> Response:
    return Response(status, (json.dumps(obj, separators=(",", ":")) + "\n").encode(), "application/json", headers or {})


def http_exception_text(status: int, description: str) -> str:
    """str() of werkzeug's HTTPException for `abort(status, description)`: '404 Not Found: ...'."""
    return f"{status} {http.HTTPStatus(status).phrase}: {description}"


def engine_500(message: str, exc_type: str = "Exception") -> Response:
    """MaterializationEngine's `unhandled_exception`: every error of its client APIs, as a 500."""
    tb = ["Traceback (most recent call last):\n", f"{exc_type}: {message}\n"]
    return _json(500, {"code": 500, "message": message, "traceback": tb})


def engine_abort(status: int, description: str) -> Response:
    """`abort(status, description)` inside the engine's client APIs: a 500 whose message names the status."""
    name = http.HTTPStatus(status).phrase.replace(" ", "").replace("-", "")
    return engine_500(http_exception_text(status, description), f"werkzeug.exceptions.{name}")


def pcg_500(message: str, exc_type: str, as_of_s: float) -> Response:
    """PyChunkedGraph's and PCGL2Cache's `unhandled_exception`: any exception of a handler, as a 500."""
    start = dt.datetime.fromtimestamp(float(as_of_s), tz=dt.timezone.utc).replace(tzinfo=None)
    tb = ["Traceback (most recent call last):\n", f"{exc_type}: {message}\n"]
    return _json(500, {"timestamp": str(start), "duration": 0.0, "code": 500, "message": message, "traceback": tb})


def gateway(status: int) -> Response:
    """nginx's own page for a 502 (the upstream dropped the request) or a 504 (the upstream did not answer in time)."""
    text = {502: "502 Bad Gateway", 504: "504 Gateway Time-out"}[status]
    return Response(status, f"<html><body><h1>{text}</h1></body></html>".encode(), "text/html")
