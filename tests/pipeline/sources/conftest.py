"""Fixtures for the CAVE source tests: an isolated HOME, nothing learned by the adaptive layer (the server they
talk to is the twin: tests/conftest.py)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """caveclient and cloud-volume read (and could write) ~/.cloudvolume: give every test an empty HOME."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("CAVE_TOKEN", raising=False)
    return home


@pytest.fixture(autouse=True)
def fresh_adaptive(monkeypatch):
    """Each test starts with nothing learned (the adaptive layer's sizes and counters are per process)."""
    from pipeline.sources import adaptive

    layer = adaptive.Adaptive()
    monkeypatch.setattr(adaptive, "ADAPTIVE", layer)
    return layer
