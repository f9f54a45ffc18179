"""The CAVE source as one module per service (pipeline/sources/cave/, ARCHITECTURE.md §5): each module one sitting's
reading, and the facade's parts sharing one session before and after pickling, so that what the source is given (a
test's config, a worker's unpickled state) is every service's."""

from __future__ import annotations

import pickle
from pathlib import Path

from config import load_config
from config.schema import CONFIG_DIR
from pipeline.sources import cave
from pipeline.sources.cave import CaveSource

MAX_LINES = 400
PARTS = ("chunkedgraph", "materialization", "volumes", "level2", "meshes")


def test_no_module_of_the_cave_source_is_over_400_lines():
    folder = Path(cave.__file__).parent
    sizes = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert len(sizes) >= 10 and not {n: s for n, s in sizes.items() if s > MAX_LINES}


def test_the_parts_share_one_session_and_a_worker_gets_the_pinned_state_without_clients():
    src = CaveSource(load_config("fly", CONFIG_DIR), token="fake-token")
    src._client, src._reached, src._as_of, src._l2cache = object(), True, 1_000.0, False
    clone = pickle.loads(pickle.dumps(src))
    assert all(getattr(clone, part).session is clone.session for part in PARTS)
    assert clone.chunkedgraph.pinned_time() == 1_000.0  # the materialization's as_of, wired again
    assert clone._client is None and clone._reached and clone._l2cache is False
    clone.cfg = clone.cfg.model_copy(update={"timeout_s": 7.0})
    assert all(getattr(clone, part).cfg.timeout_s == 7.0 for part in PARTS)
