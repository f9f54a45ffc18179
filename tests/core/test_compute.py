"""Where tasks run: a dask.distributed cluster's workers run without their sampling profiler (core/compute.py)."""

from __future__ import annotations

import pytest

from core.compute import PROFILER_OFF, session
from tests.conftest import wait_until


def test_a_cluster_session_stops_every_workers_sampling_profiler_and_each_joining_later():
    """The profiler's `sys._current_frames()` can deadlock a CPython 3.11 worker whose tasks start and end threads
    (python/cpython#106883): a fetch on a cluster froze so. Connecting stops it on every worker, present or later."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        worker = next(iter(cluster.workers.values()))
        profiler = worker.periodic_callbacks["profile"]
        assert profiler.is_running()
        with session(cluster.scheduler_address) as client:
            assert not profiler.is_running() and "profile" not in worker.periodic_callbacks
            cluster.scale(2)
            client.wait_for_workers(2, timeout=60)

            def profiling() -> list:
                return [w.name for w in cluster.workers.values() if "profile" in w.periodic_callbacks]

            # the joining worker runs the cluster's plugins once registered: wait for that, not for a time
            wait_until(lambda: PROFILER_OFF in cluster.workers[1].plugins, "the joining worker's plugin", timeout=60)
            assert profiling() == []
