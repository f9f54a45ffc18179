"""The level-2 cache (PCGL2Cache through caveclient) and the skeletons built on it.

A neuron's skeleton is its level-2 graph (the chunkedgraph's) with each node at the cache's representative point,
else, for a datastack without a cache, at its chunk's centre (the segmentation's chunk grid); l2skeleton.py turns
the graph, which has cycles and corner contacts, into the skeleton whose branch points are junctions.
"""

from __future__ import annotations

import numpy as np
import requests

from pipeline.sources.base import Skeleton
from pipeline.sources.cave.chunkedgraph import Chunkedgraph
from pipeline.sources.cave.session import CaveSession, Service
from pipeline.sources.cave.volumes import Volumes
from pipeline.sources.l2skeleton import skeleton_edges


def says_no_l2cache(resp: requests.Response | None) -> bool:
    """The level-2 cache's answer for a datastack it does not serve: PCGL2Cache asserts the graph id is in its
    config (app/utils.py get_l2cache_client, "does not have an L2 Cache") and answers the AssertionError as a 500
    (app/common.py unhandled_exception); a server without the service answers 404."""
    if resp is None:
        return False
    return resp.status_code == 404 or (resp.status_code == 500 and "does not have an L2 Cache" in resp.text)


class Level2(Service):
    """The l2cache's calls and skeletons. `has_cache`: whether the datastack has a level-2 cache, None until its
    first answer decides (it survives pickling: a worker inherits the decision)."""

    def __init__(self, session: CaveSession, chunkedgraph: Chunkedgraph, volumes: Volumes) -> None:
        super().__init__(session)
        self.chunkedgraph = chunkedgraph
        self.volumes = volumes
        self.has_cache: bool | None = None

    def client(self):  # noqa: ANN201 - a caveclient L2CacheClient
        s = self.session
        if s.l2_client is None:
            s.l2_client = s.sub_client("l2cache", "l2cache")
        return s.l2_client

    def coords(self, l2_ids: list[int]) -> dict[int, list[float]] | None:
        """rep_coord_nm of each level-2 id the cache has a point for ({} for ids it has not computed, as the real
        cache answers them); None when the server says the datastack has no level-2 cache at all.

        This answer is how the build decides whether the datastack has a cache (skeleton: the first answer decides,
        kept in `has_cache`, which survives pickling to workers; a worker that starts undecided asks once itself),
        not `has_cache()`: that looks the segmentation's table name up in the l2cache's table mapping, keyed on
        graph ids (FlyWire's `fly_v31`, not `flywire_public`), while the attributes route itself remaps a public
        virtual table (PCGL2Cache app/v1/routes.py remap_public); fafbseg reads FlyWire's public level-2 data
        without asking it (fafbseg/flywire/l2.py)."""
        l2 = self.client()
        no_cache = False

        def ask(batch: list[int]) -> dict | None:
            nonlocal no_cache
            try:
                return l2.get_l2data(batch, attributes=["rep_coord_nm"])
            except requests.HTTPError as exc:
                if not says_no_l2cache(exc.response):
                    raise
                no_cache = True
                return None

        coords: dict[int, list[float]] = {}
        s = self.session
        for _, data in s.batched("l2cache", l2_ids, ask, self.limits.l2_batch, "l2cache attributes", s.local):
            for key, attrs in (data or {}).items():
                if attrs and attrs.get("rep_coord_nm") is not None:
                    coords[int(key)] = attrs["rep_coord_nm"]
        return None if no_cache else coords

    def skeleton(self, root_id: int) -> Skeleton:
        """The skeleton of the root's level-2 graph, each node at its representative point (or chunk centre)."""
        edges = self.chunkedgraph.level2_graph(root_id)
        l2_ids = np.unique(edges)
        coords: dict[int, list[float]] | None = None
        source = "l2cache"
        if l2_ids.size and self.has_cache is not False:
            coords = self.coords([int(v) for v in l2_ids])  # undecided: this first answer decides
            self.has_cache = coords is not None
        if coords is None:  # no level-2 cache for this datastack: each node at its chunk's centre
            coords, source = self.volumes.chunk_centres(l2_ids), "chunk_centre"
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
