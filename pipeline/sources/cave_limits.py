"""How CaveSource sizes its requests so the real servers answer them, and the pure batching rules.

The numbers (see pipeline/twin/limits.py for the servers' side):
- change logs: the server builds every listed root's lineage in one request (PyChunkedGraph
  tabular_change_log_many), ~10^5 roots time out: tens of roots per request;
- operation details: the ids go in the URL query (caveclient get_operation_details); servers refuse
  URLs past ~8 KB: batches whose whole URL stays under 7,000 bytes;
- synapses: a query returns at most QUERY_LIMIT_SIZE rows and says so only in a Warning header: a few
  tens of presynaptic roots per query, a capped answer splits the batch (never silent truncation);
- meshes: a bounded fetch asks for the sample's box plus `mesh_pad_nm` (a fragment's faces may reach
  past their chunk; the real service cuts fragments at chunk faces, the twin by face centroid).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CaveLimits:
    change_log_batch: int = 25
    url_budget_bytes: int = 7_000
    synapse_pre_batch: int = 25
    synapse_post_filter_max: int = 2_000  # larger post sets are filtered on the client, not in the body
    known_row_cap: int | None = None  # a row cap known in advance (else learned from the first Warning)
    roots_batch: int = 100_000
    l2_batch: int = 5_000
    mesh_pad_nm: float = 500.0


def chunks(items: Sequence, size: int) -> Iterator[list]:
    """Consecutive batches of at most `size` items."""
    for start in range(0, len(items), max(1, size)):
        yield list(items[start : start + size])


def operation_details_url(base_url: str, ids: Sequence[int]) -> str:
    """The URL caveclient's get_operation_details requests (urlencode of the id list's str)."""
    return base_url + "?" + urllib.parse.urlencode({"operation_ids": [int(i) for i in ids]})


def url_batches(base_url: str, ids: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive batches of ids whose operation-details URL is at most `budget` bytes."""
    empty = len(operation_details_url(base_url, []))
    out: list[list[int]] = []
    batch: list[int] = []
    size = empty
    for i in ids:
        cost = len(urllib.parse.quote_plus(str(int(i)))) + (len(urllib.parse.quote_plus(", ")) if batch else 0)
        if batch and size + cost > budget:
            out.append(batch)
            batch, size = [], empty
            cost = len(urllib.parse.quote_plus(str(int(i))))
        if empty + cost > budget:
            raise ValueError(f"operation id {i} alone makes a URL longer than {budget} bytes")
        batch.append(int(i))
        size += cost
    if batch:
        out.append(batch)
    for b in out:  # the estimate is exact; check it against the real encoding
        assert len(operation_details_url(base_url, b)) <= budget, "operation-details URL over budget"
    return out
