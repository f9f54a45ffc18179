"""The real source: CAVE (caveclient) for graph, tables and history; CloudVolume for EM, segmentation, meshes.

Everything is pinned: tables to `cfg.materialization_version` (else a live query at `cfg.as_of`), the
chunkedgraph to explicit timestamps. Clients are opened lazily on first use and dropped on pickling, so
a `CaveSource` can be shipped to dask workers; each worker reconnects on its own first call.

Errors (see core.errors):
- the first contact of a source object with a server that cannot be reached (connection refused, DNS
  failure, connect timeout) -> UserError naming the URL and what to check;
- once a server has been reached, timeouts, dropped connections and HTTP 5xx -> TransientSourceError;
- HTTP 401/403 (or a missing token) -> UserError saying a CAVE token is needed (never the token);
- other HTTP 4xx -> UserError naming the URL (wrong datastack, table or version in the config);
- a table without a needed column -> UserError naming the table and the column.

Requests find the real servers' limits instead of knowing them (pipeline/sources/adaptive.py): every batched
call (change logs, operation details, roots, root timestamps, synapse queries, level-2 graphs, l2cache,
manifests) starts at a conservative size (limits.py), is bisected when refused, timed out or reset, and
remembers the size that works; 429s wait what Retry-After says. Synapse queries are also split when the
server caps them (tables.py); meshes are fetched within a box (meshes.py). Every request has a
timeout, its endpoint's (config `cave_requests`). At first
contact the source checks that the datastack's segmentation is graphene and `seg_cloudpath`'s, and that the pinned
materialization version still exists. The chunkedgraph client is built from `seg_cloudpath` and shared with the CAVE
client (its live queries ask the chunkedgraph through it); a view of the pinned version is read where a table is
named (FlyWire's synapses); whether the datastack has a level-2 cache is the cache's own answer to the first
skeleton's level-2 ids.

Tokens come from the `token` argument, the `CAVE_TOKEN` environment variable or the secret file caveclient reads for
the server (`<server>-cave-secret.json` before `cave-secret.json`); the graphene segmentation is handed the same one.
This module never writes them anywhere and never prints them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import os
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import requests
import trimesh
from urllib3.util.retry import Retry

from config.schema import SpeciesConfig
from core.errors import PartlyUnavailable, SampleError, TransientSourceError, Unavailable, UserError
from pipeline.sources import adaptive
from pipeline.sources import budget as budgets
from pipeline.sources.base import CHANGE_LOG_COLUMNS, Cutout, OperationDetails, Skeleton, cutout_box, read_padded
from pipeline.sources.cave import meshes
from pipeline.sources.cave.limits import CaveLimits
from pipeline.sources.cave.tables import CapWatch, normalise_synapses, read_all, read_synapses, synapse_columns
from pipeline.sources.l2skeleton import skeleton_edges

TOKEN_ENV = "CAVE_TOKEN"
CONNECT_TIMEOUT_S = 10.0
DELTA_WINDOWS = 64  # time windows of a delta-roots span: the most a timed-out span is cut into (adaptive.py bisects)


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(float(ts), tz=dt.timezone.utc)


def _epoch(value: Any) -> float:
    """Epoch seconds from a datetime, pandas Timestamp, ISO / RFC 1123 string or number (s or ms)."""
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)).timestamp()
    if isinstance(value, (int, float, np.integer, np.floating)):
        v = float(value)
        return v / 1000.0 if v > 1e11 else v  # the tabular change log reports milliseconds
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value)  # Flask's default datetime format
        return _epoch(parsed)
    raise ValueError(f"cannot read a timestamp from {value!r}")


def _https_url(cloudpath: str) -> str:
    """The http(s) URL CloudVolume will read for a cloudpath (use_https=True)."""
    path = cloudpath
    for prefix in ("precomputed://", "graphene://", "middleauth+"):
        if path.startswith(prefix):
            path = path[len(prefix) :]
    if path.startswith("gs://"):
        return "https://storage.googleapis.com/" + path[len("gs://") :]
    if path.startswith("s3://"):
        return "https://s3.amazonaws.com/" + path[len("s3://") :]
    return path


def delta_windows(t0: float, t1: float, n: int) -> list[tuple[float, float]]:
    """[t0, t1] cut into n consecutive windows of equal length (each sharing its end with the next's start: the
    server's span includes both ends, and a root listed twice is folded the same)."""
    if t1 <= t0:
        return [(t0, t1)]
    edges = np.linspace(t0, t1, n + 1)
    return [(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _uint64_list(values: Any) -> list[int]:
    if values is None:
        return []
    if isinstance(values, float) and np.isnan(values):
        return []
    return [int(v) for v in np.asarray(values, dtype=np.uint64).ravel()]


def _graphene_identity(cloudpath: str) -> tuple[str, str] | None:
    """(host, dataset) a graphene cloudpath names, whatever its form (`table/X`, `1.0/X`, `api/v1/X`)."""
    from cloudvolume.datasource.graphene.metadata import extract_graphene_path

    path = cloudpath
    for prefix in ("graphene://", "middleauth+"):
        path = path.replace(prefix, "")
    try:
        parsed = extract_graphene_path(path)
    except Exception:  # noqa: BLE001 - not a graphene path
        return None
    return parsed.fqdn.lower(), parsed.dataset


def _missing_tos(resp: requests.Response | None) -> str | None:
    """The terms-of-service form's URL of a middle_auth `missing_tos` 403 (the JSON caveclient base.py reads)."""
    if resp is None or resp.status_code != 403:
        return None
    try:
        body = resp.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("error") != "missing_tos":
        return None
    return str((body.get("data") or {}).get("tos_form_url") or "the datastack's terms-of-service page")


def _says_no_l2cache(resp: requests.Response | None) -> bool:
    """The level-2 cache's answer for a datastack it does not serve: PCGL2Cache asserts the graph id is in its
    config (app/utils.py get_l2cache_client, "does not have an L2 Cache") and answers the AssertionError as a 500
    (app/common.py unhandled_exception); a server without the service answers 404."""
    if resp is None:
        return False
    return resp.status_code == 404 or (resp.status_code == 500 and "does not have an L2 Cache" in resp.text)


class _NoBrowser:
    """caveclient opens a web browser on a `missing_tos` 403 (base.py); a build runs on machines where that
    would start a text browser on the terminal. Its module gets this instead: the 403 becomes one line."""

    @staticmethod
    def open(url: str, *args: Any, **kwargs: Any) -> bool:
        return False


class _ViewsAsTables:
    """caveclient's materialization client, reading a view of the pinned version where a table is named: FlyWire's
    public datastack leaves its synapse table unset so that users read the deduplicated view
    `valid_synapses_nt_np_v6` (fafbseg-py flywire/utils.py; flywire/synapses.py reads it with query_view), and
    MaterializationEngine serves views on a route of their own (caveclient endpoints.py `view_query`). So
    `query_table` of a name the version lists among its views asks `query_view` with the same filters, and
    `get_tables` lists the views too: CaveSource's one query path reads either. Everything else is the client's."""

    _NOT_VIEW_ARGS = ("merge_reference", "log_warning")  # query_table's arguments query_view does not take

    def __init__(self, client, views) -> None:  # noqa: ANN001 - a MaterializationClient, CaveSource._views
        object.__setattr__(self, "client", client)
        object.__setattr__(self, "_views", views)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.client, name, value)

    def query_table(self, table: str, *args: Any, **kwargs: Any) -> Any:
        if table in self._views(kwargs.get("materialization_version")):
            for key in self._NOT_VIEW_ARGS:
                kwargs.pop(key, None)
            return self.client.query_view(table, *args, **kwargs)
        return self.client.query_table(table, *args, **kwargs)

    def get_tables(self, *args: Any, **kwargs: Any) -> list[str]:
        version = kwargs.get("version", args[0] if args else None)
        return [*self.client.get_tables(*args, **kwargs), *sorted(self._views(version))]


def _with_deadline(fn, seconds: float, what: str, transient: bool):  # noqa: ANN001, ANN202
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


class _VersionChecked(list):
    """The items a query gave up on (adaptive.run's `failed`): the first checks the pinned version first, since an
    expired version fails every query with a 500 (one line then, not a ledger row per root)."""

    def __init__(self, check) -> None:  # noqa: ANN001 - CaveSource._pinned_version_listed
        super().__init__()
        self._check = check

    def append(self, item: object) -> None:
        if not self:
            self._check()
        super().append(item)


class CaveSource:
    """Source backed by a CAVE datastack and its CloudVolume layers (see base.Source)."""

    def __init__(self, cfg: SpeciesConfig, token: str | None = None, limits: CaveLimits | None = None) -> None:
        if cfg.source != "cave":
            raise UserError(f"config/{cfg.species}.yaml: CaveSource needs source: cave (got {cfg.source})")
        self.cfg = cfg
        self.species = cfg.species
        self.limits = limits or CaveLimits()
        self._token_arg = token
        self._reached = False  # survives pickling: once reached, connection errors are transient
        self._checked = False  # the start-up checks passed (survives pickling: workers do not repeat them)
        self._as_of: float | None = None
        self._oplog: dict[int, tuple[tuple[int, ...], float, bool]] = {}
        self._columns_of: dict[str, list[str]] = {}
        self._l2cache: bool | None = None
        self._view_names: dict[int, frozenset[str]] = {}  # materialization version -> its views
        self.rows_not_proofread = 0  # proofread-table rows left out by proofread_table.root_must_equal
        self._reset_handles()

    # ------------------------------------------------------------------ lifecycle
    _HANDLES = ("_client", "_cg_client", "_mat_client", "_l2_client", "_em_cv", "_seg_cv", "_mesh_session")

    def _reset_handles(self) -> None:
        for key in self._HANDLES:
            setattr(self, key, None)
        self._cap = CapWatch(self.limits.known_row_cap)
        self._manifests = meshes.PreparedManifests()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in (*self._HANDLES, "_cap", "_manifests"):
            state.pop(key, None)
        state["_oplog"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._reset_handles()

    def __repr__(self) -> str:  # never shows the token
        return f"CaveSource(species={self.species!r}, datastack={self.cfg.datastack!r})"

    @property
    def _config_file(self) -> str:
        return f"config/{self.species}.yaml"

    def _token(self) -> str | None:
        """The explicit token, else CAVE_TOKEN; None lets caveclient read its secret files (secret_file)."""
        return self._token_arg or os.environ.get(TOKEN_ENV) or None

    def _client_token(self) -> str | None:
        """The token the CAVE client uses: the explicit one, else the one caveclient read from its secret files
        (the server's own `<server>-cave-secret.json` before `cave-secret.json`, caveclient auth.py AuthClient).
        The graphene segmentation gets this one too: cloud-volume would look for a file named after the
        segmentation's host instead (cloudvolume/secrets.py cave_credentials), which on a deployment whose
        chunkedgraph has its own host (H01, fish1) is most likely `cave-secret.json`, another server's token."""
        token = self._token()
        if token is None and self._client is not None:
            token = self._client.auth.token or None
        return token

    def _redact(self, text: str) -> str:
        token = self._client_token()
        return text.replace(token, "***") if token else text

    def secret_file(self) -> Path | None:
        """The secret file caveclient reads for this server (AuthClient: `<server>-cave-secret.json` if it exists,
        else `cave-secret.json`), when one exists; never opened here."""
        from caveclient.auth import default_token_file, server_token_filename

        for path in (Path(server_token_filename(self._server)), Path(default_token_file).expanduser()):
            if path.is_file():
                return path
        return None

    @property
    def _timeout(self) -> tuple[float, float]:
        return (min(CONNECT_TIMEOUT_S, self.cfg.timeout_s), self.cfg.timeout_s)

    # ------------------------------------------------------------------ errors
    def _auth_error(self, url: str) -> UserError:
        from caveclient.auth import server_token_filename

        server_file = server_token_filename(self.cfg.server_address or url).replace(str(Path.home()), "~", 1)
        return UserError(
            f"{url} refused access (HTTP 401/403): a CAVE token with access to datastack "
            f"'{self.cfg.datastack}' is needed; set the {TOKEN_ENV} environment variable or put it in "
            f"{server_file} (caveclient reads it before ~/.cloudvolume/secrets/cave-secret.json, which may hold "
            "another server's token: leave that one as it is)"
        )

    def _access_error(self, resp: requests.Response | None, url: str) -> UserError:
        """A 401 / 403 as what it is: terms of service not accepted (middle_auth's `missing_tos`), a public
        table's time cap (PyChunkedGraph remap_public: "root_id not valid at timestamp"), else the token."""
        text = resp.text if resp is not None else ""
        tos = _missing_tos(resp)
        if tos is not None:
            return UserError(
                f"datastack '{self.cfg.datastack}': the token's user has not accepted its terms of service "
                f"({url.split('?')[0]} answered 403 missing_tos); accept them at {tos} signed in as that user, "
                "then rerun"
            )
        if "not valid at timestamp" in text:
            return UserError(
                f"{url.split('?')[0]} answered 401 'root_id not valid at timestamp': datastack "
                f"'{self.cfg.datastack}''s segmentation is a public table whose time is capped at its release, "
                f"and this build reads it at a later time; pin materialization_version (or as_of) in "
                f"{self._config_file} to the public release or earlier"
            )
        if resp is not None and resp.status_code == 403:
            return UserError(
                f"{url.split('?')[0]} refused access (HTTP 403): the CAVE token's user has no access to datastack "
                f"'{self.cfg.datastack}'; ask its administrators for access, or set {TOKEN_ENV} to a token that has it"
            )
        return self._auth_error(url)

    def _tos_hook(self, response, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201 - a requests hook
        """Refuse a `missing_tos` answer here, before caveclient opens a web browser for it."""
        if response.status_code == 403 and _missing_tos(response) is not None:
            raise self._access_error(response, response.url or "")
        return response

    def _unreachable(self, url: str, exc: BaseException, key: str = "server_address") -> UserError:
        return UserError(f"could not reach {url} ({type(exc).__name__}); check network or {key} in {self._config_file}")

    @contextmanager
    def _guard(self, what: str, url: str) -> Iterator[None]:
        """Translate client exceptions into the pipeline's error types."""
        from caveclient.base import AuthException, ServerIncompatibilityError
        from cloudvolume import exceptions as cv_exc

        try:
            yield
        except (UserError, TransientSourceError, SampleError):
            raise
        except requests.HTTPError as exc:
            resp = exc.response
            status = resp.status_code if resp is not None else 0
            where = resp.url if resp is not None and resp.url else url
            if status in (401, 403):
                raise self._access_error(resp, where) from None
            if status >= 500 or status in (408, 429):
                message = adaptive.server_message(resp)
                raise TransientSourceError(
                    f"{what}: HTTP {status} from {where[:300]}" + (f" ({self._redact(message)})" if message else "")
                ) from None
            body = self._redact(resp.text[:300]) if resp is not None else ""
            raise UserError(
                f"{what}: HTTP {status} from {where[:300]} ({body.strip()}); check datastack, tables and "
                f"versions in {self._config_file}"
            ) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            where = getattr(getattr(exc, "request", None), "url", None) or url
            if not self._reached:
                raise self._unreachable(where, exc) from None
            raise TransientSourceError(f"{what}: {type(exc).__name__} talking to {where[:300]}") from None
        except requests.exceptions.JSONDecodeError:  # HTML where JSON was due: a login page (a client constructor's
            # requests run before this source can hook their session; middle_auth_client redirects them there)
            raise UserError(
                f"{what}: {url} answered a page that is not JSON, most likely a login page (middle_auth_client "
                f"redirects a request without a valid token): the CAVE token is missing or not valid for datastack "
                f"'{self.cfg.datastack}'; set {TOKEN_ENV} or caveclient's secret file to a valid token of that server"
            ) from None
        except budgets.HostDown as exc:  # a read outside the adaptive layer (cloud-files) met the host's outage
            raise TransientSourceError(f"{what}: {exc}") from None
        except AuthException:  # caveclient's reading of a redirect (middle_auth_client's answer to a bad token)
            raise UserError(
                f"{what}: {url} redirected to a login page: the CAVE token is missing or not valid for datastack "
                f"'{self.cfg.datastack}'; set {TOKEN_ENV} or caveclient's secret file to a valid token of that server"
            ) from None
        except cv_exc.AuthenticationError:
            raise self._auth_error(url) from None
        except ServerIncompatibilityError as exc:
            raise UserError(f"{what}: the server at {url} is too old for this client: {exc}") from None

    def _probe(self, url: str, key: str = "server_address") -> None:
        """Fail fast (DNS, refused, connect timeout) before handing a URL to a client with long retries."""
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        if not host:
            raise UserError(f"cannot read a host from {url!r}; check {self._config_file}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((host, port), timeout=self._timeout[0]):
                pass
        except OSError as exc:
            if self._reached:
                raise TransientSourceError(f"could not connect to {url} ({type(exc).__name__})") from None
            raise self._unreachable(url, exc, key) from None

    def _bound_session(self, session: requests.Session) -> None:
        """Give a client's session timeouts (its endpoint's, set per request by the adaptive layer) and retries of
        connecting only: a request that reached the server is resent by the adaptive layer alone, which knows
        whether it timed out or was refused, so identical resends stay bounded (not urllib3 x runner x ...)."""
        retries = Retry(total=2, connect=2, read=0, status=0, other=0, backoff_factor=0.2, raise_on_status=False)
        adapter = adaptive.ScopedTimeoutAdapter(self._timeout, max_retries=retries)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.hooks["response"].append(self._tos_hook)
        session.hooks["response"].append(self._redirect_hook)

    def _redirect_hook(self, response, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201 - a requests hook
        """middle_auth_client answers a request without a valid token with a 302 to its login page, not a 401
        (decorators.py); followed, caveclient would read the login page's HTML as JSON. The redirect is the token
        error, said here in one line."""
        if response.is_redirect and response.request is not None:
            login = response.headers.get("Location", "")
            raise UserError(
                f"{response.request.url.split('?')[0][:200]} redirected to a login page ({login.split('?')[0][:120]}):"
                f" the CAVE token is missing or not valid for datastack '{self.cfg.datastack}'; set {TOKEN_ENV} or "
                "caveclient's secret file to a valid token of that server"
            )
        return response

    def _budget_host(self, url: str) -> None:
        """This species' request budget settings for `url`'s host (budget.py: one budget per host for the build)."""
        opts = self.cfg.cave_requests
        budgets.current().configure(budgets.host_of(url), opts.max_in_flight_per_host,
                                    opts.requests_per_minute_per_host, opts.outage_deadline_s)  # fmt: skip

    def _batched(self, endpoint: str, items: list, send, start: int, what: str, url: str,  # noqa: ANN001
                 failed: list | None = None) -> list:  # fmt: skip
        """`send(batch)` over `items` in batches the server accepts (adaptive.py); (batch, answer) pairs in order.
        An item the server cannot answer raises Unavailable, or (`failed` given) is appended there as (item,
        Unavailable) while the other items go on."""
        with self._guard(what, url):
            return adaptive.ADAPTIVE.run(
                url, endpoint, list(items), send, start=start, opts=self.cfg.cave_requests, what=what, failed=failed
            )

    def _one(self, endpoint: str, what: str, url: str, fn):  # noqa: ANN001, ANN202
        """One request through the adaptive layer (its timeout, resend and 429 rules; nothing to bisect)."""
        return self._batched(endpoint, [None], lambda _: fn(), 1, what, url)[0][1]

    # ------------------------------------------------------------------ clients
    @property
    def _server(self) -> str:
        if not self.cfg.server_address:
            raise UserError(f"{self._config_file}: server_address is required for source: cave")
        return self.cfg.server_address.rstrip("/")

    def client(self):
        """The CAVEclient (opened on first use; its constructor's requests are bounded by a deadline)."""
        if self._client is None:
            import caveclient.base
            from caveclient import CAVEclient

            caveclient.base.webbrowser = _NoBrowser  # never a browser from a build (see _NoBrowser)

            self._probe(self._server)
            self._budget_host(self._server)
            with self._guard(f"opening datastack '{self.cfg.datastack}'", self._server):

                def open_client():  # noqa: ANN202
                    return CAVEclient(
                        self.cfg.datastack,
                        server_address=self._server,
                        auth_token=self._token(),
                        max_retries=2,
                        write_server_cache=False,
                    )

                client = _with_deadline(open_client, 3 * self.cfg.timeout_s, f"opening {self._server}", self._reached)
                self._bound_session(client.info.session)
                local = client.local_server
            if local and urllib.parse.urlsplit(local).netloc != urllib.parse.urlsplit(self._server).netloc:
                self._probe(local)
                self._budget_host(local)
            self._reached = True
            self._client = client
            if not self._checked:
                self._startup_checks()
        return self._client

    def _startup_checks(self) -> None:
        """The datastack's segmentation is the one `seg_cloudpath` reads; the pinned version still exists."""
        client = self._client
        with self._guard("datastack info", self._server):
            source = client.info.segmentation_source()
        self.require_graphene(source)
        ours, theirs = _graphene_identity(self.cfg.seg_cloudpath), _graphene_identity(source or "")
        if ours is not None and theirs is not None and ours != theirs:
            raise UserError(
                f"{self._config_file}: seg_cloudpath {self.cfg.seg_cloudpath} is not datastack "
                f"'{self.cfg.datastack}''s segmentation ({source}): roots would come from one and voxels from "
                "the other; point seg_cloudpath at the datastack's segmentation_source"
            )
        if self.cfg.materialization_version is not None:
            self._require_pinned_version("does not exist (any more); versions that do: {versions}")
        elif self.cfg.proofread_table or self.cfg.synapse_table:
            mat = self._mat()
            with self._guard("materialization versions", self._local):
                meta = mat.get_versions_metadata()
            older = [m for m in meta if _epoch(m["time_stamp"]) <= float(self.cfg.as_of)]
            if not older:
                ordered = sorted(meta, key=lambda m: m["version"])
                stamps = ", ".join(f"{m['version']} ({m['time_stamp']})" for m in ordered)
                raise UserError(
                    f"{self._config_file}: as_of {_utc(float(self.cfg.as_of)).isoformat()} is older than every "
                    f"materialization version of '{self.cfg.datastack}' that still exists ({stamps or 'none'}): a "
                    "live query needs one before it; move as_of later or pin materialization_version"
                )
        self._checked = True

    def require_graphene(self, source: str | None) -> None:
        """UserError in one line unless the datastack's segmentation is a graphene (chunkedgraph) layer: a flat
        precomputed segmentation has no chunkedgraph, so no change log, no roots at a time, no level-2 graph."""
        if _graphene_identity(source or "") is None:
            raise UserError(
                f"{self._config_file}: datastack '{self.cfg.datastack}''s segmentation is {source or 'not set'}, not "
                "a graphene (chunkedgraph) segmentation: it has no edit history, roots at a time or level-2 graphs "
                "to build from; set datastack to one whose segmentation_source is graphene://"
            )

    def _opened(self, make, what: str):  # noqa: ANN001, ANN202
        """A sub-client (its constructor asks the server for versions, on a session not yet bounded)."""
        return _with_deadline(make, 3 * self.cfg.timeout_s, f"opening the {what} client", self._reached)

    @property
    def _local(self) -> str:
        return self.client().local_server or self._server

    @property
    def _cg_server(self) -> str:
        """The chunkedgraph's server, from seg_cloudpath (the segmentation this build reads voxels from)."""
        path = self.cfg.seg_cloudpath.replace("middleauth+", "").replace("graphene://", "")
        identity = _graphene_identity(path)
        if identity is None:
            raise UserError(f"{self._config_file}: seg_cloudpath {self.cfg.seg_cloudpath} is not a graphene:// "
                            "segmentation: the chunkedgraph is read from it")  # fmt: skip
        return f"{urllib.parse.urlsplit(path).scheme}://{identity[0]}"

    def _cg(self):
        """The chunkedgraph client of seg_cloudpath's server and table. caveclient would build it on the datastack's
        local server with the last path element of its segmentation source (frameworkclient.py
        CAVEclientFull.chunkedgraph): the same table (the start-up check), but a deployment whose chunkedgraph has
        a host of its own (fish1's) is not its local server. It is also handed to the CAVE client as its
        chunkedgraph, so that caveclient's own users of it (the materialization client's live queries:
        materializationengine.py cg_client -> fc.chunkedgraph) run on this bounded session, never on one of theirs
        with urllib3's retries and no timeout."""
        if self._cg_client is None:
            from caveclient.chunkedgraph import ChunkedGraphClient

            client = self.client()
            server = self._cg_server
            identity = _graphene_identity(self.cfg.seg_cloudpath)
            table = identity[1] if identity is not None else ""
            if urllib.parse.urlsplit(server).netloc != urllib.parse.urlsplit(self._local).netloc:
                self._probe(server, "seg_cloudpath")
            with self._guard("chunkedgraph", server):
                cg = self._opened(
                    lambda: ChunkedGraphClient(
                        server_address=server, table_name=table, auth_client=client.auth, max_retries=2,
                        over_client=client,
                    ),
                    "chunkedgraph",
                )  # fmt: skip
            self._bound_session(cg.session)
            client._chunkedgraph = cg
            if self._mat_client is not None:
                self._mat_client._cg_client = cg
            self._cg_client = cg
            self._pin_chunkedgraph()
        return self._cg_client

    def _mat(self):
        if self._mat_client is None:
            client = self._client if self._client is not None else self.client()
            with self._guard("materialization", self._local):
                mat = self._opened(lambda: client.materialize, "materialization")
            self._bound_session(mat.session)
            mat.session.hooks["response"].append(self._cap.hook)
            self._mat_client = _ViewsAsTables(mat, self._views)
            if self._live:  # live queries ask the chunkedgraph: through ours (see _cg), opened now
                mat._cg_client = self._cg()
        return self._mat_client

    def _views(self, version: int | None) -> frozenset[str]:
        """The views the materialization lists at `version` (asked once per version; none for a live query: views
        are served at a version only). A deployment without the views route lists none."""
        from caveclient.base import ServerIncompatibilityError

        if version is None:
            return frozenset()
        if version not in self._view_names:
            mat = self._mat_client.client if self._mat_client is not None else self._mat().client
            with self._guard("materialization views", self._local):
                try:
                    got = mat.get_views(version=version)
                except ServerIncompatibilityError:  # an engine older than the views API (v3)
                    got = []
                except requests.HTTPError as exc:
                    if exc.response is None or exc.response.status_code != 404:
                        raise
                    got = []
            self._view_names[version] = frozenset(str(v) for v in got)
        return self._view_names[version]

    def _l2(self):
        if self._l2_client is None:
            client = self.client()
            with self._guard("l2cache", self._local):
                l2 = self._opened(lambda: client.l2cache, "l2cache")
            self._bound_session(l2.session)
            self._l2_client = l2
        return self._l2_client

    def _em(self):
        if self._em_cv is None:
            from cloudvolume import CloudVolume

            meshes.install_cloudfiles_timeouts(self._timeout)
            url = _https_url(self.cfg.em_cloudpath)
            self._probe(url, "em_cloudpath")
            self._budget_host(url)
            with self._guard("EM volume", url):
                try:
                    self._em_cv = CloudVolume(
                        self.cfg.em_cloudpath,
                        mip=self.cfg.em_mip,
                        use_https=True,
                        fill_missing=False,
                        progress=False,
                        bounded=False,
                        cache=False,
                    )
                except IndexError:  # cloud-volume's ScaleUnavailableError is one; an empty scale list raises it too
                    raise self._missing_mip("em_mip", self.cfg.em_mip, url) from None
            self._reached = True
        return self._em_cv

    def _missing_mip(self, key: str, mip: int, url: str, info: dict | None = None) -> UserError:
        """`key` names a mip the layer's info does not list: UserError naming the mips (and resolutions) it does."""
        if info is None:
            with self._guard(f"{key} layer info", url):
                resp = self._session().get(url.rstrip("/") + "/info", timeout=self._timeout)
                resp.raise_for_status()
                info = resp.json()
        scales = [f"{i} ({'x'.join(f'{r:g}' for r in sc.get('resolution', []))} nm)"
                  for i, sc in enumerate(info.get("scales") or [])]  # fmt: skip
        return UserError(
            f"{self._config_file}: {key} {mip} is not a mip of {url} (its info lists "
            f"{', '.join(scales) if scales else 'no scales'}); set {key} to one it lists"
        )

    def _seg_token(self) -> str | None:
        """The CAVE client's token (see _client_token), for the graphene segmentation's requests."""
        self.client()
        return self._client_token()

    def _seg(self):
        """The graphene segmentation; its info is read here (with a timeout) and handed to CloudVolume."""
        if self._seg_cv is None:
            from cloudvolume import CloudVolume
            from cloudvolume.datasource.graphene.metadata import extract_graphene_path

            meshes.install_cloudfiles_timeouts(self._timeout)
            url = _https_url(self.cfg.seg_cloudpath)
            self._probe(url, "seg_cloudpath")
            self._budget_host(url)
            info, token = None, self._token()
            if self.cfg.seg_cloudpath.startswith("graphene://"):
                gp = extract_graphene_path(url)
                info_url = f"{gp.scheme}://{gp.fqdn}/{gp.modality}/table/{gp.dataset}/info"
                token = self._seg_token()
                with self._guard("segmentation info", info_url):
                    resp = self._session().get(
                        info_url, headers={"Authorization": f"Bearer {token}"} if token else {}, timeout=self._timeout
                    )
                    resp.raise_for_status()
                    info = resp.json()
            if info is not None and self.cfg.seg_mip >= len(info.get("scales") or []):
                raise self._missing_mip("seg_mip", self.cfg.seg_mip, url, info)
            with self._guard("segmentation volume", url):
                seg = CloudVolume(
                    self.cfg.seg_cloudpath,
                    mip=self.cfg.seg_mip,
                    use_https=True,
                    fill_missing=False,
                    progress=False,
                    bounded=False,
                    cache=False,
                    agglomerate=False,
                    secrets=token,
                    info=info,
                )
            if info is not None:
                seg.mesh.fetch_manifest_remote = self._manifests  # answers with the manifest fetched here
            self._reached = True
            self._seg_cv = seg
        return self._seg_cv

    def _session(self) -> requests.Session:
        if self._mesh_session is None:
            session = requests.Session()
            self._bound_session(session)
            self._mesh_session = session
        return self._mesh_session

    # ------------------------------------------------------------------ geometry of the volume
    def base_resolution_nm(self) -> tuple[float, float, float]:
        seg = self._seg()
        return tuple(float(v) for v in seg.meta.resolution(0))

    def canonical_bbox_nm(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        seg = self._seg()
        bounds = seg.meta.bounds(0)
        res = np.asarray(seg.meta.resolution(0), dtype=np.float64)
        lo = np.asarray(bounds.minpt, dtype=np.float64) * res
        hi = np.asarray(bounds.maxpt, dtype=np.float64) * res
        return tuple(float(v) for v in lo), tuple(float(v) for v in hi)

    # ------------------------------------------------------------------ time pinning
    def as_of(self) -> float:
        if self._as_of is None:
            if self.cfg.as_of is not None:
                self._as_of = float(self.cfg.as_of)
            else:
                mat = self._mat()
                with self._guard("materialization version timestamp", self._local):
                    ts = mat.get_timestamp(self.cfg.materialization_version)
                self._as_of = _epoch(ts)
            self._pin_chunkedgraph()
        return self._as_of

    def _pin_chunkedgraph(self) -> None:
        """The chunkedgraph client's default time is as_of: a call that names no time (root timestamps) is asked at
        the pinned time, never at caveclient's "now" (chunkedgraph.py _process_timestamp)."""
        if self._cg_client is not None and self._as_of is not None:
            self._cg_client.timestamp = _utc(self._as_of)

    # ------------------------------------------------------------------ tables
    @property
    def _live(self) -> bool:
        return self.cfg.materialization_version is None

    def _query(self, table: str, wrapped: bool = True, **filters: Any) -> pd.DataFrame:
        """A table query pinned to the materialization version, else a live query at as_of (never now).
        `wrapped=False`: the bare request, for a caller that already sends it through the adaptive layer."""
        mat = self._mat()
        common = {
            "desired_resolution": [1, 1, 1],
            "split_positions": False,
            "merge_reference": False,  # our tables are not reference tables: no metadata request per query
            "metadata": False,
        }
        as_of = None if not self._live else _utc(self.as_of())

        def ask() -> pd.DataFrame:
            try:
                if as_of is None:
                    return mat.query_table(
                        table, materialization_version=self.cfg.materialization_version, **common, **filters
                    )
                return mat.live_query(table, as_of, **common, **filters)
            except requests.HTTPError as exc:
                # the engine answers every error as a 500 wrapping the real status (its errorhandler(Exception))
                status = adaptive.wrapped_status(exc.response) or (
                    exc.response.status_code if exc.response is not None else 0
                )
                if status == 404:
                    self._missing_table(table)  # one line naming the key and the tables there
                if status == 410:
                    self._pinned_version_listed()  # expired: one line naming the versions there are
                    raise UserError(
                        f"{self._config_file}: querying table '{table}' answered "
                        f"'{adaptive.server_message(exc.response)}': the pinned materialization version or as_of "
                        "is no longer served; pin one the datastack lists (the bank is redone)"
                    ) from None
                raise

        if not wrapped:
            return ask()
        with self._version_checked():
            return self._one("query", f"querying table '{table}'", self._local, ask)

    @contextmanager
    def _version_checked(self) -> Iterator[None]:
        """A query that failed after its resends may have met an expired version (the engine answers a query of one
        with a 500, and caveclient caches the version list for 12 h): say so in one line instead of ledgering it."""
        try:
            yield
        except (TransientSourceError, Unavailable):
            self._pinned_version_listed()
            raise

    def table_key(self, table: str) -> str:
        """The config key that names `table`."""
        return "proofread_table" if table == self.cfg.proofread_table_name else "synapse_table"

    def _missing_table(self, table: str) -> None:
        """A 404 of a table query: UserError naming the table, its config key and the tables that exist."""
        mat = self._mat()
        where = f"version {self.cfg.materialization_version}" if not self._live else "the live database"
        with self._guard("materialization tables", self._local):
            tables = sorted(mat.get_tables(version=self.cfg.materialization_version))
        if table not in tables:
            raise UserError(
                f"{self._config_file}: {self.table_key(table)} '{table}' is not a table of datastack "
                f"'{self.cfg.datastack}' at {where}; tables there: {', '.join(tables) or 'none'}"
            )

    def _pinned_version_listed(self) -> None:
        """The pinned version is still listed (caveclient caches the version metadata for 12 h, and the engine
        answers a query of an expired version with a 500): else UserError saying to re-pin it."""
        if self._live:
            return
        self._require_pinned_version(
            "has expired (its queries answer HTTP 500); pin one that exists: {versions} (a new version changes the "
            "proofread roots: the bank is redone)"
        )

    def _require_pinned_version(self, missing: str) -> None:
        """UserError `missing` (its `{versions}`: the versions listed) unless the pinned version is listed."""
        mat = self._mat()
        with self._guard("materialization versions", self._local):
            versions = sorted(int(v) for v in mat.get_versions())
        if int(self.cfg.materialization_version) not in versions:
            raise UserError(
                f"{self._config_file}: materialization_version {self.cfg.materialization_version} of datastack "
                f"'{self.cfg.datastack}' " + missing.format(versions=", ".join(map(str, versions)) or "none")
            )

    def _query_checked(self, table: str, wrapped: bool = True, **filters: Any) -> tuple[pd.DataFrame, bool]:
        """The query and whether the server capped it (its Warning header, or exactly the cap's rows)."""
        self._mat()
        self._cap.reset()
        df = self._query(table, wrapped, **filters)
        return df, self._cap.capped(len(df))

    def _columns(self, table: str) -> list[str]:
        """The table's columns, from a one-row query (asked once per table)."""
        if table not in self._columns_of:
            df = self._query(table, limit=1, log_warning=False)  # CapWatch: a limit probe teaches no cap
            self._columns_of[table] = [str(c) for c in df.columns]
        return self._columns_of[table]

    def check_columns(self, key: str, table: str, present: list[str]) -> None:
        """The columns this source reads from the table config key `key` names are in `present` (the one list of
        them: proofread_roots and synapses call this, and so does preflight); else UserError naming the column."""
        if key == "proofread_table":
            self._need(present, table, "pt_root_id", "proofread roots")
            if self.cfg.proofread_root_must_equal:
                self._need(present, table, self.cfg.proofread_root_must_equal, "proofread_table.root_must_equal")
        elif key == "synapse_table":
            for col in ("id", "pre_pt_root_id", "post_pt_root_id"):
                self._need(present, table, col, "synapse controls")
            if "ctr_pt_position" not in present and not {"pre_pt_position", "post_pt_position"} <= set(present):
                either = "synapse controls (or pre_pt_position and post_pt_position)"
                self._need(present, table, "ctr_pt_position", either)
            for col in sorted(self.cfg.synapse_score_above):
                self._need(present, table, col, f"synapse_score_above in {self._config_file}")
        else:
            raise ValueError(f"no table columns are read for {key!r}")

    def _need(self, df: pd.DataFrame | list[str], table: str, column: str, purpose: str) -> None:
        columns = list(df.columns) if isinstance(df, pd.DataFrame) else list(df)
        if column not in columns:
            configured = (self.cfg.proofread_table_name, self.cfg.synapse_table)
            named = f" ({self.table_key(table)})" if table in configured else ""
            raise UserError(
                f"table '{table}'{named} (datastack {self.cfg.datastack}) has no column '{column}', needed for "
                f"{purpose}; columns are: {', '.join(map(str, columns))}. Check {self._config_file}"
            )

    # ------------------------------------------------------------------ proofread neurons
    def proofread_roots(self) -> list[int]:
        if self.cfg.proofread_from_delta_roots:
            return self._delta_roots()
        table = self.cfg.proofread_table_name
        if not table:
            raise UserError(f"{self._config_file}: proofread_table is required unless proofread_from_delta_roots")
        present = self._columns(table)
        self.check_columns("proofread_table", table, present)
        same = self.cfg.proofread_root_must_equal
        wanted = [c for c in ("id", "pt_root_id", "pt_supervoxel_id" if self._live else "", same or "") if c in present]
        df = read_all(self._query_checked, table, wanted if "id" in wanted else None)
        roots = pd.to_numeric(df["pt_root_id"], errors="coerce")
        if same:  # a row names a proofread root only where its root is the one its status was assigned to
            keep = roots.notna() & (roots == pd.to_numeric(df[same], errors="coerce"))
            self.rows_not_proofread = int((~keep).sum())
            roots = roots[keep]
        roots = roots.dropna().astype(np.uint64)
        return sorted({int(r) for r in roots if int(r) != 0})

    def _delta_roots(self) -> list[int]:
        """The roots edits made between the chunkedgraph's oldest timestamp and as_of that no later edit before
        as_of replaced. The span is cut into DELTA_WINDOWS time windows, sent through the adaptive layer as items:
        its first request asks the whole span (one scan of the operation log, as before), and a request that times
        out or is refused is bisected into shorter spans (PyChunkedGraph get_delta_roots reads every operation in
        its span; over years of FlyWire-sized history that is the slow request the proxy cuts at 600 s). The
        windows' answers are folded in time order: a root new in one window and old in a later one was replaced."""
        cg = self._cg()
        as_of = self.as_of()
        with self._guard("chunkedgraph delta roots", self._local):
            t0 = _epoch(cg.get_oldest_timestamp())
        windows = delta_windows(t0, as_of, DELTA_WINDOWS)

        def send(batch: list[tuple[float, float]]) -> tuple[list[int], list[int]]:
            old, new = cg.get_delta_roots(_utc(batch[0][0]), _utc(batch[-1][1]))
            return _uint64_list(old), _uint64_list(new)

        current: set[int] = set()
        pairs = self._batched("delta_roots", windows, send, len(windows), "chunkedgraph delta roots", self._local)
        for _, (old, new) in pairs:  # in time order (the adaptive layer keeps the items' order)
            current |= set(new)
            current -= set(old)
        return sorted(r for r in current if r)

    # ------------------------------------------------------------------ edit history
    def change_log(self, root_ids: list[int]) -> pa.Table:
        """The roots' change logs; a root the server cannot answer for (after bisection and resends) is left out
        and named: PartlyUnavailable(the others' table, {root: Unavailable})."""
        cols: dict[str, list] = {c: [] for c in CHANGE_LOG_COLUMNS}
        roots = sorted({int(r) for r in root_ids})
        failed: list = []
        if roots:
            cg = self._cg()
            as_of = self.as_of()
            # the whole lineage: filtered=True (the server's default) drops edits that were undone or cut off
            # (graph/segmenthistory.py in_neuron / is_relevant), which are candidates too
            pairs = self._batched(
                "change_log", roots, lambda batch: cg.get_tabular_change_log(batch, filtered=False),
                self.limits.change_log_batch, "chunkedgraph tabular change log", self._local, failed,
            )  # fmt: skip
            for root, df in sorted(((r, df) for _, logs in pairs for r, df in logs.items()), key=lambda p: int(p[0])):
                if df is None or len(df) == 0:
                    continue
                for name in ("operation_id", "timestamp", "is_merge", "before_root_ids", "after_root_ids"):
                    self._need(df, "tabular_change_log", name, "the change log")
                for row in df.itertuples(index=False):
                    ts = _epoch(row.timestamp)
                    if ts > as_of:
                        continue
                    op = int(row.operation_id)
                    before = _uint64_list(row.before_root_ids)
                    is_merge = bool(row.is_merge)
                    self._oplog[op] = (tuple(before), ts, is_merge)
                    cols["root_id"].append(int(root))
                    cols["operation_id"].append(op)
                    cols["timestamp"].append(ts)
                    cols["is_merge"].append(is_merge)
                    cols["before_root_ids"].append(before)
                    cols["after_root_ids"].append(_uint64_list(row.after_root_ids))
        schema = pa.schema(
            [
                ("root_id", pa.uint64()),
                ("operation_id", pa.int64()),
                ("timestamp", pa.float64()),
                ("is_merge", pa.bool_()),
                ("before_root_ids", pa.list_(pa.uint64())),
                ("after_root_ids", pa.list_(pa.uint64())),
            ]
        )
        table = pa.Table.from_pydict(cols, schema=schema)
        table = table.sort_by([("root_id", "ascending"), ("timestamp", "ascending"), ("operation_id", "ascending")])
        if failed:
            raise PartlyUnavailable(table, {int(root): gone for root, gone in failed})
        return table

    def operation_details(self, operation_ids: list[int]) -> dict[int, OperationDetails]:
        """Each operation's details; ops the server cannot answer for are named: PartlyUnavailable(the others',
        {op: Unavailable})."""
        ids = sorted({int(o) for o in operation_ids})
        if not ids:
            return {}
        cg = self._cg()
        raw: dict = {}
        failed: list = []
        for _, got in self._batched(
            "operation_details", ids, cg.get_operation_details, self.limits.operation_details_batch,
            "chunkedgraph operation details", self._local, failed,
        ):  # fmt: skip
            raw.update(got)
        created = self._edit_times({int(k): det for k, det in raw.items() if det and int(k) not in self._oplog})
        out: dict[int, OperationDetails] = {}
        for key, det in raw.items():
            if not det:
                continue
            op = int(key)
            known = self._oplog.get(op)
            # the edit's own time: the change log's, else its after roots' creation time; the details'
            # `timestamp` can be the log row's later write time (pcgv1), seconds after the edit
            ts = known[1] if known else created.get(op)
            if ts is None and det.get("timestamp") is not None:
                ts = _epoch(det["timestamp"])
            if ts is None:
                continue
            if "added_edges" in det or "removed_edges" in det:
                is_merge = "added_edges" in det
            elif known is not None:
                is_merge = known[2]
            else:
                continue
            after = tuple(_uint64_list(det.get("roots", [])))
            before = known[0] if known else self._before_roots(det, ts, is_merge)
            out[op] = OperationDetails(
                operation_id=op,
                timestamp=ts,
                is_merge=is_merge,
                before_root_ids=tuple(before),
                after_root_ids=after,
                source_coords_vx=tuple(tuple(float(c) for c in p) for p in det.get("source_coords") or []),
                sink_coords_vx=tuple(tuple(float(c) for c in p) for p in det.get("sink_coords") or []),
            )
        if failed:
            raise PartlyUnavailable(out, {int(op): gone for op, gone in failed})
        return out

    def _edit_times(self, details: dict[int, dict]) -> dict[int, float]:
        """Each edit's time as its after roots' creation time (one request for all of them)."""
        after = {op: _uint64_list(det.get("roots", [])) for op, det in details.items()}
        roots = sorted({r for rs in after.values() for r in rs})
        if not roots:
            return {}
        cg = self._cg()
        stamps: dict[int, float] = {}
        for batch, got in self._batched(
            "root_timestamps", roots, cg.get_root_timestamps, self.limits.roots_batch, "chunkedgraph root timestamps",
            self._local,
        ):  # fmt: skip
            stamps.update({r: _epoch(t) for r, t in zip(batch, got, strict=True)})
        return {op: min(stamps[r] for r in rs) for op, rs in after.items() if rs}

    def _before_roots(self, det: dict, ts: float, is_merge: bool) -> tuple[int, ...]:
        """Roots just before the edit: the roots of the edited edge's supervoxels at T - 1 ms."""
        edges = det.get("added_edges" if is_merge else "removed_edges") or []
        svs = np.unique(np.asarray(edges, dtype=np.uint64).ravel())
        if svs.size == 0:
            return ()
        roots = self.roots_at(svs, ts - 0.001)
        return tuple(sorted({int(r) for r in roots if int(r) != 0}))

    def roots_at(self, supervoxel_ids: np.ndarray, timestamp: float) -> np.ndarray:
        svs = np.asarray(supervoxel_ids, dtype=np.uint64)
        out = np.zeros(svs.shape, dtype=np.uint64)
        uniq = np.unique(svs)
        uniq = uniq[uniq != 0]
        if uniq.size == 0:
            return out
        cg = self._cg()
        when = _utc(timestamp)

        def ask(batch: list) -> np.ndarray:
            return np.asarray(cg.get_roots(np.asarray(batch, np.uint64), timestamp=when), dtype=np.uint64)

        pairs = self._batched("roots", uniq, ask, self.limits.roots_batch, "chunkedgraph roots", self._local)
        mapped = np.concatenate([got for _, got in pairs])
        idx = np.searchsorted(uniq, svs)
        nz = svs != 0
        out[nz] = mapped[idx[nz]]
        return out

    # ------------------------------------------------------------------ synapses
    def synapses(self, pre_root_ids: list[int], post_root_ids: list[int]) -> pa.Table:
        table = self.cfg.synapse_table
        if not table:
            raise UserError(f"{self._config_file}: synapse_table is required for synapse controls")
        pre = sorted({int(r) for r in pre_root_ids if int(r)})
        post = sorted({int(r) for r in post_root_ids if int(r)})
        if not pre or not post:
            return normalise_synapses(pd.DataFrame(), table, self._need, self._columns(table))
        present = self._columns(table)
        self.check_columns("synapse_table", table, present)
        columns = synapse_columns(present, self._live)

        failed = _VersionChecked(self._pinned_version_listed)

        def batches(items: list[int], read_pre) -> list[pd.DataFrame]:  # noqa: ANN001
            what = f"querying table '{table}'"
            with self._version_checked():
                pairs = self._batched("synapses", items, read_pre, self.limits.synapse_pre_batch, what, self._local,
                                      failed)  # fmt: skip
            return [df for _, df in pairs]

        def query(t: str, **filters: Any) -> tuple[pd.DataFrame, bool]:
            return self._query_checked(t, False, **filters)  # the batch is already in the adaptive layer

        df = read_synapses(query, table, columns, pre, post, self.limits, batches, self.cfg.synapse_score_above)
        found = normalise_synapses(df, table, self._need, present)
        if failed:  # the presynaptic roots whose synapses the server could not give
            raise PartlyUnavailable(found, {int(root): gone for root, gone in failed})
        return found

    # ------------------------------------------------------------------ level-2 graph
    def _l2_coords(self, l2_ids: list[int]) -> dict[int, list[float]] | None:
        """rep_coord_nm of each level-2 id the cache has a point for ({} for ids it has not computed, as the real
        cache answers them); None when the server says the datastack has no level-2 cache at all.

        This answer is how the build decides whether the datastack has a cache (skeleton: the first answer decides,
        kept in `_l2cache`, which survives pickling to workers; a worker that starts undecided asks once itself),
        not `has_cache()`: that looks the segmentation's table name up in the l2cache's table mapping, keyed on
        graph ids (FlyWire's `fly_v31`, not `flywire_public`), while the attributes route itself remaps a public
        virtual table (PCGL2Cache app/v1/routes.py remap_public); fafbseg reads FlyWire's public level-2 data
        without asking it (fafbseg/flywire/l2.py)."""
        l2 = self._l2()
        no_cache = False

        def ask(batch: list[int]) -> dict | None:
            nonlocal no_cache
            try:
                return l2.get_l2data(batch, attributes=["rep_coord_nm"])
            except requests.HTTPError as exc:
                if not _says_no_l2cache(exc.response):
                    raise
                no_cache = True
                return None

        coords: dict[int, list[float]] = {}
        for _, data in self._batched("l2cache", l2_ids, ask, self.limits.l2_batch, "l2cache attributes", self._local):
            for key, attrs in (data or {}).items():
                if attrs and attrs.get("rep_coord_nm") is not None:
                    coords[int(key)] = attrs["rep_coord_nm"]
        return None if no_cache else coords

    def skeleton(self, root_id: int) -> Skeleton:
        cg = self._cg()
        edge_list = self._one(
            "level2_graph", "chunkedgraph level-2 graph", self._local, lambda: cg.level2_chunk_graph(int(root_id))
        )
        edges = np.asarray(edge_list, dtype=np.uint64).reshape(-1, 2)
        l2_ids = np.unique(edges)
        coords: dict[int, list[float]] | None = None
        source = "l2cache"
        if l2_ids.size and self._l2cache is not False:
            coords = self._l2_coords([int(v) for v in l2_ids])  # undecided: this first answer decides
            self._l2cache = coords is not None
        if coords is None:  # no level-2 cache for this datastack: each node at its chunk's centre
            coords, source = self._chunk_centres(l2_ids), "chunk_centre"
        kept = np.array([i for i in l2_ids if int(i) in coords], dtype=np.uint64)
        index = {int(v): i for i, v in enumerate(kept)}
        vertices = np.array([coords[int(v)] for v in kept], dtype=np.float64).reshape(-1, 3)
        pairs = [(index[int(a)], index[int(b)]) for a, b in edges if int(a) in index and int(b) in index and a != b]
        edge_arr = np.unique(np.sort(np.array(pairs, dtype=np.int64).reshape(-1, 2), axis=1), axis=0).reshape(-1, 2)
        # the level-2 graph has cycles and corner contacts: its branch points are the skeleton's (l2skeleton.py)
        return Skeleton(
            vertices_nm=vertices,
            edges=skeleton_edges(vertices, edge_arr),
            extra={
                "l2_ids": kept,
                "n_missing_rep_coord": int(l2_ids.size - kept.size),
                "coords": source,
                "l2_edges": int(len(edge_arr)),
            },
        )

    def _chunk_centres(self, l2_ids: np.ndarray) -> dict[int, list[float]]:
        meta = self._seg().meta
        res = np.asarray(meta.resolution(0), dtype=np.float64)
        size = np.asarray(meta.graph_chunk_size, dtype=np.float64)
        offset = np.asarray(meta.voxel_offset(0), dtype=np.float64) if meta.chunks_start_at_voxel_offset else 0.0
        out = {}
        for l2 in l2_ids:
            pos = np.asarray(meta.decode_chunk_position(int(l2)), dtype=np.float64)
            out[int(l2)] = ((offset + (pos + 0.5) * size) * res).tolist()
        return out

    # ------------------------------------------------------------------ meshes
    def mesh(self, root_id: int, box_nm=None) -> trimesh.Trimesh:  # noqa: ANN001
        """The root's mesh in nm; with box_nm = (lo_nm, hi_nm), only the fragments the box (padded by
        limits.mesh_pad_nm) touches. Empty if the mesh does not reach the box; missing_mesh if there is none."""
        root = int(root_id)
        if not self.cfg.seg_cloudpath.startswith("graphene://"):
            raise UserError(f"{self._config_file}: seg_cloudpath must be a graphene:// segmentation for meshes")
        seg = self._seg()
        url = _https_url(self.cfg.seg_cloudpath)
        bbox = None
        if box_nm is not None:
            bounds = seg.meta.bounds(0)
            bbox = meshes.box_to_voxels(
                box_nm, seg.meta.resolution(0), self.limits.mesh_pad_nm, bounds.minpt, bounds.maxpt
            )
            if bbox is None:
                return meshes.empty_mesh()

        def manifest_of(box):  # noqa: ANN001, ANN202 - through the adaptive layer (timeouts, resends, 429)
            fetch = lambda: meshes.fetch_manifest(self._session(), seg, root, box, self._timeout)  # noqa: E731
            return self._one("manifest", f"mesh manifest of {root}", url, fetch)

        with self._guard(f"mesh manifest of {root}", url):
            manifest = manifest_of(bbox)
            if manifest is not None and not manifest.get("fragments") and bbox is not None:
                # nothing in the box: a mesh elsewhere, or none at all?
                whole = manifest_of(None)
                if whole is not None and whole.get("fragments"):
                    return meshes.empty_mesh()
        if manifest is None or not manifest.get("fragments"):
            raise SampleError("missing_mesh", f"root {root}: the meshing service lists no fragment")
        if bbox is not None:
            origin = np.asarray(seg.meta.voxel_offset(0) if seg.meta.chunks_start_at_voxel_offset else (0, 0, 0))
            manifest = meshes.filter_manifest(manifest, bbox, origin.astype(np.int64))
            if not manifest["fragments"]:
                return meshes.empty_mesh()
        with self._guard(f"mesh fragments of {root}", url):
            return meshes.decode(seg, root, bbox, self._manifests, manifest)

    # ------------------------------------------------------------------ volume cutouts
    def _cutout(self, cv, mip: int, center_nm: np.ndarray, size_nm: float, what: str, url: str) -> Cutout:
        from cloudvolume.lib import Bbox

        res = np.asarray(cv.meta.resolution(mip), dtype=np.float64)
        lo, hi = cutout_box(np.asarray(center_nm, dtype=np.float64).reshape(3), size_nm, res)

        def read(blo: np.ndarray, bhi: np.ndarray) -> np.ndarray:
            with self._guard(what, url):
                return cv.download(Bbox(blo, bhi), mip=mip)

        bounds = cv.meta.bounds(mip)
        data, missing = read_padded(
            read, lo, hi, bounds.minpt, bounds.maxpt, cv.meta.dtype, cv.meta.chunk_size(mip), cv.meta.voxel_offset(mip)
        )
        origin = tuple(float(v) for v in lo * res)
        return Cutout(data=data, voxel_nm=tuple(float(v) for v in res), origin_nm=origin, missing=missing)

    def em_cutout(self, center_nm: np.ndarray, size_nm: float) -> Cutout:
        cv = self._em()
        cut = self._cutout(cv, self.cfg.em_mip, center_nm, size_nm, "EM cutout", _https_url(self.cfg.em_cloudpath))
        return dataclasses.replace(cut, data=cut.data.astype(np.uint8, copy=False))

    def segmentation_cutout(self, center_nm: np.ndarray, size_nm: float, timestamp: float) -> Cutout:
        """Supervoxels from the graphene layer's watershed, resolved to roots at `timestamp`.

        Equivalent to CloudVolume's agglomerate=True (which posts the same supervoxels to roots_binary), but
        the lookup goes through the chunkedgraph client whose timeouts and retries are bounded here.
        """
        cv = self._seg()
        cut = self._cutout(
            cv, self.cfg.seg_mip, center_nm, size_nm, "segmentation cutout", _https_url(self.cfg.seg_cloudpath)
        )
        roots = self.roots_at(cut.data.astype(np.uint64, copy=False), timestamp)
        return dataclasses.replace(cut, data=roots)
