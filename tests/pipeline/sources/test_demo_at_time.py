"""DemoSource pinned to an earlier time answers as the twin (CaveSource through it) does at that time (issue 26 item
6): the proofread neurons' roots then, their history, synapses and junctions, the whole bank. Slow: the tiny world and
the session's twin."""

from __future__ import annotations

import pytest

from core.errors import UserError
from pipeline.sources.cave import CaveSource
from pipeline.sources.demo import DemoSource
from pipeline.sources.retrying import RetryingSource
from pipeline.stages.bank_candidates import junction_points
from sim.twin import TOKEN
from sim.twin.model import default_versions
from sim.twin.species import twin_config
from tests.pipeline.fakes import build_bank

V2_TIME = next(v.timestamp for v in default_versions() if v.version == 2)  # 2025-09-16: version 2, pinned
LIVE_TIME = 1767225600.0  # 2026-01-01: no version then; the twin answers live queries at it
BANK_KEYS = ("sample_type", "coord_nm", "geometry_roots", "after_roots", "mask_a_root", "mask_b_root", "timestamp",
             "cutout_timestamp")  # fmt: skip


@pytest.fixture(params=[V2_TIME, LIVE_TIME], ids=["version-2", "2026-01-01"])
def at_time(request, demo_cfg, cave_twin, twin_world) -> tuple[DemoSource, CaveSource, float]:
    """(the demo source, CaveSource through the v2 twin) of the same world pinned to one time."""
    cfg = demo_cfg.model_copy(update={"as_of": request.param})
    twin_cfg = twin_config(cfg, cave_twin.url)
    assert (twin_cfg.materialization_version, twin_cfg.as_of) == (
        (2, None) if request.param == V2_TIME else (None, LIVE_TIME)
    )
    return DemoSource(cfg, twin_world), CaveSource(twin_cfg, token=TOKEN), request.param


def test_the_proofread_neurons_are_their_roots_at_the_time(at_time, demo_cfg, twin_world):
    demo, cave, t = at_time
    assert demo.as_of() == cave.as_of() == t
    roots = demo.proofread_roots()
    assert roots == cave.proofread_roots()
    states = demo._root_states()
    for root in roots:  # each one alive then: created at or before t, not replaced by t
        i = states.row[root]
        assert states.created_ms[i] <= t * 1000 < states.expired_ms[i], root
    final = DemoSource(demo_cfg, twin_world).proofread_roots()
    assert roots != final  # neurons edited since t: the world's table roots (its as_of's) are not the answer


def test_history_synapses_and_junctions_at_the_time_equal_the_twins(at_time):
    demo, cave, _ = at_time
    roots = demo.proofread_roots()
    key = ("root_id", "operation_id", "timestamp", "is_merge")
    assert sorted(demo.change_log(roots).select(key).to_pylist(), key=str) == sorted(
        cave.change_log(roots).select(key).to_pylist(), key=str
    )
    cols = ["id", "pre_pt_root_id", "post_pt_root_id"]
    want = cave.synapses(roots, roots).select(cols).to_pylist()
    assert demo.synapses(roots, roots).select(cols).sort_by("id").to_pylist() == want and want
    empty = 0
    for root in roots:  # an earlier root has no level-2 graph in the world, for the twin as for the demo
        a, b = demo.skeleton(root), cave.skeleton(root)
        assert len(a.vertices_nm) == len(b.vertices_nm) and len(a.edges) == len(b.edges), root
        ja = sorted(tuple(p) + (d,) for p, d in junction_points(a.vertices_nm, a.edges))  # vertices in another order
        assert ja == sorted(tuple(p) + (d,) for p, d in junction_points(b.vertices_nm, b.edges)), root
        empty += len(a.vertices_nm) == 0
    assert 0 < empty < len(roots)


def test_the_bank_at_the_time_equals_the_twins(at_time, demo_cfg, cave_twin):
    demo, cave, t = at_time
    cfg = demo.cfg
    got = build_bank(RetryingSource(demo), cfg)
    want = build_bank(RetryingSource(cave), twin_config(cfg, cave_twin.url))
    assert [r["combined_sample_hash"] for r in got.rows] == [r["combined_sample_hash"] for r in want.rows]
    for a, b in zip(got.rows, want.rows, strict=True):
        assert {k: a[k] for k in BANK_KEYS} == {k: b[k] for k in BANK_KEYS}
    assert sorted((f.sample_id, f.reason) for f in got.failures) == sorted(
        (f.sample_id, f.reason) for f in want.failures
    )
    alive = demo._root_states()
    for row in got.rows:  # a control's roots are alive at its cutout's time: in the segmentation resolved then
        if row["sample_type"] in ("junction_control", "synapse_control"):
            assert row["cutout_timestamp"] == t
            for root in row["geometry_roots"]:
                i = alive.row[int(root)]
                assert alive.created_ms[i] <= t * 1000 < alive.expired_ms[i], row["combined_sample_hash"]


def test_a_demo_config_pinned_to_a_version_reads_at_its_time(demo_cfg, twin_world):
    """`materialization_version` alone: the time of that version of the world (the twin's versions); an expired or
    unknown one is refused in one line naming the live ones."""
    pinned = demo_cfg.model_copy(update={"as_of": None, "materialization_version": 2})
    assert DemoSource(pinned, twin_world).as_of() == V2_TIME
    for bad in (1, 9):
        with pytest.raises(UserError, match=r"materialization_version \d is not a live version .* \(live: 2, 3\)"):
            DemoSource(pinned.model_copy(update={"materialization_version": bad}), twin_world).as_of()
