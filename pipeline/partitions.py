"""How work is cut into partitions: buckets of a hash prefix, so membership never shifts when rows come or go.

A partition at level k holds the items whose 32-bit hash prefix starts with the k bits of its index. The level is
the smallest one whose buckets hold at most `target` items on average, so partitions hold about target/2 to target
items. Adding 5% rows puts a few new items in each bucket and moves none; only a size change across a power of two
changes the level, and then each old bucket splits into (or merges from) whole new ones (see runner's relayout).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from core.hashing import md5_hex

PREFIX_BITS = 32
MAX_LEVEL = 20  # a million partitions: far beyond any release


def level_for(n_items: int, target: int) -> int:
    """The smallest level k with n_items / 2**k <= target (0 for an empty or small set)."""
    if n_items <= target:
        return 0
    return min(MAX_LEVEL, math.ceil(math.log2(n_items / target)))


def prefix_of(hex_digest: str) -> int:
    """The 32-bit prefix of a hex digest (a combined_sample_hash is an md5 hex digest)."""
    return int(hex_digest[:8], 16)


def bucket_of(hex_digest: str, level: int) -> int:
    return prefix_of(hex_digest) >> (PREFIX_BITS - level) if level else 0


def bucket_range(index: int, level: int) -> tuple[int, int]:
    """[lo, hi) of the 32-bit prefixes in bucket `index` at `level`."""
    width = 1 << (PREFIX_BITS - level)
    return index * width, (index + 1) * width


def ranges_overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def buckets(sorted_hex: Sequence[str], level: int) -> list[tuple[int, int]]:
    """(start, stop) row slices of each of the 2**level buckets of hex digests sorted ascending."""
    prefixes = np.fromiter((prefix_of(h) for h in sorted_hex), dtype=np.uint64, count=len(sorted_hex))
    edges = np.array([bucket_range(i, level)[0] for i in range(1 << level)] + [1 << PREFIX_BITS], dtype=np.uint64)
    cuts = np.searchsorted(prefixes, edges, side="left").tolist()
    return [(cuts[i], cuts[i + 1]) for i in range(1 << level)]


def root_digest(root_id: int) -> str:
    """Where a root id falls among the bank's root batches (ids themselves are not uniform)."""
    return md5_hex(f"root:{int(root_id)}")
