"""Drills: a third of the tiny demo world's EM (then segmentation) chunk files removed. No shipped row may have
a cardinal EM view with more than 2% of its pixels from absent chunks, and every bank row that did not ship is
in the failures ledger with its reason."""

from __future__ import annotations

import json
import shutil

import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import cli
from tests.pipeline.missing_drill import ChunkPresence, cardinal_missing_fractions, remove_every_third_chunk

MAX_FRACTION = 0.02


@pytest.fixture(scope="module", params=[("em", "em_chunks_missing"), ("segmentation", "seg_chunks_missing")])
def drill(request, tmp_path_factory, tiny_world, tiny_configs):
    layer, reason = request.param
    root = tmp_path_factory.mktemp(f"drill-{layer}")
    world = root / "work" / "demo" / "world"
    shutil.copytree(tiny_world, world)
    removed = remove_every_third_chunk(world / layer)
    out = root / "out"
    cli("build", "--work", str(root / "work"), "--out", str(out), "--no-progress", config_dir=tiny_configs)
    return layer, reason, removed, root / "work", out


def _released(out):
    rows = []
    for sidecar in sorted((out / "metadata").glob("*.parquet")):
        rows += pq.read_table(sidecar, columns=["combined_sample_hash", "metadata"]).to_pylist()
    return rows


def test_no_shipped_view_is_painted_from_absent_chunks(drill, tiny_configs):
    layer, _reason, removed, work, out = drill
    assert removed
    window = yaml.safe_load((tiny_configs / "demo.yaml").read_text())["em_window_nm"]
    presence = ChunkPresence(work / "demo" / "world" / layer)
    rows = _released(out)
    assert rows, "the drill must still ship rows, or it checks nothing"
    for r in rows:
        meta = json.loads(r["metadata"])
        fractions = cardinal_missing_fractions(meta, presence, window)
        assert max(fractions.values()) <= MAX_FRACTION, (r["combined_sample_hash"], fractions)
        assert meta["em_missing_fraction"] <= MAX_FRACTION and meta["seg_missing_fraction"] <= MAX_FRACTION


def test_every_dropped_row_is_in_the_ledger_with_its_reason(drill):
    _layer, reason, _removed, work, out = drill
    bank = set(pq.read_table(work / "demo" / "bank.parquet", columns=["combined_sample_hash"]).column(0).to_pylist())
    shipped = {r["combined_sample_hash"] for r in _released(out)}
    ledger = pq.read_table(work / "demo" / "failures.parquet").to_pylist()
    failed = {f["sample_id"]: f["reason"] for f in ledger if f["stage"] != "bank"}
    assert bank == shipped | set(failed) and not shipped & set(failed)
    dropped_for_layer = [h for h, why in failed.items() if why == reason]
    assert dropped_for_layer, f"removing a third of the {reason[:3]} chunks must drop rows as {reason}"
    assert all(f["exception"] for f in ledger if f["reason"] == reason)  # the message says how much was absent
