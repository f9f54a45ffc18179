"""A build through the twin starts from the demo config of the config dir (CB2_CONFIG_DIR, or one handed to it) and is
pinned to that config's time as the demo source reads it (issue 26 items 6 and 7). Fast: no twin is started."""

from __future__ import annotations

from pathlib import Path

import yaml

from config.schema import CONFIG_DIR
from pipeline.twin_build import TwinOptions, demo_config
from sim.twin.model import default_versions
from sim.twin.species import LATEST_VERSION, pinned_time, twin_config

V2 = next(v for v in default_versions() if v.version == 2)


def _demo_yaml(folder: Path, **values: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    raw = {**yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text()), **values}
    (folder / "demo.yaml").write_text(yaml.safe_dump(raw, sort_keys=True))
    return folder


def test_a_twin_build_takes_the_demo_config_of_cb2_config_dir(tmp_path, monkeypatch):
    """CB2_CONFIG_DIR names a folder with another demo config: the twin build's config is made from it (its
    budgets, its time: version 2), as every other command reads it."""
    folder = _demo_yaml(tmp_path / "mine", as_of=V2.timestamp, budgets={"merge_edit": 5})
    monkeypatch.setenv("CB2_CONFIG_DIR", str(folder))
    demo = demo_config(TwinOptions())
    assert demo.as_of == V2.timestamp and demo.budgets.merge_edit == 5
    cfg = twin_config(demo, "http://127.0.0.1:1")
    assert cfg.source == "cave" and cfg.budgets.merge_edit == 5
    assert cfg.materialization_version == 2 and cfg.as_of is None


def test_a_config_dir_handed_to_the_twin_build_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CB2_CONFIG_DIR", str(_demo_yaml(tmp_path / "env", budgets={"merge_edit": 5})))
    given = _demo_yaml(tmp_path / "given", budgets={"merge_edit": 9})
    assert demo_config(TwinOptions(config_dir=given)).budgets.merge_edit == 9


def test_the_twin_is_pinned_to_the_demo_configs_time():
    """A version made at the config's as_of pins it (the shipped config: the latest, as before); another time is
    asked live at as_of; a config pinned to a version keeps it."""
    shipped = demo_config(TwinOptions(config_dir=CONFIG_DIR))
    assert pinned_time(shipped) == {"as_of": None, "materialization_version": LATEST_VERSION}
    later = shipped.model_copy(update={"as_of": 1767225600.0})  # 2026-01-01: between versions 2 and 3
    assert pinned_time(later) == {"as_of": 1767225600.0, "materialization_version": None}
    expired = next(v for v in default_versions() if v.expired)
    at_expired = shipped.model_copy(update={"as_of": expired.timestamp})  # an expired version is never pinned
    assert pinned_time(at_expired) == {"as_of": expired.timestamp, "materialization_version": None}
    by_version = shipped.model_copy(update={"as_of": None, "materialization_version": 2})
    assert pinned_time(by_version) == {"as_of": None, "materialization_version": 2}
