"""Shared fixtures: a tiny demo species (and a second one) in their own config dir, and a CLI runner.

End-to-end tests run `python -m pipeline` in subprocesses, as a user would, with CB2_CONFIG_DIR
pointing at the tiny configs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from config.schema import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "demo_world": {"n_sites": 5, "neurons_per_site": 4, "seed": 20260601},
    "budgets": {t: 8 for t in ("merge_edit", "split_edit", "adjacent_control", "junction_control", "synapse_control")},
    "partition_rows": 6,
    "shard_bytes": 600_000,
    "split_salt": "tiny-0",  # a salt under which the tiny world's few cubes fall in all three splits
    # the hostile twin's item faults are 4 roots of the tiny world's 17: a hostile build of it ships without them
    "max_failed_fraction": 0.3,
}


# Fixtures whose tests are slow by nature: the generated tiny world (~20 s once) and what is built on it. The twin
# serves the small world (sim/small_world.py, written in a fraction of a second): its tests are fast.
SLOW_FIXTURES = {"tiny_world", "tiny_release"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """`slow` on every test that uses a slow fixture, directly or through another fixture (`make test-fast` runs
    the rest); tests that are slow otherwise (subprocess builds) carry the mark themselves."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def write_tiny_configs(folder: Path, **overrides: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((CONFIG_DIR / "demo.yaml").read_text())
    for species in ("demo", "demo_b"):
        cfg = {**base, **TINY, **overrides, "species": species}
        (folder / f"{species}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=True))
    return folder


@pytest.fixture(scope="session")
def tiny_configs(tmp_path_factory) -> Path:
    return write_tiny_configs(tmp_path_factory.mktemp("configs"))


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory) -> Path:
    """The tiny demo world, generated once per session; tests copy it into their work dir."""
    from sim.demo_world import generate_world

    world = tmp_path_factory.mktemp("world") / "world"
    d = TINY["demo_world"]
    generate_world(world, d["n_sites"], d["neurons_per_site"], d["seed"])
    return world


def wait_until(condition: Callable[[], object], what: str, timeout: float = 300.0, proc=None) -> None:  # noqa: ANN001
    """Wait for `condition()` to hold: never a fixed sleep. The timeout only fails a broken run; `proc`, a Popen
    that must still be running while we wait (a build that ended first fails at once, naming its exit code)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"waiting for {what}: the process ended first (exit {proc.returncode})")
        if time.monotonic() > deadline:
            raise AssertionError(f"waiting for {what}: not within {timeout:.0f} s")
        time.sleep(0.01)


def free_port() -> int:
    """A port no one listens on now (the OS's choice), for a server a test starts."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checkpoint_env(**points: str) -> dict[str, str]:
    """Environment making a build stop at named points (core.checkpoints): `name="kill"` or
    `name="hold:DIR"`; names use `_` for the module's `-` (render_sealed -> render-sealed)."""
    from core.checkpoints import ENV

    return {ENV: ",".join(f"{name.replace('_', '-')}:{action}" for name, action in points.items())}


def seed_work(work: Path, world: Path, species: str = "demo") -> Path:
    shutil.copytree(world, work / species / "world")
    return work


def cli(
    *args: str,
    config_dir: Path,
    check: bool = True,
    timeout: float = 600,
    scheduler: str = "threads",
    **popen: object,
) -> subprocess.CompletedProcess:
    """`python -m pipeline *args` as a user runs it. The local scheduler defaults to threads here (a tiny build
    takes half the time without worker processes to start); the builds that must cross processes say
    `scheduler="processes"` (test_build's reference build, the kill-and-resume tests) or pass `--scheduler`."""
    env = {**os.environ, "CB2_CONFIG_DIR": str(config_dir), "PYTHONHASHSEED": "random", "SCHEDULER": scheduler}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, **popen,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"pipeline {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def cli_in_process(*args: str, config_dir: Path) -> subprocess.CompletedProcess:
    """The same CLI called in this process (click's runner): for the calls that must refuse before any work,
    where a subprocess would spend its seconds importing. Exit code, stdout and stderr as `cli` gives them."""
    from click.testing import CliRunner

    from pipeline.cli import cli as pipeline_cli

    result = CliRunner().invoke(pipeline_cli, list(args), env={"CB2_CONFIG_DIR": str(config_dir)})
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(list(args), result.exit_code, result.stdout, result.stderr)


@pytest.fixture(scope="session")
def tiny_release(tmp_path_factory, tiny_world, tiny_configs) -> tuple[Path, Path]:
    """(work, out) of one tiny demo build, shared by the tests that only read a release (never change it)."""
    root = tmp_path_factory.mktemp("tiny-release")
    work, out = seed_work(root / "work", tiny_world), root / "out"
    cli("build", "--work", str(work), "--out", str(out), "--no-progress", config_dir=tiny_configs)
    return work, out


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """The small world (sim/small_world.py: a few neurons, six edits, nine synapses, in a fraction of a second): the
    demo world's layout, for the tests of the sources, the twin, fetch and render that need no whole build. Read
    only: a test that changes a world writes its own (`write_small_world`)."""
    from sim.small_world import write_small_world

    world = tmp_path_factory.mktemp("small") / "world"
    write_small_world(world)
    return world


@pytest.fixture(scope="session")
def twin_world(tmp_path_factory) -> Path:
    """The small world, written again for the twin (whose cache lands inside the world dir)."""
    from sim.small_world import write_small_world

    world = tmp_path_factory.mktemp("twin") / "world"
    write_small_world(world)
    return world


@pytest.fixture(scope="session")
def tiny_twin_world(tiny_world, tmp_path_factory) -> Path:
    """A copy of the generated tiny world for a twin (whose cache lands inside the world dir): for the few tests
    that need its scale (enough operations that a URL of all of them passes a server's limit)."""
    world = tmp_path_factory.mktemp("tiny-twin") / "world"
    shutil.copytree(tiny_world, world)
    return world


@pytest.fixture(scope="session")
def twins(twin_world):
    """One running twin per flavour over the small world, shared by the session: {"v1": TwinServer, "v2": ...}."""
    from sim.twin import TwinServer

    servers = {flavor: TwinServer(twin_world, flavor=flavor).start() for flavor in ("v1", "v2")}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(params=["v1", "v2"])
def twin(request, twins):
    """Each test using it runs against both flavours; limits are restored and faults cleared after the test."""
    server = twins[request.param]
    limits = server.limits
    yield server
    server.limits = limits
    server.app.faults.clear()
