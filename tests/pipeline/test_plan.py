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
