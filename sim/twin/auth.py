"""middle_auth_client's answers to a request without a valid token (hostile option `auth_redirect`).

Why: the twin's plain 401 is not what a CAVE API answers a browser-like request. middle_auth_client 3.19.0
(decorators.py `auth_required`, lines 282-430; the engine's uv.lock pins 3.19.0) reads the token from the
`Authorization: Bearer` header, else the `middle_auth_token` query argument, else the `middle_auth_token` cookie
(TOKEN_NAME, line 20; caveclient sets both header and cookie: base.py). Then:

- a header that does not start with "Bearer " -> 400 `{"error": "bad_auth_header", ...}`;
- a "programmatic" request (`is_programmatic_access`, lines 275-279: an Authorization, X-Requested-With or Origin
  header) without any token -> 401 `{"error": "no_token", ...}`; with a token the auth service does not know -> 401
  `{"error": "invalid_token", "message": "Unauthorized - Token is Invalid or Expired"}`, both with
  `WWW-Authenticate: Bearer realm="<authorize URI>"...`;
- any other request without a valid token -> 302 to `"https://" + STICKY_AUTH_URL + "/api/v1/authorize" +
  "?redirect=" + quote(request.url)` (lines 362, 418-421). That page is the auth service's login (an OAuth flow in a
  browser): HTML. A client that follows the redirect gets a 200 HTML page where it expected JSON (caveclient 8.2.1
  `handle_response` raises AuthException when the answer came through a redirect; a bare `.json()` fails decoding).

So a bad token in the Authorization header is a 401 here too, as the code says (the issue's "no or bad token ->
302" holds for a request without that header). The twin's login page is on its own host (`/sticky_auth/...`, real:
the global auth server over https) and answers 200 HTML at once: the OAuth redirects before it are not modelled.
Applies to the CAVE APIs, never to the public buckets (/em/, /ws/).
"""

from __future__ import annotations

import urllib.parse

from sim.twin.http import Request, Response, json_response

TOKEN_NAME = "middle_auth_token"
LOGIN_PATH = "/sticky_auth/api/v1/authorize"
LOGIN_PAGE = (
    b"<!DOCTYPE html><html><head><title>Sign in</title></head><body><h1>Sign in to continue</h1>"
    b"<p>The CAVE auth service needs you to sign in with Google.</p></body></html>"
)


def _cookie(req: Request, name: str) -> str | None:
    for part in req.header("Cookie").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def request_url(base_url: str, req: Request) -> str:
    """The request's own URL as Flask's `request.url` gives it (the query re-encoded)."""
    query = urllib.parse.urlencode(req.query)
    return f"{base_url}{req.path}" + (f"?{query}" if query else "")


def refuse(req: Request, token: str, base_url: str) -> Response | None:
    """middle_auth's answer for a request whose token is missing or wrong, else None (the request goes on)."""
    authorize = base_url + LOGIN_PATH
    header = req.header("Authorization")
    if header:
        if not header.startswith("Bearer "):
            realm = f'Bearer realm="{authorize}", error="invalid_request", error_description="Header must begin with \'Bearer\'"'  # noqa: E501
            body = {"error": "bad_auth_header", "message": "Authorization header must begin with 'Bearer'"}
            return json_response(body, 400, {"WWW-Authenticate": realm})
        given = header.split(" ")[1] if " " in header else ""
    else:
        given = req.query.get(TOKEN_NAME) or _cookie(req, TOKEN_NAME) or ""
    if given == token:
        return None
    programmatic = bool(header or req.header("X-Requested-With") or req.header("Origin"))
    if programmatic and not given:
        body = {"error": "no_token", "message": "Unauthorized - No Token Provided"}
        return json_response(body, 401, {"WWW-Authenticate": f'Bearer realm="{authorize}"'})
    if programmatic:
        realm = f'Bearer realm="{authorize}", error="invalid_token", error_description="Invalid/Expired Token"'
        body = {"error": "invalid_token", "message": "Unauthorized - Token is Invalid or Expired"}
        return json_response(body, 401, {"WWW-Authenticate": realm})
    location = authorize + "?redirect=" + urllib.parse.quote(request_url(base_url, req))
    return Response(302, b"", "text/html; charset=utf-8", {"Location": location})


def login_page() -> Response:
    return Response(200, LOGIN_PAGE, "text/html; charset=utf-8")
