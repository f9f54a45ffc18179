"""The real source: CAVE (caveclient) for graph, tables and history; CloudVolume for EM, segmentation, meshes.

Everything is pinned: tables to `cfg.materialization_version` (else a live query at `cfg.as_of`), the
chunkedgraph to explicit timestamps. Clients are opened lazily on first use and dropped on pickling, so
a `CaveSource` can be shipped to dask workers; each worker reconnects on its own first call.

Errors (see pipeline.errors):
- the first contact of a source object with a server that cannot be reached (connection refused, DNS
  failure, connect timeout) -> UserError naming the URL and what to check;
- once a server has been reached, timeouts, dropped connections and HTTP 5xx -> TransientSourceError;
- HTTP 401/403 (or a missing token) -> UserError saying a CAVE token is needed (never the token);
- other HTTP 4xx -> UserError naming the URL (wrong datastack, table or version in the config);
- a table without a needed column -> UserError naming the table and the column.

Tokens come from the `token` argument, the `CAVE_TOKEN` environment variable or caveclient's /
cloud-volume's default secret files. This module never writes them anywhere and never prints them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import os
import socket
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import requests
import trimesh
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from config.schema import SpeciesConfig
from pipeline.errors import SampleError, TransientSourceError, UserError
from pipeline.sources.base import (
    CHANGE_LOG_COLUMNS,
    SYNAPSE_COLUMNS,
    SYNAPSE_SCORE_COLUMNS,
    Cutout,
    OperationDetails,
    Skeleton,
    cutout_box,
    read_padded,
)

TOKEN_ENV = "CAVE_TOKEN"
CONNECT_TIMEOUT_S = 10.0
# Neurotransmitter score columns passed through when the synapse table has them (FlyWire synapses_nt_v1).
NT_COLUMNS = ("gaba", "ach", "glut", "oct", "ser", "da")
_ROOT_BATCH = 100_000
_L2_BATCH = 5_000


class _TimeoutAdapter(HTTPAdapter):
    """An HTTPAdapter that applies a default (connect, read) timeout to every request it sends."""

    def __init__(self, timeout: tuple[float, float], **kwargs: Any) -> None:
        self._timeout = timeout
        super().__init__(**kwargs)

    def send(self, request, **kwargs):  # noqa: ANN001 - requests' signature
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


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


def _uint64_list(values: Any) -> list[int]:
    if values is None:
        return []
    if isinstance(values, float) and np.isnan(values):
        return []
    return [int(v) for v in np.asarray(values, dtype=np.uint64).ravel()]


class CaveSource:
    """Source backed by a CAVE datastack and its CloudVolume layers (see base.Source)."""

    def __init__(self, cfg: SpeciesConfig, token: str | None = None) -> None:
        if cfg.source != "cave":
            raise UserError(f"config/{cfg.species}.yaml: CaveSource needs source: cave (got {cfg.source})")
        self.cfg = cfg
        self.species = cfg.species
        self._token_arg = token
        self._reached = False  # survives pickling: once reached, connection errors are transient
        self._as_of: float | None = None
        self._oplog: dict[int, tuple[tuple[int, ...], float, bool]] = {}
        self._reset_handles()

    # ------------------------------------------------------------------ lifecycle
    def _reset_handles(self) -> None:
        self._client = None
        self._cg_client = None
        self._mat_client = None
        self._l2_client = None
        self._em_cv = None
        self._seg_cv = None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for key in ("_client", "_cg_client", "_mat_client", "_l2_client", "_em_cv", "_seg_cv"):
            state[key] = None
        state["_oplog"] = {}
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:  # never shows the token
        return f"CaveSource(species={self.species!r}, datastack={self.cfg.datastack!r})"

    @property
    def _config_file(self) -> str:
        return f"config/{self.species}.yaml"

    def _token(self) -> str | None:
        """The explicit token, else CAVE_TOKEN; None lets the clients read their default secret files."""
        return self._token_arg or os.environ.get(TOKEN_ENV) or None

    def _redact(self, text: str) -> str:
        token = self._token()
        return text.replace(token, "***") if token else text

    # ------------------------------------------------------------------ errors
    def _auth_error(self, url: str) -> UserError:
        return UserError(
            f"{url} refused access (HTTP 401/403): a CAVE token with access to datastack "
            f"'{self.cfg.datastack}' is needed; set the {TOKEN_ENV} environment variable or put it in "
            "~/.cloudvolume/secrets/cave-secret.json"
        )

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
                raise self._auth_error(where) from None
            if status >= 500 or status in (408, 429):
                raise TransientSourceError(f"{what}: HTTP {status} from {where}") from None
            body = self._redact(resp.text[:300]) if resp is not None else ""
            raise UserError(
                f"{what}: HTTP {status} from {where} ({body.strip()}); check datastack, tables and "
                f"versions in {self._config_file}"
            ) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            where = getattr(getattr(exc, "request", None), "url", None) or url
            if not self._reached:
                raise self._unreachable(where, exc) from None
            raise TransientSourceError(f"{what}: {type(exc).__name__} talking to {where}") from None
        except (AuthException, cv_exc.AuthenticationError):
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
        timeout = min(CONNECT_TIMEOUT_S, self.cfg.timeout_s)
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as exc:
            if self._reached:
                raise TransientSourceError(f"could not connect to {url} ({type(exc).__name__})") from None
            raise self._unreachable(url, exc, key) from None

    def _bound_session(self, session: requests.Session) -> None:
        """Give a client's session short timeouts and a small retry budget (the runner retries too)."""
        retries = Retry(
            total=2,
            backoff_factor=0.2,
            status_forcelist=(502, 503, 504),
            allowed_methods=frozenset(["GET", "POST"]),
            raise_on_status=False,
        )
        adapter = _TimeoutAdapter((min(CONNECT_TIMEOUT_S, self.cfg.timeout_s), self.cfg.timeout_s), max_retries=retries)
        session.mount("http://", adapter)
        session.mount("https://", adapter)

    # ------------------------------------------------------------------ clients
    @property
    def _server(self) -> str:
        if not self.cfg.server_address:
            raise UserError(f"{self._config_file}: server_address is required for source: cave")
        return self.cfg.server_address.rstrip("/")

    def client(self):
        """The CAVEclient (opened on first use)."""
        if self._client is None:
            from caveclient import CAVEclient

            self._probe(self._server)
            with self._guard(f"opening datastack '{self.cfg.datastack}'", self._server):
                client = CAVEclient(
                    self.cfg.datastack,
                    server_address=self._server,
                    auth_token=self._token(),
                    max_retries=2,
                    write_server_cache=False,
                )
                self._bound_session(client.info.session)
                local = client.local_server
            if local and urllib.parse.urlsplit(local).netloc != urllib.parse.urlsplit(self._server).netloc:
                self._probe(local)
            self._reached = True
            self._client = client
        return self._client

    @property
    def _local(self) -> str:
        return self.client().local_server or self._server

    def _cg(self):
        if self._cg_client is None:
            client = self.client()
            with self._guard("chunkedgraph", self._local):
                cg = client.chunkedgraph
            self._bound_session(cg.session)
            self._cg_client = cg
        return self._cg_client

    def _mat(self):
        if self._mat_client is None:
            client = self.client()
            with self._guard("materialization", self._local):
                mat = client.materialize
            self._bound_session(mat.session)
            self._mat_client = mat
        return self._mat_client

    def _l2(self):
        if self._l2_client is None:
            client = self.client()
            with self._guard("l2cache", self._local):
                l2 = client.l2cache
            self._bound_session(l2.session)
            self._l2_client = l2
        return self._l2_client

    def _em(self):
        if self._em_cv is None:
            from cloudvolume import CloudVolume

            url = _https_url(self.cfg.em_cloudpath)
            self._probe(url, "em_cloudpath")
            with self._guard("EM volume", url):
                self._em_cv = CloudVolume(
                    self.cfg.em_cloudpath,
                    mip=self.cfg.em_mip,
                    use_https=True,
                    fill_missing=False,
                    progress=False,
                    bounded=False,
                    cache=False,
                )
            self._reached = True
        return self._em_cv

    def _seg(self):
        if self._seg_cv is None:
            from cloudvolume import CloudVolume

            url = _https_url(self.cfg.seg_cloudpath)
            self._probe(url, "seg_cloudpath")
            with self._guard("segmentation volume", url):
                self._seg_cv = CloudVolume(
                    self.cfg.seg_cloudpath,
                    mip=self.cfg.seg_mip,
                    use_https=True,
                    fill_missing=False,
                    progress=False,
                    bounded=False,
                    cache=False,
                    agglomerate=False,
                    secrets=self._token(),
                )
            self._reached = True
        return self._seg_cv

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
        return self._as_of

    def _query(self, table: str, **filters: Any) -> pd.DataFrame:
        """A table query pinned to the materialization version, else a live query at as_of (never now)."""
        mat = self._mat()
        with self._guard(f"querying table '{table}'", self._local):
            if self.cfg.materialization_version is not None:
                return mat.query_table(
                    table,
                    materialization_version=self.cfg.materialization_version,
                    desired_resolution=[1, 1, 1],
                    split_positions=False,
                    **filters,
                )
            return mat.live_query(
                table,
                _utc(self.as_of()),
                desired_resolution=[1, 1, 1],
                split_positions=False,
                **filters,
            )

    def _need(self, df: pd.DataFrame, table: str, column: str, purpose: str) -> None:
        if column not in df.columns:
            raise UserError(
                f"table '{table}' (datastack {self.cfg.datastack}) has no column '{column}', needed for {purpose}; "
                f"columns are: {', '.join(map(str, df.columns))}. Check {self._config_file}"
            )

    # ------------------------------------------------------------------ proofread neurons
    def proofread_roots(self) -> list[int]:
        if self.cfg.proofread_from_delta_roots:
            cg = self._cg()
            with self._guard("chunkedgraph delta roots", self._local):
                t0 = cg.get_oldest_timestamp()
                old, new = cg.get_delta_roots(t0, _utc(self.as_of()))
            roots = set(_uint64_list(new)) - set(_uint64_list(old))
            return sorted(r for r in roots if r)
        table = self.cfg.proofread_table
        if not table:
            raise UserError(f"{self._config_file}: proofread_table is required unless proofread_from_delta_roots")
        df = self._query(table)
        self._need(df, table, "pt_root_id", "proofread roots")
        roots = pd.to_numeric(df["pt_root_id"], errors="coerce").dropna().astype(np.uint64)
        return sorted({int(r) for r in roots if int(r) != 0})

    # ------------------------------------------------------------------ edit history
    def change_log(self, root_ids: list[int]) -> pa.Table:
        cols: dict[str, list] = {c: [] for c in CHANGE_LOG_COLUMNS}
        if root_ids:
            cg = self._cg()
            with self._guard("chunkedgraph tabular change log", self._local):
                logs = cg.get_tabular_change_log([int(r) for r in root_ids], filtered=True)
            as_of = self.as_of()
            for root, df in sorted(logs.items()):
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
        return table.sort_by([("root_id", "ascending"), ("timestamp", "ascending"), ("operation_id", "ascending")])

    def operation_details(self, operation_ids: list[int]) -> dict[int, OperationDetails]:
        if not operation_ids:
            return {}
        cg = self._cg()
        with self._guard("chunkedgraph operation details", self._local):
            raw = cg.get_operation_details([int(o) for o in operation_ids])
        out: dict[int, OperationDetails] = {}
        for key, det in raw.items():
            if not det:
                continue
            op = int(key)
            known = self._oplog.get(op)
            ts = _epoch(det["timestamp"]) if det.get("timestamp") is not None else (known[1] if known else None)
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
        return out

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
        roots = []
        with self._guard("chunkedgraph roots", self._local):
            for start in range(0, uniq.size, _ROOT_BATCH):
                batch = uniq[start : start + _ROOT_BATCH]
                roots.append(np.asarray(cg.get_roots(batch, timestamp=_utc(timestamp)), dtype=np.uint64))
        mapped = np.concatenate(roots)
        idx = np.searchsorted(uniq, svs)
        nz = svs != 0
        out[nz] = mapped[idx[nz]]
        return out

    # ------------------------------------------------------------------ synapses
    def synapses(self, root_ids: list[int]) -> pa.Table:
        table = self.cfg.synapse_table
        if not table:
            raise UserError(f"{self._config_file}: synapse_table is required for synapse controls")
        roots = [int(r) for r in root_ids]
        frames = []
        if roots:
            for col in ("pre_pt_root_id", "post_pt_root_id"):
                frames.append(self._query(table, filter_in_dict={col: roots}))
        frames = [f for f in frames if len(f)]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return self._normalise_synapses(df, table)

    def _normalise_synapses(self, df: pd.DataFrame, table: str) -> pa.Table:
        """SYNAPSE_COLUMNS, then the score columns the table has: cleft_score, connection_score (FlyWire's
        tables have them, MICrONS' synapses_pni_2 has neither) and neurotransmitter scores."""
        scores = [c for c in SYNAPSE_SCORE_COLUMNS + NT_COLUMNS if c in df.columns]
        fields = [
            ("id", pa.int64()),
            ("pre_pt_root_id", pa.uint64()),
            ("post_pt_root_id", pa.uint64()),
            ("ctr_pt_position_nm", pa.list_(pa.float64(), 3)),
        ] + [(c, pa.float64()) for c in scores]
        schema = pa.schema(fields)
        if len(df) == 0:
            return pa.Table.from_pydict({name: [] for name, _ in fields}, schema=schema)
        for col in ("id", "pre_pt_root_id", "post_pt_root_id"):
            self._need(df, table, col, "synapse controls")
        df = df.drop_duplicates(subset="id").sort_values("id", kind="stable").reset_index(drop=True)
        if "ctr_pt_position" in df.columns:
            ctr = np.stack([np.asarray(p, dtype=np.float64) for p in df["ctr_pt_position"]])
        elif "pre_pt_position" in df.columns and "post_pt_position" in df.columns:
            pre = np.stack([np.asarray(p, dtype=np.float64) for p in df["pre_pt_position"]])
            post = np.stack([np.asarray(p, dtype=np.float64) for p in df["post_pt_position"]])
            ctr = (pre + post) / 2.0
        else:
            self._need(df, table, "ctr_pt_position", "synapse controls (or pre_pt_position and post_pt_position)")

        def _score(name: str) -> list:
            vals = pd.to_numeric(df[name], errors="coerce")
            return [None if pd.isna(v) else float(v) for v in vals]

        cols = {
            "id": [int(v) for v in df["id"]],
            "pre_pt_root_id": [int(v) for v in df["pre_pt_root_id"].astype(np.uint64)],
            "post_pt_root_id": [int(v) for v in df["post_pt_root_id"].astype(np.uint64)],
            "ctr_pt_position_nm": [list(map(float, p)) for p in ctr],
        }
        for c in scores:
            cols[c] = _score(c)
        assert tuple(cols)[: len(SYNAPSE_COLUMNS)] == SYNAPSE_COLUMNS
        return pa.Table.from_pydict(cols, schema=schema)

    # ------------------------------------------------------------------ level-2 graph
    def skeleton(self, root_id: int) -> Skeleton:
        cg = self._cg()
        with self._guard("chunkedgraph level-2 graph", self._local):
            edge_list = cg.level2_chunk_graph(int(root_id))
        edges = np.asarray(edge_list, dtype=np.uint64).reshape(-1, 2)
        l2_ids = np.unique(edges)
        coords: dict[int, list[float]] = {}
        if l2_ids.size:
            l2 = self._l2()
            with self._guard("l2cache attributes", self._local):
                for start in range(0, l2_ids.size, _L2_BATCH):
                    batch = [int(v) for v in l2_ids[start : start + _L2_BATCH]]
                    data = l2.get_l2data(batch, attributes=["rep_coord_nm"])
                    for key, attrs in data.items():
                        if attrs and attrs.get("rep_coord_nm") is not None:
                            coords[int(key)] = attrs["rep_coord_nm"]
        kept = np.array([i for i in l2_ids if int(i) in coords], dtype=np.uint64)
        index = {int(v): i for i, v in enumerate(kept)}
        vertices = np.array([coords[int(v)] for v in kept], dtype=np.float64).reshape(-1, 3)
        pairs = [(index[int(a)], index[int(b)]) for a, b in edges if int(a) in index and int(b) in index and a != b]
        edge_arr = np.unique(np.sort(np.array(pairs, dtype=np.int64).reshape(-1, 2), axis=1), axis=0)
        return Skeleton(
            vertices_nm=vertices,
            edges=edge_arr.reshape(-1, 2),
            extra={"l2_ids": kept, "n_missing_rep_coord": int(l2_ids.size - kept.size)},
        )

    # ------------------------------------------------------------------ meshes
    def mesh(self, root_id: int) -> trimesh.Trimesh:
        seg = self._seg()
        url = _https_url(self.cfg.seg_cloudpath)
        try:
            with self._guard(f"mesh of {int(root_id)}", url):
                got = seg.mesh.get(int(root_id))
        except UserError as exc:
            if "HTTP 404" in str(exc):
                raise SampleError("missing_mesh", f"root {int(root_id)}: {exc}") from None
            raise
        except (IndexError, ValueError, KeyError) as exc:
            raise SampleError("missing_mesh", f"root {int(root_id)}: {exc}") from None
        mesh = got.get(int(root_id)) if isinstance(got, dict) else got
        if mesh is None or len(mesh.vertices) == 0 or len(mesh.faces) == 0:
            raise SampleError("missing_mesh", f"root {int(root_id)}: no mesh fragments")
        return trimesh.Trimesh(
            vertices=np.asarray(mesh.vertices, dtype=np.float64),
            faces=np.asarray(mesh.faces, dtype=np.int64),
            process=False,
        )

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
