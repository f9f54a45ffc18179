"""Fault injection: transient errors are retried away; permanent ones end in the ledger and the card only."""

import hashlib

import pyarrow.parquet as pq

from tests.conftest import cli, seed_work, write_tiny_configs


def _rows(out):
    """combined_sample_hash -> digest of every column but split bookkeeping, over all shards."""
    rows = {}
    for path in sorted(out.glob("*/*-*.parquet")):
        for row in pq.read_table(path).to_pylist():
            rows[row["combined_sample_hash"]] = hashlib.sha256(repr(sorted(row.items())).encode()).hexdigest()
    return rows


def test_transient_faults_change_nothing_permanent_ones_only_their_sample(tmp_path, tiny_world, tiny_configs):
    clean_work, clean_out = seed_work(tmp_path / "cw", tiny_world), tmp_path / "co"
    cli("build", "--work", str(clean_work), "--out", str(clean_out), "--no-progress", config_dir=tiny_configs)
    clean = _rows(clean_out)
    bank = pq.read_table(clean_work / "demo" / "bank.parquet").to_pylist()
    victim = next(r["combined_sample_hash"] for r in bank if r["sample_type"] == "merge_edit")
    assert victim in clean

    faulty = write_tiny_configs(tmp_path / "cfg", faults={"transient_rate": 0.2, "permanent_samples": [victim]})
    work, out = seed_work(tmp_path / "fw", tiny_world), tmp_path / "fo"
    cli("build", "--work", str(work), "--out", str(out), "--no-progress", config_dir=faulty)
    rows = _rows(out)
    assert set(rows) == set(clean) - {victim}
    assert all(rows[h] == clean[h] for h in rows)  # every other row is byte for byte the same
    ledger = pq.read_table(work / "demo" / "failures.parquet").to_pylist()
    injected = [f for f in ledger if f["reason"] == "injected_permanent_fault"]
    assert [(f["sample_id"], f["stage"]) for f in injected] == [(victim, "fetch")]
    assert "injected_permanent_fault" in (out / "README.md").read_text()
    # transient faults were injected and retried: none reached the ledger
    assert not [f for f in ledger if "Transient" in f["exception"]]
