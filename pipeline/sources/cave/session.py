"""The state one CaveSource shares between its services: the config, the token, the clients, first contact.

Clients are opened lazily on first use and dropped on pickling (`Reconnecting`), so that a `CaveSource` can be
shipped to dask workers; each worker reconnects on its own first call. What survives pickling is what a worker must
not learn again: that a server was reached (later connection errors are transient), that the start-up checks
passed, the pinned time.

Every HTTP session a client uses is bounded here (`bound`): its endpoint's timeout, connection retries only (a
request that reached the server is resent by the adaptive layer alone), the build's budget of its host
(budget.py), and the hooks that say a terms-of-service refusal or a login redirect in one line (errors.py).

Tokens come from the `token` argument, the `CAVE_TOKEN` environment variable or the secret file caveclient reads for
the server (`<server>-cave-secret.json` before `cave-secret.json`); the graphene segmentation is handed the same one.
Nothing here writes them anywhere or prints them.
"""

from __future__ import annotations

import os
import socket
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import requests
from urllib3.util.retry import Retry

from config.schema import SpeciesConfig
from core.errors import TransientSourceError, UserError
from pipeline.sources import adaptive
from pipeline.sources import budget as budgets
from pipeline.sources.cave.errors import TOKEN_ENV, ErrorPolicy
from pipeline.sources.cave.limits import CaveLimits
from pipeline.sources.cave.values import graphene_identity

CONNECT_TIMEOUT_S = 10.0


def with_deadline(fn, seconds: float, what: str, transient: bool):  # noqa: ANN001, ANN201
    """fn() in a thread, given up after `seconds` (for client constructors that take no timeout)."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name="cb2-cave-deadline")
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        kind = TransientSourceError if transient else UserError
        raise kind(f"{what}: no answer within {seconds:.0f} s")
    if "error" in result:
        raise result["error"]
    return result["value"]


class _NoBrowser:
    """caveclient opens a web browser on a `missing_tos` 403 (base.py); a build runs on machines where that
    would start a text browser on the terminal. Its module gets this instead: the 403 becomes one line."""

    @staticmethod
    def open(url: str, *args: Any, **kwargs: Any) -> bool:
        return False


class Reconnecting:
    """An object that pickles without what each process opens for itself: the attributes `TRANSIENT` names are
    made by their factory (given the object) at construction and again after unpickling, and never pickled. A
    factory reads nothing of other objects: the parts of a source refer to each other, so when one is rebuilt
    another may not be yet."""

    TRANSIENT: ClassVar[dict[str, Callable[[Any], Any]]] = {}

    def _fresh(self) -> None:
        for name, make in self.TRANSIENT.items():
            setattr(self, name, make(self))

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self.TRANSIENT}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._fresh()


class CaveSession(Reconnecting, ErrorPolicy):
    """The config, limits, token, the opened clients (one handle each, None until opened) and the first contact."""

    TRANSIENT: ClassVar[dict[str, Callable[[Any], Any]]] = dict.fromkeys(
        ("cave_client", "cg_client", "mat_client", "l2_client", "em_cv", "seg_cv", "http_session"), lambda _: None
    )

    def __init__(self, cfg: SpeciesConfig, limits: CaveLimits, token: str | None) -> None:
        self.cfg = cfg
        self.limits = limits
        self._token_arg = token
        self.reached = False  # survives pickling: once reached, connection errors are transient
        self.checked = False  # the start-up checks passed (survives pickling: workers do not repeat them)
        self.as_of: float | None = None  # the pinned time, once known (Materialization.as_of)
        self.check_version: Callable[[], None] | None = None  # the start-up check of the pinned version or as_of
        self._fresh()

    # ------------------------------------------------------------------ tokens
    def token(self) -> str | None:
        """The explicit token, else CAVE_TOKEN; None lets caveclient read its secret files (secret_file)."""
        return self._token_arg or os.environ.get(TOKEN_ENV) or None

    def client_token(self) -> str | None:
        """The token the CAVE client uses: the explicit one, else the one caveclient read from its secret files
        (the server's own `<server>-cave-secret.json` before `cave-secret.json`, caveclient auth.py AuthClient).
        The graphene segmentation gets this one too: cloud-volume would look for a file named after the
        segmentation's host instead (cloudvolume/secrets.py cave_credentials), which on a deployment whose
        chunkedgraph has its own host (H01, fish1) is most likely `cave-secret.json`, another server's token."""
        token = self.token()
        if token is None and self.cave_client is not None:
            token = self.cave_client.auth.token or None
        return token

    def secret_file(self) -> Path | None:
        """The secret file caveclient reads for this server (AuthClient: `<server>-cave-secret.json` if it exists,
        else `cave-secret.json`), when one exists; never opened here."""
        from caveclient.auth import default_token_file, server_token_filename

        for path in (Path(server_token_filename(self.server)), Path(default_token_file).expanduser()):
            if path.is_file():
                return path
        return None

    # ------------------------------------------------------------------ servers, bounded sessions
    @property
    def timeout(self) -> tuple[float, float]:
        return (min(CONNECT_TIMEOUT_S, self.cfg.timeout_s), self.cfg.timeout_s)

    @property
    def server(self) -> str:
        if not self.cfg.server_address:
            raise UserError(f"{self.config_file}: server_address is required for source: cave")
        return self.cfg.server_address.rstrip("/")

    @property
    def local(self) -> str:
        """The datastack's local server (materialization, chunkedgraph, l2cache), else the global one."""
        return self.client().local_server or self.server

    def probe(self, url: str, key: str = "server_address") -> None:
        """Fail fast (DNS, refused, connect timeout) before handing a URL to a client with long retries."""
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        if not host:
            raise UserError(f"cannot read a host from {url!r}; check {self.config_file}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((host, port), timeout=self.timeout[0]):
                pass
        except OSError as exc:
            if self.reached:
                raise TransientSourceError(f"could not connect to {url} ({type(exc).__name__})") from None
            raise self.unreachable(url, exc, key) from None

    def bound(self, session: requests.Session) -> None:
        """Give a client's session timeouts (its endpoint's, set per request by the adaptive layer) and retries of
        connecting only: a request that reached the server is resent by the adaptive layer alone, which knows
        whether it timed out or was refused, so identical resends stay bounded (not urllib3 x runner x ...)."""
        retries = Retry(total=2, connect=2, read=0, status=0, other=0, backoff_factor=0.2, raise_on_status=False)
        adapter = adaptive.ScopedTimeoutAdapter(self.timeout, max_retries=retries)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.hooks["response"].append(self.tos_hook)
        session.hooks["response"].append(self.redirect_hook)

    def budget_host(self, url: str) -> None:
        """This species' request budget settings for `url`'s host (budget.py: one budget per host for the build)."""
        opts = self.cfg.cave_requests
        budgets.current().configure(budgets.host_of(url), opts.max_in_flight_per_host,
                                    opts.requests_per_minute_per_host, opts.outage_deadline_s)  # fmt: skip

    def http(self) -> requests.Session:
        """A bounded session of this source's own (mesh manifests, layer infos)."""
        if self.http_session is None:
            session = requests.Session()
            self.bound(session)
            self.http_session = session
        return self.http_session

    # ------------------------------------------------------------------ requests through the adaptive layer
    def batched(self, endpoint: str, items: list, send, start: int, what: str, url: str,  # noqa: ANN001
                failed: list | None = None) -> list:  # fmt: skip
        """`send(batch)` over `items` in batches the server accepts (adaptive.py); (batch, answer) pairs in order.
        An item the server cannot answer raises Unavailable, or (`failed` given) is appended there as (item,
        Unavailable) while the other items go on."""
        with self.guard(what, url):
            return adaptive.ADAPTIVE.run(
                url, endpoint, list(items), send, start=start, opts=self.cfg.cave_requests, what=what, failed=failed
            )

    def one(self, endpoint: str, what: str, url: str, fn):  # noqa: ANN001, ANN201
        """One request through the adaptive layer (its timeout, resend and 429 rules; nothing to bisect)."""
        return self.batched(endpoint, [None], lambda _: fn(), 1, what, url)[0][1]

    # ------------------------------------------------------------------ the CAVE client, first contact
    def opened(self, make, what: str):  # noqa: ANN001, ANN201
        """A sub-client (its constructor asks the server for versions, on a session not yet bounded)."""
        return with_deadline(make, 3 * self.cfg.timeout_s, f"opening the {what} client", self.reached)

    def sub_client(self, attr: str, what: str):  # noqa: ANN201 - a caveclient client of one service
        """The CAVE client's client of one service (`materialize`, `l2cache`), its session bounded."""
        client = self.client()
        with self.guard(what, self.local):
            sub = self.opened(lambda: getattr(client, attr), what)
        self.bound(sub.session)
        return sub

    def client(self):  # noqa: ANN201 - a caveclient CAVEclient
        """The CAVEclient (opened on first use; its constructor's requests are bounded by a deadline)."""
        if self.cave_client is None:
            import caveclient.base
            from caveclient import CAVEclient

            caveclient.base.webbrowser = _NoBrowser  # never a browser from a build (see _NoBrowser)

            self.probe(self.server)
            self.budget_host(self.server)
            with self.guard(f"opening datastack '{self.cfg.datastack}'", self.server):

                def open_client():  # noqa: ANN202
                    return CAVEclient(
                        self.cfg.datastack,
                        server_address=self.server,
                        auth_token=self.token(),
                        max_retries=2,
                        write_server_cache=False,
                    )

                client = with_deadline(open_client, 3 * self.cfg.timeout_s, f"opening {self.server}", self.reached)
                self.bound(client.info.session)
                local = client.local_server
            if local and urllib.parse.urlsplit(local).netloc != urllib.parse.urlsplit(self.server).netloc:
                self.probe(local)
                self.budget_host(local)
            self.reached = True
            self.cave_client = client
            if not self.checked:
                self.startup_checks()
        return self.cave_client

    def startup_checks(self) -> None:
        """The datastack's segmentation is the one `seg_cloudpath` reads; the pinned version (or as_of) is served
        (`check_version`, the materialization's)."""
        client = self.cave_client
        with self.guard("datastack info", self.server):
            source = client.info.segmentation_source()
        self.require_graphene(source)
        ours, theirs = graphene_identity(self.cfg.seg_cloudpath), graphene_identity(source or "")
        if ours is not None and theirs is not None and ours != theirs:
            raise UserError(
                f"{self.config_file}: seg_cloudpath {self.cfg.seg_cloudpath} is not datastack "
                f"'{self.cfg.datastack}''s segmentation ({source}): roots would come from one and voxels from "
                "the other; point seg_cloudpath at the datastack's segmentation_source"
            )
        if self.check_version is not None:
            self.check_version()
        self.checked = True

    def require_graphene(self, source: str | None) -> None:
        """UserError in one line unless the datastack's segmentation is a graphene (chunkedgraph) layer: a flat
        precomputed segmentation has no chunkedgraph, so no change log, no roots at a time, no level-2 graph."""
        if graphene_identity(source or "") is None:
            raise UserError(
                f"{self.config_file}: datastack '{self.cfg.datastack}''s segmentation is {source or 'not set'}, not "
                "a graphene (chunkedgraph) segmentation: it has no edit history, roots at a time or level-2 graphs "
                "to build from; set datastack to one whose segmentation_source is graphene://"
            )


class Service(Reconnecting):
    """One CAVE service's part of a CaveSource: config, limits and clients are read through the one session, so
    that what the source is given (a worker's unpickled state, a test's config) is every service's."""

    def __init__(self, session: CaveSession) -> None:
        self.session = session
        self._fresh()

    @property
    def cfg(self) -> SpeciesConfig:
        return self.session.cfg

    @property
    def limits(self) -> CaveLimits:
        return self.session.limits
