"""The hostile twin's item and load faults met through the real caveclient: a root whose lineage never answers in
time is given up after bounded sends while the others come back; an overloaded server is met by lowering the
build's concurrency, not by giving anything up."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from config.schema import CaveRequests
from core.errors import PartlyUnavailable
from pipeline.sources import budget as budgets
from pipeline.sources.cave import CaveSource
from sim.twin import TOKEN, TwinServer
from sim.twin.hostile import CLIENT_FIRST_TIMEOUT_S, HOSTILE_OPTIONS

SHORT = CaveRequests(read_timeout_s={"default": CLIENT_FIRST_TIMEOUT_S})
pytestmark = pytest.mark.slow  # each waits out the hostile twin's held answers and queue (~20 s)


@pytest.fixture(autouse=True)
def fresh_budget():
    yield budgets.reset_local()
    budgets.reset_local()


def _hostile(world, only: str) -> TwinServer:  # noqa: ANN001
    """A v2 twin of the small world with one hostile option on (seed 13)."""
    off = tuple(o for o in HOSTILE_OPTIONS if o != only)
    return TwinServer(world, flavor="v2", hostile_seed=13, hostile_off=off).start()


def test_a_root_whose_lineage_never_answers_in_time_is_given_up_and_the_others_answered(twin_world, demo_cfg):
    from sim.twin.species import twin_config

    server = _hostile(twin_world, "item_faults")
    try:
        stalled = server.app.hostility.items["change_log_timeout"]
        src = CaveSource(twin_config(demo_cfg, server.url, cave_requests=SHORT), token=TOKEN)
        roots = src.proofread_roots()
        assert stalled in roots
        with pytest.raises(PartlyUnavailable) as partly:
            src.change_log(roots)
        # the 500 root of the item faults fails too: each named, every other root's log answered
        assert stalled in partly.value.unavailable
        gone = partly.value.unavailable[stalled]
        assert gone.reason == "change_log_unavailable" and "timeout" in str(gone) and "after 2 sends" in str(gone)
        answered = set(partly.value.result.column("root_id").to_pylist())
        assert answered | set(partly.value.unavailable) >= {r for r in roots if server.world.change_log(r)}
        single = [r for r in server.requests if r.path.endswith("/tabular_change_log_many") and r.status == 504]
        assert len(single) <= 12  # bisected down to it (log2 of the batch), then once more with the longer wait
    finally:
        server.stop()


def test_an_overloaded_server_is_met_with_less_concurrency_and_nothing_given_up(twin_world, demo_cfg):
    """32 threads ask level-2 graphs of an overloaded twin (a few processes, the rest queue): the budget halves the
    host's bound until the answers come in time; every graph comes back."""
    from sim.twin.species import twin_config

    server = _hostile(twin_world, "overload")
    try:
        opts = SHORT.model_copy(update={"max_in_flight_per_host": 32})
        src = CaveSource(twin_config(demo_cfg, server.url, cave_requests=opts), token=TOKEN)
        roots = src.proofread_roots() * 6
        with ThreadPoolExecutor(32) as pool:
            skeletons = list(pool.map(src.skeleton, roots))
        assert len(skeletons) == len(roots) and all(len(s.vertices_nm) for s in skeletons)
        host = budgets.host_of(server.url)
        stats = budgets.current().stats()[host]
        assert stats["decreases"] >= 1 and stats["lowest_limit"] < 32, stats
        assert server.app.hostility.met["queued"] > 0
    finally:
        server.stop()
