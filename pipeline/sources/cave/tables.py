"""Materialization queries that survive the row cap: a capped answer is never taken as the whole answer.

The engine truncates a query at QUERY_LIMIT_SIZE rows and says so only in a response header
(`Warning: 201 - "Limited query to N rows`, MaterializationEngine blueprints/client/common.py), which
caveclient merely logs. `CapWatch` sees every materialization response through a requests hook and
reports a query as capped when that header came back, or when the result has exactly the cap's rows.
A capped query is split and asked again: unfiltered reads by ranges of `id`, synapse reads by halves of
their batch of presynaptic (then postsynaptic) roots.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa

from config.schema import SpeciesConfig
from core.errors import UserError
from core.samples import NEUROTRANSMITTERS
from pipeline.sources.base import SYNAPSE_COLUMNS, SYNAPSE_SCORE_COLUMNS
from pipeline.sources.cave.limits import CaveLimits, chunks

_CAP = re.compile(r"Limited query to (\d+) rows")
# Neurotransmitter score columns passed through when the synapse table has them (FlyWire synapses_nt_v1).
ID_MAX = 2**63 - 1


class _CapHandled(logging.Filter):
    """Drops caveclient's log line for a capped answer: `CapWatch` acts on it (the query is split and
    asked again), so the line would only tell a user about a truncation that did not happen."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _CAP.search(str(record.msg)) is None


_CAP_HANDLED = _CapHandled()


def _asked_limit(response) -> int | None:  # noqa: ANN001 - a requests.Response
    """The `limit` the query itself asked for (caveclient puts it in the JSON body), None if none."""
    body = getattr(getattr(response, "request", None), "body", None)
    if not body:
        return None
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return None
    limit = data.get("limit") if isinstance(data, dict) else None
    return int(limit) if isinstance(limit, int) else None


class CapWatch:
    """A requests response hook: remembers, per thread, whether that thread's last answer was capped.

    The server's cap is learned only from a Warning header of a query that asked for no smaller limit of its
    own: a `limit=1` probe's one row "reaches the limit" too, and must neither teach a cap of 1 nor make
    another thread's one-row answer look capped. What a thread asks ("was MY last answer capped") is kept
    per thread; the learned cap is shared (it is the server's, the same for every thread)."""

    def __init__(self, known_cap: int | None = None) -> None:
        self._known = known_cap
        self._learned: int | None = None
        self._lock = threading.Lock()
        self._local = threading.local()
        logging.getLogger("caveclient.base").addFilter(_CAP_HANDLED)  # a set: adding twice keeps one

    @property
    def cap(self) -> int | None:
        """The cap known in advance, else the one the server announced."""
        return self._known if self._known is not None else self._learned

    def hook(self, response, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201 - requests' hook signature
        m = _CAP.search(response.headers.get("Warning", "") or "")
        if m is None:
            return response
        n = int(m.group(1))
        asked = _asked_limit(response)
        if asked is not None and n >= asked:
            return response  # our own limit reached: neither capped nor the server's cap
        with self._lock:
            self._learned = n if self._learned is None else min(self._learned, n)
        self._local.capped = True
        return response

    def reset(self) -> None:
        self._local.capped = False

    def capped(self, n_rows: int) -> bool:
        cap = self.cap
        return bool(getattr(self._local, "capped", False)) or (cap is not None and n_rows == cap)


def table_key(cfg: SpeciesConfig, table: str) -> str:
    """The config key that names `table`."""
    return "proofread_table" if table == cfg.proofread_table_name else "synapse_table"


def need(cfg: SpeciesConfig, df: pd.DataFrame | list[str], table: str, column: str, purpose: str) -> None:
    """UserError naming the table (and its config key), the column and what it is needed for, unless `df` (a
    table's rows, or its column names) has the column."""
    columns = list(df.columns) if isinstance(df, pd.DataFrame) else list(df)
    if column not in columns:
        named = f" ({table_key(cfg, table)})" if table in (cfg.proofread_table_name, cfg.synapse_table) else ""
        raise UserError(
            f"table '{table}'{named} (datastack {cfg.datastack}) has no column '{column}', needed for "
            f"{purpose}; columns are: {', '.join(map(str, columns))}. Check config/{cfg.species}.yaml"
        )


def check_columns(cfg: SpeciesConfig, key: str, table: str, present: list[str]) -> None:
    """The columns the source reads from the table config key `key` names are in `present` (the one list of
    them: proofread_roots and synapses call this, and so does preflight); else UserError naming the column."""
    if key == "proofread_table":
        need(cfg, present, table, "pt_root_id", "proofread roots")
        if cfg.proofread_root_must_equal:
            need(cfg, present, table, cfg.proofread_root_must_equal, "proofread_table.root_must_equal")
    elif key == "synapse_table":
        for col in ("id", "pre_pt_root_id", "post_pt_root_id"):
            need(cfg, present, table, col, "synapse controls")
        if "ctr_pt_position" not in present and not {"pre_pt_position", "post_pt_position"} <= set(present):
            either = "synapse controls (or pre_pt_position and post_pt_position)"
            need(cfg, present, table, "ctr_pt_position", either)
        for col in sorted(cfg.synapse_score_above):
            need(cfg, present, table, col, f"synapse_score_above in config/{cfg.species}.yaml")
    else:
        raise ValueError(f"no table columns are read for {key!r}")


Query = Callable[..., tuple[pd.DataFrame, bool]]  # (table, **caveclient filters) -> (rows, capped)


def read_all(query: Query, table: str, columns: list[str] | None) -> pd.DataFrame:
    """Every row of a table, split into `id` ranges until no answer is capped (split at the median id
    of the capped answer: it says where the rows are, whatever order the server returned them in)."""
    frames, todo = [], [(0, ID_MAX)]
    while todo:
        lo, hi = todo.pop()
        filters = {} if (lo, hi) == (0, ID_MAX) else {
            "filter_greater_equal_dict": {"id": lo}, "filter_less_dict": {"id": hi}}  # fmt: skip
        df, capped = query(table, select_columns=columns, **filters)
        if not capped:
            frames.append(df)
            continue
        ids = np.sort(pd.to_numeric(df["id"]).to_numpy(dtype=np.int64)) if "id" in df.columns and len(df) else []
        mid = int(ids[len(ids) // 2]) if len(ids) else (lo + hi) // 2
        if not lo < mid < hi:
            mid = (lo + hi) // 2
        if hi - lo <= 1 or mid in (lo, hi):
            raise UserError(f"table '{table}': one id range [{lo}, {hi}) alone exceeds the server's row cap")
        todo.extend([(mid, hi), (lo, mid)])
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns or [])


def synapse_columns(present: list[str], live: bool) -> list[str]:
    """The columns a synapse query asks for: ids, roots, one position kind, scores (and, for a live
    query, the supervoxel columns caveclient needs to bring roots to the query's time)."""
    cols = ["id", "pre_pt_root_id", "post_pt_root_id"]
    if "ctr_pt_position" in present:
        cols.append("ctr_pt_position")
    else:
        cols += [c for c in ("pre_pt_position", "post_pt_position") if c in present]
    cols += [c for c in (*SYNAPSE_SCORE_COLUMNS, *NEUROTRANSMITTERS) if c in present]
    if live:
        cols += [c for c in ("pre_pt_supervoxel_id", "post_pt_supervoxel_id") if c in present]
    return [c for c in cols if c in present]


Batches = Callable[[list[int], Callable[[list[int]], pd.DataFrame]], list[pd.DataFrame]]


def read_synapses(
    query: Query,
    table: str,
    columns: list[str],
    pre: list[int],
    post: list[int],
    limits: CaveLimits,
    batches: Batches | None = None,
    score_above: dict[str, float] | None = None,
) -> pd.DataFrame:
    """Rows with pre in `pre` and post in `post`, batched by presynaptic roots (`batches(pre, read)`: the
    adaptive layer's sizes; default: `synapse_pre_batch` at a time); a capped batch is halved (pre roots
    first, then post roots) and asked again. `score_above`: only rows whose scores are above these (the server
    filters them: filter_greater_dict)."""
    post_in_body = len(post) <= limits.synapse_post_filter_max

    def read(pre_batch: list[int]) -> pd.DataFrame:
        return _read_capped(query, table, columns, pre_batch, post, post_in_body, limits, score_above or {})

    frames = batches(pre, read) if batches is not None else [read(b) for b in chunks(pre, limits.synapse_pre_batch)]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=columns)
    df = pd.concat(frames, ignore_index=True)
    pre_ok = pd.to_numeric(df["pre_pt_root_id"], errors="coerce").isin(pre)
    post_ok = pd.to_numeric(df["post_pt_root_id"], errors="coerce").isin(post)
    return df[pre_ok & post_ok].reset_index(drop=True)


def _read_capped(
    query: Query, table: str, columns: list[str], pre: list[int], post: list[int], post_in_body: bool,
    limits: CaveLimits, score_above: dict[str, float],
) -> pd.DataFrame:  # fmt: skip
    """One batch of presynaptic roots, its capped answers split until none is."""
    todo: list[tuple[list[int], list[int] | None]] = [(pre, post if post_in_body else None)]
    frames = []
    while todo:
        pre_b, post_b = todo.pop(0)
        filters = {"pre_pt_root_id": pre_b}
        if post_b is not None:
            filters["post_pt_root_id"] = post_b
        above = {"filter_greater_dict": dict(sorted(score_above.items()))} if score_above else {}
        df, capped = query(table, filter_in_dict=filters, select_columns=columns, **above)
        if not capped:
            frames.append(df)
            continue
        if len(pre_b) > 1:
            half = len(pre_b) // 2
            todo[:0] = [(pre_b[:half], post_b), (pre_b[half:], post_b)]
        elif post_b is None:
            todo[:0] = [(pre_b, b) for b in chunks(post, limits.synapse_post_filter_max)]
        elif len(post_b) > 1:
            half = len(post_b) // 2
            todo[:0] = [(pre_b, post_b[:half]), (pre_b, post_b[half:])]
        else:
            raise UserError(
                f"table '{table}': the synapses from root {pre_b[0]} to root {post_b[0]} alone exceed the "
                "server's row cap; this query cannot be split further"
            )
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def normalise_synapses(
    df: pd.DataFrame, table: str, need: Callable[[pd.DataFrame, str, str, str], None], present: Iterable[str] = ()
) -> pa.Table:
    """SYNAPSE_COLUMNS, then the score columns the table has (`present`: its columns, so that an empty answer
    still says which): cleft_score, connection_score (FlyWire's tables have them, MICrONS' synapses_pni_2 has
    neither) and neurotransmitter scores. One row per synapse id, sorted by id."""
    have = set(present) | set(df.columns)
    scores = [c for c in (*SYNAPSE_SCORE_COLUMNS, *NEUROTRANSMITTERS) if c in have]
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
        need(df, table, col, "synapse controls")
    df = df.drop_duplicates(subset="id").sort_values("id", kind="stable").reset_index(drop=True)
    if "ctr_pt_position" in df.columns:
        ctr = np.stack([np.asarray(p, dtype=np.float64) for p in df["ctr_pt_position"]])
    elif "pre_pt_position" in df.columns and "post_pt_position" in df.columns:
        pre = np.stack([np.asarray(p, dtype=np.float64) for p in df["pre_pt_position"]])
        post = np.stack([np.asarray(p, dtype=np.float64) for p in df["post_pt_position"]])
        ctr = (pre + post) / 2.0
    else:
        need(df, table, "ctr_pt_position", "synapse controls (or pre_pt_position and post_pt_position)")
    n = len(df)

    def _score(name: str) -> list:
        if name not in df.columns:
            return [None] * n
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
