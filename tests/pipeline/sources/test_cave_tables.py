"""Materialization reads under the row cap (pipeline/sources/cave/tables.py): a capped answer is never taken as the
whole answer. A server is faked as a function answering at most CAP rows per query and saying so (capped)."""

from __future__ import annotations

import pandas as pd
import pytest

from core.errors import UserError
from pipeline.sources.cave.limits import CaveLimits
from pipeline.sources.cave.tables import CapWatch, read_all, read_synapses

CAP = 10
COLUMNS = ["id", "pre_pt_root_id", "post_pt_root_id"]


def _synapses(pairs: dict[tuple[int, int], int]) -> pd.DataFrame:
    """`n` synapses from pre to post for each (pre, post): n."""
    rows = [(pre, post) for (pre, post), n in sorted(pairs.items()) for _ in range(n)]
    return pd.DataFrame({"id": range(1, len(rows) + 1), "pre_pt_root_id": [r[0] for r in rows],
                         "post_pt_root_id": [r[1] for r in rows]})  # fmt: skip


class _CappedServer:
    """Answers a synapse query with its first CAP rows, capped when there were more (the engine's Warning)."""

    def __init__(self, table: pd.DataFrame) -> None:
        self.table = table
        self.queries: list[dict] = []

    def __call__(self, table: str, filter_in_dict=None, select_columns=None, **filters):  # noqa: ANN001, ANN003, ANN204
        self.queries.append(dict(filter_in_dict or {}))
        df = self.table
        for col, values in (filter_in_dict or {}).items():
            df = df[df[col].isin(values)]
        if "filter_greater_equal_dict" in filters:
            lo, hi = filters["filter_greater_equal_dict"]["id"], filters["filter_less_dict"]["id"]
            df = df[(df["id"] >= lo) & (df["id"] < hi)]
        return df.head(CAP).reset_index(drop=True), len(df) > CAP


def test_a_capped_answer_for_a_single_presynaptic_root_is_split_by_postsynaptic_roots_not_taken_as_complete():
    """Root 1 alone has 25 synapses (more than the cap) to posts 7, 8, 9: its batch cannot be halved by pre roots any
    more, so it is asked again by halves of the post roots until no answer is capped, and every synapse comes back."""
    table = _synapses({(1, 7): 8, (1, 8): 9, (1, 9): 8, (2, 7): 3})
    server = _CappedServer(table)
    got = read_synapses(server, "synapses", COLUMNS, [1, 2], [7, 8, 9], CaveLimits(synapse_pre_batch=2))
    assert sorted(got["id"].tolist()) == sorted(table["id"].tolist())
    alone = [q for q in server.queries if q["pre_pt_root_id"] == [1]]
    assert any(len(q["post_pt_root_id"]) < 3 for q in alone)  # split the other way: by post roots


def test_a_single_pre_root_capped_with_post_roots_not_in_the_body_is_asked_again_with_them():
    """More post roots than fit in a request body: the query asks by pre roots alone; a single capped pre root is
    asked again with the post roots in chunks (synapse_post_filter_max), and every synapse to them comes back."""
    table = _synapses({(1, 7): 6, (1, 8): 6, (1, 9): 6})
    server = _CappedServer(table)
    limits = CaveLimits(synapse_pre_batch=1, synapse_post_filter_max=2)
    got = read_synapses(server, "synapses", COLUMNS, [1], [7, 8, 9], limits)
    assert sorted(got["id"].tolist()) == sorted(table["id"].tolist())
    assert "post_pt_root_id" not in server.queries[0]
    posts = [q.get("post_pt_root_id") for q in server.queries[1:]]
    assert posts[0] == [7, 8] and [9] in posts  # the post roots in chunks of 2, a capped chunk halved again


def test_one_pre_and_one_post_root_over_the_cap_fail_naming_them_never_truncate():
    server = _CappedServer(_synapses({(1, 7): CAP + 1}))
    with pytest.raises(UserError, match="from root 1 to root 7 alone exceed the server's row cap"):
        read_synapses(server, "synapses", COLUMNS, [1], [7], CaveLimits())


def test_a_capped_table_read_is_split_by_id_ranges_until_no_answer_is_capped():
    table = _synapses({(1, 7): 35})
    server = _CappedServer(table)
    got = read_all(server, "synapses", COLUMNS)
    assert sorted(got["id"].tolist()) == list(range(1, 36))


class _Resp:
    def __init__(self, warning: str) -> None:
        self.headers = {"Warning": warning}
        self.request = None


def test_cap_watch_flags_an_answer_with_the_engines_warning_or_exactly_the_caps_rows():
    watch = CapWatch()
    watch.reset()
    assert not watch.capped(CAP)  # nothing known yet: a full-looking answer is not taken as capped
    watch.hook(_Resp(f'201 - "Limited query to {CAP} rows'))
    assert watch.capped(CAP) and watch.cap == CAP
    watch.reset()
    assert watch.capped(CAP) and not watch.capped(CAP - 1)  # the cap now known: exactly its rows is capped
    assert CapWatch(known_cap=5).capped(5)
