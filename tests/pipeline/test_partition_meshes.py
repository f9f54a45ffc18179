"""Each root's mesh fetched once per partition, bounded to the union of its samples' boxes, and the
fetched samples identical to fetching each one on its own."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from config.schema import load_config
from core.errors import SampleError
from pipeline.sources.demo import DemoSource
from pipeline.stages.fetch_meshes import PartitionMeshes, mesh_roots, sample_box
from pipeline.stages.fetch_sample import fetch_sample
from tests.pipeline.fakes import build_bank


class Counting:
    """A source wrapper that counts mesh calls and remembers their boxes."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner = inner
        self.calls: Counter[int] = Counter()
        self.boxes: dict[int, tuple] = {}
        self.fail_once: set[int] = set()

    def mesh(self, root_id, box_nm=None):  # noqa: ANN001, ANN201
        self.calls[int(root_id)] += 1
        self.boxes[int(root_id)] = box_nm
        if int(root_id) in self.fail_once:
            self.fail_once.discard(int(root_id))
            raise SampleError("injected_permanent_fault", "a fault of one sample")
        return self.inner.mesh(root_id, box_nm=box_nm)

    def __getattr__(self, name):  # noqa: ANN001, ANN204
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def setup(tiny_configs, tiny_world):
    cfg = load_config("demo", tiny_configs)
    demo = DemoSource(cfg, tiny_world)
    rows = build_bank(demo, cfg).rows
    return cfg, demo, rows


def _fetch(source, cfg, row, meshes=None):  # noqa: ANN001, ANN202
    try:
        return fetch_sample(source, cfg, row, meshes).to_arrays()
    except SampleError as exc:
        return exc.reason


def test_once_per_partition_and_identical_samples(setup):
    cfg, demo, rows = setup
    part = rows[:24]
    counting = Counting(demo)
    meshes = PartitionMeshes(counting, cfg, part)
    needed = Counter(r for row in part for r in set(mesh_roots(row)))
    assert any(n > 1 for n in needed.values())  # roots shared by samples: the case this is for
    for row in part:
        try:
            got = _fetch(counting, cfg, row, meshes)
        finally:
            meshes.done(row)
        want = _fetch(demo, cfg, row)
        if isinstance(want, str):
            assert got == want
            continue
        assert got.keys() == want.keys()
        for key in want:
            assert np.array_equal(got[key], want[key]), key
    assert all(n == 1 for n in counting.calls.values())
    assert set(counting.calls) <= set(needed)
    shared = next(r for r, n in needed.items() if n > 1 and r in counting.boxes)
    boxes = [sample_box(cfg, row) for row in part if shared in mesh_roots(row)]
    lo, hi = counting.boxes[shared]
    assert np.allclose(lo, np.min([b[0] for b in boxes], axis=0))
    assert np.allclose(hi, np.max([b[1] for b in boxes], axis=0))
    assert not meshes._meshes  # every mesh dropped after its last sample


def test_a_samples_own_fault_is_not_shared(setup):
    cfg, demo, rows = setup
    part = rows[:24]
    needed = Counter(r for row in part for r in set(mesh_roots(row)))
    shared = next(r for r, n in needed.items() if n > 1)
    counting = Counting(demo)
    counting.fail_once.add(shared)
    meshes = PartitionMeshes(counting, cfg, part)
    users = [row for row in part if shared in mesh_roots(row)]
    with pytest.raises(SampleError, match="injected"):
        meshes.mesh(shared)
    meshes.mesh(shared)  # the next sample asks again and gets it
    assert counting.calls[shared] == 2 and len(users) > 1
    with pytest.raises(KeyError):
        meshes.mesh(12345)


def test_threads_needing_one_root_fetch_it_once():
    """Seven threads ask while an eighth is fetching: all wait for that one fetch (held open until they are
    all waiting, so the overlap is certain rather than left to the scheduler)."""
    import threading

    import numpy as np
    import trimesh

    from config import load_config
    from pipeline.stages.fetch_meshes import PartitionMeshes
    from tests.conftest import wait_until

    gate = threading.Event()

    class Gated:
        calls = 0

        def mesh(self, root_id, box_nm=None):
            Gated.calls += 1
            gate.wait(timeout=60)
            return trimesh.Trimesh(np.eye(3), [[0, 1, 2]], process=False)

    rows = [{"coord_nm": [0.0, 0.0, 0.0], "geometry_roots": ["7"], "sample_type": "junction_control"}] * 8
    pm = PartitionMeshes(Gated(), load_config("demo"), rows)
    got = []
    first = threading.Thread(target=lambda: got.append(pm.mesh(7)))
    first.start()
    wait_until(lambda: Gated.calls == 1, "the first fetch", timeout=60)
    pending, waiting = pm._fetching[7], []
    real_wait = pending.wait
    pending.wait = lambda timeout=None: (waiting.append(1), real_wait(timeout))[1]
    others = [threading.Thread(target=lambda: got.append(pm.mesh(7))) for _ in range(7)]
    for t in others:
        t.start()
    wait_until(lambda: len(waiting) == 7, "seven threads waiting on the fetch", timeout=60)
    gate.set()
    for t in [first, *others]:
        t.join(timeout=60)
    assert Gated.calls == 1 and len(got) == 8 and all(g is got[0] for g in got)
