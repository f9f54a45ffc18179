"""Fixtures for the CAVE source tests: an isolated HOME, the twin (v2) with its faults cleared, configs for it."""

from __future__ import annotations

import pytest

from config.schema import SpeciesConfig, load_config
from sim.twin.species import twin_config


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """caveclient and cloud-volume read (and could write) ~/.cloudvolume: give every test an empty HOME."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CAVE_TOKEN", raising=False)
    return home


@pytest.fixture(scope="module")
def demo_cfg(tiny_configs) -> SpeciesConfig:
    return load_config("demo", tiny_configs)


@pytest.fixture()
def cave_twin(twins):
    """The session's v2 twin of the small world, as a test may leave it: no faults, its limits and l2cache back."""
    server = twins["v2"]
    limits, l2cache = server.limits, server.app.l2cache
    server.app.faults.clear()
    yield server
    server.app.faults.clear()
    server.limits = limits
    server.app.l2cache = l2cache


@pytest.fixture()
def make_cfg(cave_twin, demo_cfg):
    """A `source: cave` config of the demo species pointing at the twin; keyword overrides replace keys."""

    def make(**overrides) -> SpeciesConfig:
        return twin_config(demo_cfg, cave_twin.url, **overrides)

    return make


@pytest.fixture()
def reshaped(cave_twin, monkeypatch):
    """The twin's tables as another datastack has them: `reshaped["synapses"] = fn` serves fn(table) for the
    synapse table (columns dropped, renamed, added), on this test's requests only."""
    world = cave_twin.world
    original = world.table
    changes: dict = {}

    def table(name: str, version: int):  # noqa: ANN202 - TwinWorld.table's signature
        got = original(name, version)
        return changes[name](got) if got is not None and name in changes else got

    monkeypatch.setattr(world, "table", table)
    return changes


@pytest.fixture(autouse=True)
def fresh_adaptive(monkeypatch):
    """Each test starts with nothing learned (the adaptive layer's sizes and counters are per process). The backoff
    between resends is a twentieth of the product's: these tests pin how many sends and what follows, not how long
    (the product's waits are pinned with a fake sleep in test_adaptive.py)."""
    from pipeline.sources import adaptive

    layer = adaptive.Adaptive()
    monkeypatch.setattr(adaptive, "ADAPTIVE", layer)
    monkeypatch.setattr(adaptive, "BACKOFF_S", adaptive.BACKOFF_S / 20)
    return layer
