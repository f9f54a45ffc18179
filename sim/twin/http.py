"""Requests, responses and routing for the twin's handlers (no sockets here: see server.py)."""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json_body(self) -> dict:
        return json.loads(self.body or b"{}")

    def header(self, name: str, default: str = "") -> str:
        for k, v in self.headers.items():
            if k.lower() == name.lower():
                return v
        return default

    def flag(self, name: str, default: bool = False) -> bool:
        """A boolean query argument as Flask apps read them ('True', 'true', '1')."""
        if name not in self.query:
            return default
        return self.query[name] in ("True", "true", "1")


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(obj: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(status, (json.dumps(obj, separators=(",", ":")) + "\n").encode(), "application/json", headers or {})


def error(status: int, message: str) -> Response:
    return json_response({"code": status, "message": message}, status)


def parse_query(raw: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(raw, keep_blank_values=True))


Handler = Callable[..., Response]


class Router:
    """(methods, regex) -> handler(request, **named groups); the first match wins."""

    def __init__(self) -> None:
        self._routes: list[tuple[frozenset[str], re.Pattern, Handler]] = []

    def add(self, methods: str, pattern: str, handler: Handler) -> None:
        self._routes.append((frozenset(methods.split()), re.compile(pattern + r"\Z"), handler))

    def dispatch(self, req: Request) -> Response:
        allowed = False
        for methods, regex, handler in self._routes:
            m = regex.match(req.path)
            if m is None:
                continue
            allowed = True
            method = "GET" if req.method == "HEAD" else req.method
            if method in methods:
                return handler(req, **m.groupdict())
        return error(405 if allowed else 404, f"no route for {req.method} {req.path}")
