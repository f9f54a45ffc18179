"""The materialization engine (through caveclient): versions and the pinned time, tables and views, their columns,
proofread roots, synapses.

Every query is pinned: to `cfg.materialization_version`, else a live query at `cfg.as_of` (never now). A version
that expired answers its queries with a 500 (and caveclient caches the version list for 12 h): a query that failed
after its resends checks that the version is still listed, and says so in one line instead of a ledger row per
root. A view of the pinned version is read where a table is named (FlyWire's synapses: `ViewsAsTables`). A capped
answer is never taken as the whole answer (tables.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import requests

from core.errors import PartlyUnavailable, TransientSourceError, Unavailable, UserError
from pipeline.sources import adaptive
from pipeline.sources.cave import tables
from pipeline.sources.cave.chunkedgraph import Chunkedgraph
from pipeline.sources.cave.session import CaveSession, Service
from pipeline.sources.cave.tables import CapWatch, normalise_synapses, read_all, read_synapses, synapse_columns
from pipeline.sources.cave.values import epoch, utc


class ViewsAsTables:
    """caveclient's materialization client, reading a view of the pinned version where a table is named: FlyWire's
    public datastack leaves its synapse table unset so that users read the deduplicated view
    `valid_synapses_nt_np_v6` (fafbseg-py flywire/utils.py; flywire/synapses.py reads it with query_view), and
    MaterializationEngine serves views on a route of their own (caveclient endpoints.py `view_query`). So
    `query_table` of a name the version lists among its views asks `query_view` with the same filters, and
    `get_tables` lists the views too: the source's one query path reads either. Everything else is the client's."""

    _NOT_VIEW_ARGS = ("merge_reference", "log_warning")  # query_table's arguments query_view does not take

    def __init__(self, client, views) -> None:  # noqa: ANN001 - a MaterializationClient, Materialization.views
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


class _VersionChecked(list):
    """The items a query gave up on (adaptive.run's `failed`): the first checks the pinned version first, since an
    expired version fails every query with a 500 (one line then, not a ledger row per root)."""

    def __init__(self, check) -> None:  # noqa: ANN001 - Materialization.pinned_version_listed
        super().__init__()
        self._check = check

    def append(self, item: object) -> None:
        if not self:
            self._check()
        super().append(item)


class Materialization(Service):
    """The materialization's calls."""

    TRANSIENT: ClassVar[dict[str, Callable[[Any], Any]]] = {"_cap": lambda _: None}

    def __init__(self, session: CaveSession, chunkedgraph: Chunkedgraph) -> None:
        super().__init__(session)
        self.chunkedgraph = chunkedgraph  # live queries ask it; delta roots are its
        self.columns_of: dict[str, list[str]] = {}
        self.view_names: dict[int, frozenset[str]] = {}  # materialization version -> its views
        self.rows_not_proofread = 0  # proofread-table rows left out by proofread_table.root_must_equal

    @property
    def cap(self) -> CapWatch:
        """What the server said of its row cap, per thread (made on first use in each process; not pickled)."""
        if self._cap is None:
            self._cap = CapWatch(self.limits.known_row_cap)
        return self._cap

    @property
    def live(self) -> bool:
        return self.cfg.materialization_version is None

    def client(self) -> ViewsAsTables:
        s = self.session
        if s.mat_client is None:
            mat = s.sub_client("materialize", "materialization")
            mat.session.hooks["response"].append(self.cap.hook)
            s.mat_client = ViewsAsTables(mat, self.views)
            if self.live:  # live queries ask the chunkedgraph: through ours (see Chunkedgraph.client), opened now
                mat._cg_client = self.chunkedgraph.client()
        return s.mat_client

    def views(self, version: int | None) -> frozenset[str]:
        """The views the materialization lists at `version` (asked once per version; none for a live query: views
        are served at a version only). A deployment without the views route lists none."""
        from caveclient.base import ServerIncompatibilityError

        if version is None:
            return frozenset()
        if version not in self.view_names:
            mat = self.session.mat_client.client if self.session.mat_client is not None else self.client().client
            with self.session.guard("materialization views", self.session.local):
                try:
                    got = mat.get_views(version=version)
                except ServerIncompatibilityError:  # an engine older than the views API (v3)
                    got = []
                except requests.HTTPError as exc:
                    if exc.response is None or exc.response.status_code != 404:
                        raise
                    got = []
            self.view_names[version] = frozenset(str(v) for v in got)
        return self.view_names[version]

    # ------------------------------------------------------------------ time pinning, versions
    def as_of(self) -> float:
        """The pinned time: `as_of`, else the pinned version's timestamp (asked once; the chunkedgraph is pinned
        to it)."""
        s = self.session
        if s.as_of is None:
            if self.cfg.as_of is not None:
                s.as_of = float(self.cfg.as_of)
            else:
                mat = self.client()
                with s.guard("materialization version timestamp", s.local):
                    ts = mat.get_timestamp(self.cfg.materialization_version)
                s.as_of = epoch(ts)
            self.chunkedgraph.pin()
        return s.as_of

    def check_pinned_time(self) -> None:
        """The start-up check of the pinned time: the pinned version still exists; a live query's as_of is not
        older than every version there is (a live query needs one before it)."""
        if self.cfg.materialization_version is not None:
            self.require_pinned_version("does not exist (any more); versions that do: {versions}")
        elif self.cfg.proofread_table or self.cfg.synapse_table:
            mat = self.client()
            with self.session.guard("materialization versions", self.session.local):
                meta = mat.get_versions_metadata()
            older = [m for m in meta if epoch(m["time_stamp"]) <= float(self.cfg.as_of)]
            if not older:
                ordered = sorted(meta, key=lambda m: m["version"])
                stamps = ", ".join(f"{m['version']} ({m['time_stamp']})" for m in ordered)
                raise UserError(
                    f"{self.session.config_file}: as_of {utc(float(self.cfg.as_of)).isoformat()} is older than "
                    f"every materialization version of '{self.cfg.datastack}' that still exists ({stamps or 'none'}):"
                    " a live query needs one before it; move as_of later or pin materialization_version"
                )

    def pinned_version_listed(self) -> None:
        """The pinned version is still listed (caveclient caches the version metadata for 12 h, and the engine
        answers a query of an expired version with a 500): else UserError saying to re-pin it."""
        if self.live:
            return
        self.require_pinned_version(
            "has expired (its queries answer HTTP 500); pin one that exists: {versions} (a new version changes the "
            "proofread roots: the bank is redone)"
        )

    def require_pinned_version(self, missing: str) -> None:
        """UserError `missing` (its `{versions}`: the versions listed) unless the pinned version is listed."""
        mat = self.client()
        with self.session.guard("materialization versions", self.session.local):
            versions = sorted(int(v) for v in mat.get_versions())
        if int(self.cfg.materialization_version) not in versions:
            raise UserError(
                f"{self.session.config_file}: materialization_version {self.cfg.materialization_version} of datastack "
                f"'{self.cfg.datastack}' " + missing.format(versions=", ".join(map(str, versions)) or "none")
            )

    @contextmanager
    def version_checked(self) -> Iterator[None]:
        """A query that failed after its resends may have met an expired version (the engine answers a query of one
        with a 500, and caveclient caches the version list for 12 h): say so in one line instead of ledgering it."""
        try:
            yield
        except (TransientSourceError, Unavailable):
            self.pinned_version_listed()
            raise

    # ------------------------------------------------------------------ tables
    def query(self, table: str, wrapped: bool = True, **filters: Any) -> pd.DataFrame:
        """A table query pinned to the materialization version, else a live query at as_of (never now).
        `wrapped=False`: the bare request, for a caller that already sends it through the adaptive layer."""
        mat = self.client()
        common = {
            "desired_resolution": [1, 1, 1],
            "split_positions": False,
            "merge_reference": False,  # our tables are not reference tables: no metadata request per query
            "metadata": False,
        }
        as_of = None if not self.live else utc(self.as_of())

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
                    self.pinned_version_listed()  # expired: one line naming the versions there are
                    raise UserError(
                        f"{self.session.config_file}: querying table '{table}' answered "
                        f"'{adaptive.server_message(exc.response)}': the pinned materialization version or as_of "
                        "is no longer served; pin one the datastack lists (the bank is redone)"
                    ) from None
                raise

        if not wrapped:
            return ask()
        with self.version_checked():
            return self.session.one("query", f"querying table '{table}'", self.session.local, ask)

    def _missing_table(self, table: str) -> None:
        """A 404 of a table query: UserError naming the table, its config key and the tables that exist."""
        mat = self.client()
        where = f"version {self.cfg.materialization_version}" if not self.live else "the live database"
        with self.session.guard("materialization tables", self.session.local):
            names = sorted(mat.get_tables(version=self.cfg.materialization_version))
        if table not in names:
            raise UserError(
                f"{self.session.config_file}: {tables.table_key(self.cfg, table)} '{table}' is not a table of "
                f"datastack '{self.cfg.datastack}' at {where}; tables there: {', '.join(names) or 'none'}"
            )

    def query_checked(self, table: str, wrapped: bool = True, **filters: Any) -> tuple[pd.DataFrame, bool]:
        """The query and whether the server capped it (its Warning header, or exactly the cap's rows)."""
        self.client()
        self.cap.reset()
        df = self.query(table, wrapped, **filters)
        return df, self.cap.capped(len(df))

    def columns(self, table: str) -> list[str]:
        """The table's columns, from a one-row query (asked once per table)."""
        if table not in self.columns_of:
            df = self.query(table, limit=1, log_warning=False)  # CapWatch: a limit probe teaches no cap
            self.columns_of[table] = [str(c) for c in df.columns]
        return self.columns_of[table]

    # ------------------------------------------------------------------ proofread neurons, synapses
    def proofread_roots(self) -> list[int]:
        """The proofread neurons' roots at the pinned time: the proofread table's, or the roots of edits
        (proofread_from_delta_roots: the chunkedgraph's delta roots)."""
        if self.cfg.proofread_from_delta_roots:
            return self.chunkedgraph.delta_roots()
        table = self.cfg.proofread_table_name
        if not table:
            raise UserError(
                f"{self.session.config_file}: proofread_table is required unless proofread_from_delta_roots"
            )
        present = self.columns(table)
        tables.check_columns(self.cfg, "proofread_table", table, present)
        same = self.cfg.proofread_root_must_equal
        wanted = [c for c in ("id", "pt_root_id", "pt_supervoxel_id" if self.live else "", same or "") if c in present]
        df = read_all(self.query_checked, table, wanted if "id" in wanted else None)
        roots = pd.to_numeric(df["pt_root_id"], errors="coerce")
        if same:  # a row names a proofread root only where its root is the one its status was assigned to
            keep = roots.notna() & (roots == pd.to_numeric(df[same], errors="coerce"))
            self.rows_not_proofread = int((~keep).sum())
            roots = roots[keep]
        roots = roots.dropna().astype(np.uint64)
        return sorted({int(r) for r in roots if int(r) != 0})

    def synapses(self, pre_root_ids: list[int], post_root_ids: list[int]) -> pa.Table:
        """Synapses from `pre_root_ids` to `post_root_ids`, batched by presynaptic roots; the roots whose synapses
        the server could not give are named: PartlyUnavailable(the others', {root: Unavailable})."""
        table = self.cfg.synapse_table
        if not table:
            raise UserError(f"{self.session.config_file}: synapse_table is required for synapse controls")
        need = functools.partial(tables.need, self.cfg)
        pre = sorted({int(r) for r in pre_root_ids if int(r)})
        post = sorted({int(r) for r in post_root_ids if int(r)})
        if not pre or not post:
            return normalise_synapses(pd.DataFrame(), table, need, self.columns(table))
        present = self.columns(table)
        tables.check_columns(self.cfg, "synapse_table", table, present)
        columns = synapse_columns(present, self.live)

        failed = _VersionChecked(self.pinned_version_listed)

        def batches(items: list[int], read_pre) -> list[pd.DataFrame]:  # noqa: ANN001
            what = f"querying table '{table}'"
            with self.version_checked():
                pairs = self.session.batched("synapses", items, read_pre, self.limits.synapse_pre_batch, what,
                                             self.session.local, failed)  # fmt: skip
            return [df for _, df in pairs]

        def query(t: str, **filters: Any) -> tuple[pd.DataFrame, bool]:
            return self.query_checked(t, False, **filters)  # the batch is already in the adaptive layer

        df = read_synapses(query, table, columns, pre, post, self.limits, batches, self.cfg.synapse_score_above)
        found = normalise_synapses(df, table, need, present)
        if failed:  # the presynaptic roots whose synapses the server could not give
            raise PartlyUnavailable(found, {int(root): gone for root, gone in failed})
        return found
