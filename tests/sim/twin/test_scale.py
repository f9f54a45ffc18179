"""The scale world (sim/twin/scale.py): its history rules, its lazily built answers, and the bank through it
behind the hostile twin, killed -9 and resumed."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from core.layout import MARKER
from pipeline.twin_build import scale_twin
from sim.twin.model import to_ms
from sim.twin.scale import WS_CHUNK, ScaleParams, ScaleWorld
from tests.conftest import checkpoint_env

SMALL = ScaleParams(neurons=300, synapses=20_000, other_roots=900, seed=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> ScaleWorld:
    return ScaleWorld(tmp_path_factory.mktemp("scale"), SMALL)


def test_the_same_parameters_give_the_same_world(world, tmp_path):
    again = ScaleWorld(tmp_path, SMALL)
    assert again.summary == world.summary
    assert again.table("synapses", 3).equals(world.table("synapses", 3))
    other = ScaleWorld(tmp_path / "other", ScaleParams(neurons=300, synapses=20_000, other_roots=900, seed=4))
    assert not other.table("synapses", 3).equals(world.table("synapses", 3))


def test_edit_histories_are_heavy_tailed(tmp_path):
    w = ScaleWorld(tmp_path, ScaleParams(neurons=20_000, synapses=10))  # the draws are cheap: 20,000 neurons
    counts = w.summary["counts"]["ops_per_neuron"]
    assert counts["median"] <= 4 and counts["max"] >= 200  # most neurons need few edits, some hundreds
    assert 0.6 < w.summary["counts"]["merges"] / w.summary["counts"]["operations"] < 0.8


def test_every_edit_changes_the_roots_of_its_supervoxels_at_its_time(world):
    for g in range(0, len(world.op_ms), 37):
        op = world.operation(g)
        a, b, n = world.edit_supervoxels(g)
        t = to_ms(op.timestamp)
        before, after = world.roots_at(np.array([a, b, n]), t - 1), world.roots_at(np.array([a, b, n]), t)
        if op.is_merge:
            assert tuple(int(x) for x in before[:2]) == op.before and set(before[:2].tolist()) == set(op.before)
            assert int(after[0]) == int(after[1]) == op.after[0]
        else:
            assert int(before[0]) == int(before[1]) == op.before[0]
            assert tuple(int(x) for x in after[:2]) == op.after
        assert int(before[2]) == int(after[2]) and int(before[2]) not in op.before + op.after  # the neighbour
        assert world.ops.get(op.operation_id) == op


def test_a_proofread_roots_change_log_is_its_chains_edits_and_its_lifetime_follows(world):
    table = world.table("proofread_neurons", 3)
    roots = table["pt_root_id"].to_numpy().astype(np.uint64)
    i = int(np.argmax(world.k))
    root = int(roots[i])
    log = world.change_log(root)
    assert len(log) == world.k[i] and [r["timestamp"] for r in log] == sorted(r["timestamp"] for r in log)
    assert log[-1]["after_root_ids"] == [root]
    assert world.is_latest([root], to_ms(world.versions[-1].timestamp)) == [True]
    created = world.lifetime_ms(root)[0]
    assert created == log[-1]["timestamp"]
    first = log[0]["before_root_ids"][0]
    assert world.is_latest([first], created) == [False] and world.change_log(first) == []
    assert world.lifetime_ms(12345) is None and world.created_s([12345]) == [0.0]


def test_a_merges_segmentation_chunk_shows_both_sides_and_a_neighbour_touching(world):
    g = int(np.flatnonzero(world.op_merge)[0])
    lo = world.op_vx[g] - WS_CHUNK // 2
    hi = lo + WS_CHUNK
    rel = f"32_32_45/{lo[0]}-{hi[0]}_{lo[1]}-{hi[1]}_{lo[2]}-{hi[2]}"
    data = np.frombuffer(gzip.decompress(world.ws_chunk(rel)), np.uint64).reshape(tuple(WS_CHUNK), order="F")
    a, b, n = (int(x) for x in world.edit_supervoxels(g))
    assert set(np.unique(data).tolist()) == {0, a, b, n}
    p = WS_CHUNK // 2
    assert data[p[0] - 1, p[1], p[2]] == a and data[p[0], p[1], p[2]] == b  # the two sides meet at the point
    assert world.ws_chunk("32_32_45/0-32_0-32_0-20") is None  # outside the volume's chunk grid


def test_level2_graphs_branch_and_have_cycles(world):
    edges = np.asarray(world.l2_edges.get(int(world.table("proofread_neurons", 3)["pt_root_id"][0].as_py())))
    nodes, degree = np.unique(edges, return_counts=True)
    assert (degree >= 3).any() and len(edges) >= len(nodes)  # a tree would have nodes - 1 edges
    assert all(world.rep_coord.get(int(v)) is not None for v in nodes[:20])


@pytest.mark.slow
def test_the_bank_runs_through_the_hostile_twin_and_resumes_after_kill_9(tmp_path):
    """Killed at its first sealed partition (SIGKILL of the whole process group), the bank reruns only the others
    and selects the same bank as a run that was never killed."""

    def bank(work, env, extra=None):  # noqa: ANN001, ANN202
        cmd = [sys.executable, "-m", "pipeline", "stage", "bank", "--species", "demo", "--work", str(work / "w"),
               "--out", str(work / "out"), "--workers", "2", "--no-progress"]  # fmt: skip
        return subprocess.run(cmd, env={**os.environ, **env, **(extra or {})}, capture_output=True, text=True,
                              start_new_session=True, timeout=600)  # fmt: skip

    params = ScaleParams(neurons=150, synapses=5_000, other_roots=450, seed=5)
    banks = []
    for name, kill in (("killed", True), ("whole", False)):
        work = tmp_path / name
        # items that fail every time and rate limits are shapes the client learns elsewhere (test_fault_shapes.py);
        # here they would fail partitions the kill must not be confused with
        with scale_twin(work, params, 0.0, 7, hostile_off=("item_faults", "rate_limit"), bank_threads=4,
                        bank_roots_per_partition=16) as (_server, env):  # fmt: skip
            if kill:
                killed = bank(work, env, checkpoint_env(bank_sealed="kill"))
                assert killed.returncode == -9, killed.stderr[-2000:]
                sealed = len(list((work / "w" / "demo" / "bank").glob(f"part-*{MARKER}")))
                assert sealed >= 1
            done = bank(work, env)
            assert done.returncode == 0, done.stderr[-2000:]
            line = next(x for x in done.stdout.splitlines() if x.startswith("bank:"))
            if kill:
                assert f"{sealed} already done" in line, line
        banks.append(pq.read_table(work / "w" / "demo" / "bank.parquet"))
    assert banks[0].num_rows > 0 and banks[0].equals(banks[1])
