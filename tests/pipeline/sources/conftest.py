"""Fixtures for the CAVE source tests: the replay server, an isolated HOME, configs pointing at it."""

from __future__ import annotations

import pytest

from config.schema import SpeciesConfig
from tests.pipeline.sources.cave_server import DATASTACK, TABLE_ID, ReplayServer


@pytest.fixture(scope="module")
def cave_server():
    server = ReplayServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """caveclient and cloud-volume read (and could write) ~/.cloudvolume: give every test an empty HOME."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CAVE_TOKEN", raising=False)
    return home


@pytest.fixture()
def make_cfg(cave_server):
    """A SpeciesConfig for source: cave pointing at the replay server; keyword overrides replace keys."""

    def make(**overrides) -> SpeciesConfig:
        url = cave_server.url
        raw = {
            "species": "fly",
            "source": "cave",
            "datastack": DATASTACK,
            "server_address": url,
            "em_cloudpath": f"precomputed://{url}/em",
            "seg_cloudpath": f"graphene://{url}/segmentation/table/{TABLE_ID}",
            "em_mip": 0,
            "seg_mip": 0,
            "em_window_nm": 1500,
            "extent_nm": [2000, 4000],
            "materialization_version": 2,
            "proofread_table": "proofread_neurons",
            "synapse_table": "synapses_nt",
            "timeout_s": 5,
        }
        raw.update(overrides)
        return SpeciesConfig.model_validate(raw)

    return make


@pytest.fixture(autouse=True)
def fresh_adaptive(monkeypatch):
    """Each test starts with nothing learned (the adaptive layer's sizes and counters are per process)."""
    from pipeline.sources import adaptive

    layer = adaptive.Adaptive()
    monkeypatch.setattr(adaptive, "ADAPTIVE", layer)
    return layer
