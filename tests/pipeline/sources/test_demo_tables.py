"""The demo world's roots and tables at a time (pipeline/sources/demo_tables.py): the one rule the demo source and the
twin answer by. Fast: a hand-made roots table, no world."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline.sources.demo_tables import RootStates, anchor_voxel, roots_keep_null, to_ms, world_versions
from sim.demo_world.history import AS_OF, OPS_START
from sim.twin.model import default_versions

T0, T1 = 1_000, 2_000  # the world's start; a merge of roots 1 and 2 into root 3 at T1 (s)


def _states() -> RootStates:
    """Roots 1 (supervoxels 10, 11) and 2 (20) from T0, merged into root 3 at T1; root 4 (40) alive throughout."""
    return RootStates(
        pa.table(
            {
                "root_id": pa.array([1, 2, 3, 4], pa.uint64()),
                "supervoxel_ids": pa.array([[10, 11], [20], [10, 11, 20], [40]], pa.list_(pa.uint64())),
                "created_ts": pa.array([T0, T0, T1, T0], pa.int64()),
                "expired_ts": pa.array([T1, T1, None, None], pa.int64()),
            }
        )
    )


def test_a_supervoxels_root_is_the_one_alive_at_the_time_and_a_read_at_an_edit_sees_its_after_state():
    states = _states()
    svs = np.array([10, 20, 40, 0, 99], dtype=np.uint64)
    assert states.roots_at(svs, to_ms(T1 - 1)).tolist() == [1, 2, 4, 0, 0]
    assert states.roots_at(svs, to_ms(T1 - 0.0005)).tolist() == [1, 2, 4, 0, 0]  # rounded down to whole ms
    assert states.roots_at(svs, to_ms(T1)).tolist() == [3, 3, 4, 0, 0]  # end inclusive: the edit's own time
    assert states.roots_at(svs, to_ms(T0 - 1)).tolist() == [0, 0, 0, 0, 0]  # before any root
    assert states.first_ms() == T0 * 1000
    assert states.supervoxels(3).tolist() == [10, 11, 20]


def test_a_tables_roots_at_a_time_are_its_supervoxels_roots_then_and_a_null_root_stays_null():
    """A materialized table's root update: each row's supervoxel's root at the time; a row the world left without a
    root (a planted defect) has none at any time (0, as the engine's int64 column carries it)."""
    states = _states()
    svs, world = [10, 20, 40], [3, 3, None]  # the world's table holds its as_of's roots
    assert roots_keep_null(states, svs, world, to_ms(T1 - 1)).tolist() == [1, 2, 0]
    assert roots_keep_null(states, svs, world, to_ms(T1)).tolist() == [3, 3, 0]


def test_the_versions_are_the_twins_and_a_point_is_read_at_the_voxel_under_it():
    assert world_versions(OPS_START, AS_OF) == default_versions()
    assert [v.expired for v in default_versions()] == [True, False, False]
    assert default_versions()[-1].timestamp == AS_OF and OPS_START < default_versions()[1].timestamp < AS_OF
    assert anchor_voxel([32.0 * 10 + 16, 32.0 * 20 + 31.9, 45.0 * 3]) == (10, 20, 3)
