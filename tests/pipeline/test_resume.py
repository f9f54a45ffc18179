"""Kill the build (SIGKILL to its process group) mid-render and mid-shard; the rerun's release is identical."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, cli, seed_work


def _start(args, config_dir):
    env = {**os.environ, "CB2_CONFIG_DIR": str(config_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", *args], cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _kill_when(proc, condition, timeout=300):
    """SIGKILL the process group once condition() holds; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.005)
    raise AssertionError("condition never held")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_world, tiny_configs):
    root = tmp_path_factory.mktemp("reference")
    work, out = seed_work(root / "work", tiny_world), root / "out"
    cli("build", "--work", str(work), "--out", str(out), "--no-progress", config_dir=tiny_configs)
    return (out / "shards.csv").read_bytes()


def test_kill_mid_render_then_resume(tmp_path, tiny_world, tiny_configs, reference):
    work, out = seed_work(tmp_path / "work", tiny_world), tmp_path / "out"
    args = ["build", "--work", str(work), "--out", str(out), "--no-progress", "--workers", "2"]
    render = work / "demo" / "render"
    proc = _start(args, tiny_configs)
    killed = _kill_when(proc, lambda: render.exists() and len(list(render.glob("*.done"))) >= 1)
    assert killed, "the build finished before it could be killed"
    done_before = len(list(render.glob("*.done")))
    assert not (out / "shards.csv").exists()
    status = cli("status", "--work", str(work), "--out", str(out), config_dir=tiny_configs).stdout
    render_line = next(line.split() for line in status.splitlines() if line.split()[1:2] == ["render"])
    assert int(render_line[2]) == done_before and int(render_line[3]) > 0  # done / pending mid-build
    resumed = cli(*args, config_dir=tiny_configs)
    line = resumed.stdout.split("render: ")[1].split("\n")[0]
    assert f"{done_before} already done" in line  # finished partitions were kept, not redone
    assert (out / "shards.csv").read_bytes() == reference
    assert not list(work.rglob("*.tmp"))  # no temp file is left behind or taken for a result


def test_kill_mid_shard_then_resume(tmp_path, tiny_world, tiny_configs, reference):
    work, out = seed_work(tmp_path / "work", tiny_world), tmp_path / "out"
    cli("build", "--work", str(work), "--out", str(out), "--no-progress", config_dir=tiny_configs)
    building = tmp_path / ".out.building"
    shard_args = ["stage", "shard", "--work", str(work), "--out", str(out), "--force"]
    killed = False
    for _ in range(20):  # the tiny shard stage is quick: try until a kill lands inside it
        proc = _start(shard_args, tiny_configs)
        if _kill_when(proc, lambda: building.exists() and any(building.rglob("*.parquet"))):
            killed = True
            break
    assert killed, "no kill landed inside the shard stage"
    # the killed run never replaced the finished release with a partial one
    assert (out / "shards.csv").read_bytes() == reference
    cli("verify", "--out", str(out), config_dir=tiny_configs)
    cli(*shard_args, config_dir=tiny_configs)
    assert (out / "shards.csv").read_bytes() == reference
    assert not building.exists()
