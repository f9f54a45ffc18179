"""Item faults: failures tied to one root that persist however often it is asked for (hostile option `item_faults`).

Why: the real servers fail some items every time, not by chance, and a client that resends them forever or lets them
fail their whole batch never finishes. Read in the servers' code:

- `change_log_500`: pcgv1's tabular change log builds each root's rows with `entry.edges_failsafe`
  (backend/history.py lines 163-164); for an undo/redo log row, which carries no sink/source ids and no edges, that
  property raises KeyError (lines 427-455), app/common.py turns it into a 500 (errors.pcg_500), and every
  `tabular_change_log_many` request whose `root_ids` hold such a root fails whole.
- `change_log_timeout`: a single root's change log can take longer than any client waits (PyChunkedGraph issue 526,
  per shared/REAL_SOURCES.md): any change-log request holding it is held past the client's first timeout and its one
  4x resend, then nginx answers 504 (proxy_read_timeout).
- `manifest_500`, `level2_graph_500`: one root's manifest (v1 and v2 routes and the legacy route) or level-2 graph
  answers 500 every time. The exception is the twin's own; the body is the servers' (errors.pcg_500).

The roots are drawn per seed among the world's proofread roots (distinct, deterministic: numpy generators seeded by
crc32 names), each where it matters in the tiny and the demo world: the change-log roots have edits that their change
log keeps; the manifest root is among the proofread roots whose level-2 graphs have the most branch nodes (what the
bank's junction controls come from, so the fetch stage asks its manifest); the level-2 graph root has a graph.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Callable

import numpy as np

from sim.twin.errors import UNDO_ROW_KEYERROR, gateway, pcg_500
from sim.twin.http import Request, Response

ITEM_FAULTS = ("change_log_500", "change_log_timeout", "manifest_500", "level2_graph_500")
# how long a change-log request holding the stalled root is held before nginx's 504: past the hostile build's first
# read timeout (hostile.CLIENT_FIRST_TIMEOUT_S, 1 s) and its one resend's (4x: 4 s), each request on its own
STALL_S = 4.6
_MANIFEST = re.compile(r"/manifest/(\d+):0\Z")
_LVL2 = re.compile(r"/node/(\d+)/lvl2_graph\Z")


def _rng(seed: int, *what: object) -> np.random.Generator:
    return np.random.default_rng([int(seed), *(zlib.crc32(str(w).encode()) for w in what)])


def proofread_roots(world: object) -> list[int]:
    """The proofread roots at the world's latest valid version (sorted, distinct, no 0)."""
    latest = max(v.version for v in world.versions if not v.expired)  # type: ignore[attr-defined]
    table = world.table("proofread_neurons", latest)  # type: ignore[attr-defined]
    return sorted({int(r) for r in table["pt_root_id"].to_pylist() if r})


def _branch_nodes(edges: list) -> int:
    degree: dict[int, int] = {}
    for a, b in edges:
        degree[int(a)] = degree.get(int(a), 0) + 1
        degree[int(b)] = degree.get(int(b), 0) + 1
    return sum(d >= 3 for d in degree.values())


def draw_items(seed: int, world: object) -> dict[str, int]:
    """fault name -> root, each drawn in a seeded order among the roots where it matters, none shared. A fault with
    no eligible root is left out (e.g. `manifest_500` in the scale world, which has no meshes)."""
    roots = proofread_roots(world)
    taken: set[int] = set()
    out: dict[str, int] = {}
    generated = bool(getattr(world, "is_generated", False))

    def pick(name: str, eligible: list[int]) -> None:
        free = [r for r in eligible if r not in taken]
        if free:
            root = int(free[int(_rng(seed, "item", name).integers(len(free)))])
            out[name] = root
            taken.add(root)

    def order(name: str) -> list[int]:
        return [roots[i] for i in _rng(seed, "order", name).permutation(len(roots))]

    def first_with_edits(name: str) -> list[int]:
        # a generated world has thousands of roots: the first few in a seeded order that have edits
        got = []
        for r in order(name):
            if world.change_log(r, True):  # type: ignore[attr-defined]
                got.append(r)
                if generated and len(got) >= 8:
                    break
        return got

    pick("change_log_500", first_with_edits("change_log_500"))
    pick("change_log_timeout", first_with_edits("change_log_timeout"))
    if not generated:
        meshed = [r for r in roots if world.fragment_rows(r)]  # type: ignore[attr-defined]
        score = {r: _branch_nodes(world.l2_edges.get(r, [])) for r in meshed}  # type: ignore[attr-defined]
        ranked = sorted(meshed, key=lambda r: (-score[r], r))
        pick("manifest_500", ranked[: max(3, len(ranked) // 4)])
    graphs = [r for r in order("level2_graph_500") if world.l2_edges.get(r)]  # type: ignore[attr-defined]
    pick("level2_graph_500", graphs[:8] if generated else graphs)
    return out


class ItemFaults:
    """Answers of the drawn items' faults: `stall` before the server works (the request is held, then 504),
    `refuse` inside the app (a 500 with the servers' body). `count(name)` counts what it answered ("item_500",
    "item_stalled")."""

    def __init__(self, items: dict[str, int], as_of_s: float, count: Callable[[str], None]) -> None:
        self.items = dict(items)
        self.as_of_s = as_of_s
        self._count = count
        self.sleep: Callable[[float], None] = time.sleep  # a test holds the stall on an event instead

    def _roots(self, req: Request) -> set[int]:
        try:
            return {int(r) for r in json.loads(req.body or b"{}").get("root_ids", [])}
        except (ValueError, TypeError, AttributeError):
            return set()

    def stall(self, req: Request) -> Response | None:
        """A change-log request holding the `change_log_timeout` root: held STALL_S, then nginx's 504."""
        root = self.items.get("change_log_timeout")
        if root is None or not req.path.endswith("/tabular_change_log_many") or root not in self._roots(req):
            return None
        self._count("item_stalled")
        self.sleep(STALL_S)
        return gateway(504)

    def refuse(self, req: Request) -> Response | None:
        """The 500 of a request that holds a failing item, else None."""
        items = self.items
        if req.path.endswith("/tabular_change_log_many") and items.get("change_log_500") in self._roots(req):
            return self._500(UNDO_ROW_KEYERROR, "KeyError")
        m = _MANIFEST.search(req.path)
        if m is not None and int(m.group(1)) == items.get("manifest_500"):
            return self._500(f"mesh fragments of {m.group(1)} could not be read", "OSError")
        m = _LVL2.search(req.path)
        if m is not None and int(m.group(1)) == items.get("level2_graph_500"):
            return self._500(f"level 2 graph of {m.group(1)} could not be built", "RuntimeError")
        return None

    def _500(self, message: str, exc_type: str) -> Response:
        self._count("item_500")
        return pcg_500(message, exc_type, self.as_of_s)
