"""Where CaveSource's request sizes START, and the pure batching rule. The working sizes are learned.

No number here is taken to be a server's limit: pipeline/sources/adaptive.py bisects a batch the server
refuses (413/414/431/5xx, a timeout, a reset) and remembers the size that works, per host and endpoint.
These are the sizes to start from, conservative where the first releases were (100 operation ids per
details request, 50 roots per change-log request; today's smaller sizes kept):
- change logs: the server builds every listed root's lineage in one request (PyChunkedGraph
  tabular_change_log_many) and the proxy cuts it at 600 s;
- operation details: the ids go in the URL query (caveclient get_operation_details); FlyWire's uWSGI counts
  the URL about twice plus every header against a 4096-byte buffer (pcgv1 uwsgi.ini buffer-size), other
  front servers refuse long URLs with 414;
- synapses: a query returns at most QUERY_LIMIT_SIZE rows and says so only in a Warning header: a few
  tens of presynaptic roots per query, a capped answer splits the batch (never silent truncation);
- meshes: a bounded fetch asks for the sample's box plus `mesh_pad_nm` (a fragment's faces may reach
  past their chunk; the real service cuts fragments at chunk faces, the twin by face centroid).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CaveLimits:
    change_log_batch: int = 25
    operation_details_batch: int = 100
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
