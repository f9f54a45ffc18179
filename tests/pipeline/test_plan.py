"""`python -m pipeline plan`: counts and estimates before anything is fetched or rendered."""

from __future__ import annotations

import re

import pytest

from tests.conftest import cli, seed_work


def _selected(stdout: str) -> dict[str, int]:
    return {m[1]: int(m[3].replace(",", "")) for m in re.finditer(r"^\s+(\w+)\s+([\d,]+) candidates ->\s+([\d,]+)",
                                                                   stdout, re.M)}  # fmt: skip


def test_plan_estimates_before_the_bank_and_counts_after_it(tmp_path, tiny_world, tiny_configs):
    work, out = seed_work(tmp_path / "work", tiny_world), tmp_path / "out"
    before = cli("plan", "--work", str(work), "--out", str(out), "--sample-roots", "6", config_dir=tiny_configs)
    assert "ESTIMATED from 6 of" in before.stdout and "(estimated)" in before.stdout
    assert not (work / "demo" / "fetch").exists() and not (work / "demo" / "render").exists()  # nothing fetched
    cli("stage", "bank", "--work", str(work), "--out", str(out), "--no-progress", config_dir=tiny_configs)
    after = cli("plan", "--work", str(work), "--out", str(out), config_dir=tiny_configs)
    assert "measured (the bank is built)" in after.stdout
    estimated, measured = _selected(before.stdout), _selected(after.stdout)
    assert set(estimated) == set(measured) and sum(measured.values()) == 40  # the tiny budgets: 8 per type
    assert all(n > 0 for n in estimated.values())
    assert "ESTIMATES (per-sample costs measured through the twin" in after.stdout


@pytest.mark.slow  # a subprocess
def test_plan_for_a_real_species_without_network_fails_in_one_line(tmp_path, tiny_configs):
    from config.schema import CONFIG_DIR

    proc = cli("plan", "--species", "fly", "--work", str(tmp_path), config_dir=CONFIG_DIR, check=False, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    # the proofread roots are the first unit of work: the runner names its species and stage before the reason
    assert len(lines) == 1 and lines[0].startswith("error: species fly, stage roots: could not reach")
    assert "config/fly.yaml" in lines[0]


def test_the_whole_build_is_estimated_with_the_disk_both_ways():
    """estimate_build: every stage's hours (the shard stage is one process: the same for any number of workers), and
    the disk of the release and of the work dir keeping the fetched files or dropping them once rendered (then only
    the partitions in flight hold fetched files)."""
    from pipeline.plan import DISK_COSTS, SHARD_COSTS, STAGE_START_S, TWIN_COSTS, WORKER_MS, estimate_build, project

    voxels = TWIN_COSTS["cutout_voxels"]
    a = estimate_build(100_000, voxels, workers=2, fetch_threads=8, partition_rows=64, roots=5_000)
    b = estimate_build(100_000, voxels, workers=4, fetch_threads=8, partition_rows=64, roots=5_000)  # under one_host
    start_h = STAGE_START_S / 3600
    assert a.hours["fetch_render"] - start_h == pytest.approx(2 * (b.hours["fetch_render"] - start_h))
    per_sample_ms = WORKER_MS["fetch_per_sample"] + WORKER_MS["render_per_sample"]
    assert a.hours["fetch_render"] == pytest.approx((STAGE_START_S + 100_000 * per_sample_ms / 1000 / 2) / 3600)
    assert a.hours["bank"] - start_h == pytest.approx(2 * (b.hours["bank"] - start_h)) and a.hours["bank"] > start_h
    shard_s = SHARD_COSTS["start_s"] + 100_000 / SHARD_COSTS["rows_per_s"]
    assert a.hours["shard"] == b.hours["shard"] == pytest.approx(shard_s / 3600)
    assert a.hours["total"] == pytest.approx(a.hours["bank"] + a.hours["fetch_render"] + a.hours["shard"])
    d = a.disk_gb
    assert d["release"] == pytest.approx(100_000 * DISK_COSTS["release_kb_per_row"] / 1e6)
    assert d["fetched"] == pytest.approx(100_000 * DISK_COSTS["fetched_kb_per_sample"] / 1e6)
    assert d["work_keep"] == pytest.approx(d["fetched"] + d["render"] + d["bank"])
    assert d["in_flight"] == pytest.approx(2 * 64 * DISK_COSTS["fetched_kb_per_sample"] / 1e6)
    assert d["work_drop"] == pytest.approx(d["render"] + d["bank"] + d["in_flight"]) and d["work_drop"] < d["work_keep"]
    twice = estimate_build(100_000, 2 * voxels, 2, 8, 64)
    assert twice.disk_gb["fetched"] == pytest.approx(2 * d["fetched"])  # the cutout's voxels: EM and labels
    assert twice.disk_gb["render"] == d["render"] and twice.disk_gb["release"] == d["release"]
    text = project(716_485, 128)
    assert "716,485 rows with 128 workers" in text and "bank not included" in text
    assert "keep_fetched: true (default)" in text and "keep_fetched: false" in text


def test_the_request_budget_bounds_the_hours_whatever_the_workers():
    """Every request goes through one budget per host: past the workers that fill it, more workers make the build
    no shorter (fetch+render never under `one_host`, the hours were every request to one host)."""
    from pipeline.plan import TWIN_COSTS, estimate_build

    few = estimate_build(100_000, TWIN_COSTS["cutout_voxels"], 4, 8, 64)
    many = estimate_build(100_000, TWIN_COSTS["cutout_voxels"], 4096, 8, 64)
    assert few.hours["fetch_render"] > few.hours["one_host"]  # 4 workers: their time, not the budget, bounds it
    assert many.hours["fetch_render"] >= many.hours["one_host"] > 0
    assert many.hours["one_host"] == few.hours["one_host"]
    narrow = estimate_build(100_000, TWIN_COSTS["cutout_voxels"], 4096, 8, 64, in_flight_per_host=4)
    assert narrow.hours["fetch_render"] > many.hours["fetch_render"]  # a narrower budget: longer


def test_the_banks_hours_are_the_built_banks_own_once_it_is_built(tmp_path, tiny_world, tiny_configs):
    """The bank's cost per root follows the dataset (its edits and synapses per root): before the bank is built
    `plan` takes the cost per root measured at scale (WORKER_MS), after it the built bank's own seconds; `--json`
    gives the figures."""
    import json

    from pipeline.plan import bank_hours

    assert bank_hours(1000, 2, 0.5) == pytest.approx(bank_hours(1000, 1, 0.25))
    assert bank_hours(2000, 2, 0.5) > bank_hours(1000, 2, 0.5)
    work, out = seed_work(tmp_path / "work", tiny_world), tmp_path / "out"
    args = ("plan", "--work", str(work), "--out", str(out), "--workers", "2", "--json")
    before = json.loads(cli(*args, "--sample-roots", "6", config_dir=tiny_configs).stdout)
    assert "ms per root and worker, the demo world's" in before["build"]["bank_basis"]
    assert before["hours"]["bank"] == before["build"]["hours"]["bank"] == pytest.approx(bank_hours(before["roots"], 2))
    cli("stage", "bank", "--work", str(work), "--out", str(out), "--no-progress", config_dir=tiny_configs)
    after = json.loads(cli(*args, config_dir=tiny_configs).stdout)
    assert "the built bank's partitions took" in after["build"]["bank_basis"]
    assert after["candidates_measured"] and after["build"]["hours"]["bank"] > 0
    assert after["build"]["disk_gb"]["release"] > 0 and set(after["build"]["hours"]) >= {"bank", "shard", "total"}
