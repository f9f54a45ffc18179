"""Preflight's decisions on what the checks found (pipeline/preflight/checks.py), without a server: the findings are
set by hand and the one check run through the dispatcher that turns its verdict into a report line."""

from __future__ import annotations

import re

import numpy as np
import pytest

from config import load_config
from config.schema import CONFIG_DIR
from pipeline.preflight.checks import Preflight
from pipeline.preflight.report import FAIL, OK, WARN

NOW = 1_800_000_000.0
DAY = 86_400.0


def _expiry_check(expires: float | None, workers: int = 2):  # noqa: ANN202
    """The `version expiry` line of a fly preflight that found 20,000 proofread roots, three sampled ones with a
    merge and a split each, at FAFB's EM resolution, with the pinned version expiring at `expires`."""
    pf = Preflight(load_config("fly", CONFIG_DIR), None, NOW, workers, echo=lambda line: None)
    pf.found.roots = list(range(20_000))
    pf.found.chosen = [0, 1, 2]
    pf.found.ops = {i: (i % 3, NOW - 1e6, i % 2 == 0) for i in range(6)}
    pf.found.em_res = (16.0, 16.0, 40.0)
    pf.found.version_expires = expires
    pf._do("version expiry", pf.version_expiry, ())
    return pf.checks[-1]


def _estimated_end() -> float:
    """When the build would end, from the hours the check itself states (plan's estimate)."""
    line = _expiry_check(NOW + 10_000 * DAY)
    hours = float(re.search(r"([0-9.]+) h fetch\+render", line.found).group(1))
    assert hours > 1.0  # a build long enough that "during the build" is a real span
    return NOW + hours * 3600.0


def test_a_version_that_expires_during_the_estimated_build_fails():
    end = _estimated_end()
    during = _expiry_check(NOW + (end - NOW) / 2)
    assert during.status == FAIL and "expires before the build ends" in during.found
    assert "materialization_version" in during.action and "workers" in during.action


@pytest.mark.parametrize("offset_s", [-DAY, 0.0, 1.0])
def test_a_version_already_expired_or_expiring_at_the_start_fails(offset_s):
    assert _expiry_check(NOW + offset_s).status == FAIL


def test_a_version_expiring_within_a_week_after_the_build_warns_and_later_passes():
    end = _estimated_end()
    assert _expiry_check(end + DAY).status == WARN
    assert _expiry_check(end + 8 * DAY).status == OK


def test_more_workers_end_the_build_sooner_so_the_same_expiry_can_pass():
    end_2 = _estimated_end()
    expires = NOW + (end_2 - NOW) * 0.75
    assert _expiry_check(expires, workers=2).status == FAIL
    assert _expiry_check(expires, workers=64).status in (OK, WARN)


def test_live_queries_have_nothing_to_expire():
    assert _expiry_check(None).status == OK


def test_the_estimate_uses_every_sampled_root_scaled_to_all_roots():
    from pipeline.preflight.checks import estimated_rows

    cfg = load_config("fly", CONFIG_DIR)
    ops = {1: (0, 0.0, True), 2: (0, 0.0, False)}
    few, many = estimated_rows(cfg, 10, ops, 1), estimated_rows(cfg, 1_000, ops, 1)
    assert many > few > 0
    assert np.isclose(many - few, 990 * (2 + cfg.adjacent_per_op + cfg.junctions_per_neuron + 1))
