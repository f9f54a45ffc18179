"""Kill the build (SIGKILL to its process group) mid-render and mid-shard; the rerun's release is identical.

The kill is made by the build itself at a named point (core.checkpoints), not by a watcher that
races it: on a busy machine a watcher may look too late, after the build has finished the step.
"""

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, checkpoint_env, cli, seed_work


def _killed_at(point: str, args, config_dir) -> None:
    """Run `python -m pipeline *args` in a session of its own until it SIGKILLs its group at `point`."""
    env = {**os.environ, "CB2_CONFIG_DIR": str(config_dir), **checkpoint_env(**{point: "kill"})}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", *args], cwd=REPO, env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, f"the build was not killed at {point}: exit {proc.returncode}"


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
    _killed_at("render_sealed", [*args, "--scheduler", "processes"], tiny_configs)  # after a render marker
    done_before = len(list(render.glob("*.done")))
    assert done_before >= 1
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
    _killed_at("release_shard_closed", shard_args, tiny_configs)  # one shard of the new release written
    assert any(building.rglob("*.parquet"))
    # the killed run never replaced the finished release with a partial one
    assert (out / "shards.csv").read_bytes() == reference
    cli("verify", "--out", str(out), config_dir=tiny_configs)
    cli(*shard_args, config_dir=tiny_configs)
    assert (out / "shards.csv").read_bytes() == reference
    assert not building.exists()
