import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from pipeline.cli import cli

COMMANDS = ["build", "stage", "split", "verify", "status", "demo-world", "preview"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_on_every_command(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_verify_without_release_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["verify", "--out", str(tmp_path / "nothing")])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: no release at")
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unknown_species_is_rejected_by_click():
    result = CliRunner().invoke(cli, ["build", "--species", "cat"])
    assert result.exit_code == 2 and "'cat' is not one of" in result.output


def test_stage_without_bank_names_the_species_and_fix(tmp_path):
    result = CliRunner().invoke(cli, ["stage", "render", "--species", "fly", "--work", str(tmp_path), "--no-progress"])
    assert result.exit_code == 1
    assert "species fly, stage render: the bank has not run" in result.output and "STAGE=bank" in result.output


def test_status_of_empty_work_dir(tmp_path):
    result = CliRunner().invoke(cli, ["status", "--work", str(tmp_path)])
    assert result.exit_code == 0 and "nothing built" in result.output


@pytest.mark.slow  # a subprocess
def test_real_species_without_network_fails_fast_naming_the_endpoint(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "CAVE_TOKEN": "not-a-real-token"}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "build", "--species", "fly", "--work", str(tmp_path / "w"),
         "--out", str(tmp_path / "o"), "--scheduler", "sync", "--no-progress"],
        capture_output=True, text=True, timeout=300, env=env, cwd=os.getcwd(),
    )  # fmt: skip  (the timeout only fails a hung run: the fast failure is pinned by test_cave's `waits`)
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error:") and "Traceback" not in proc.stderr
    assert "http" in line  # names the endpoint it could not reach
    assert "not-a-real-token" not in proc.stderr + proc.stdout


def test_verify_of_an_altered_release_exits_non_zero_naming_the_shard(tmp_path):
    from shard.release import write_release
    from tests.shard import fakes

    out = tmp_path / "out"
    write_release(out_dir=out, shard_bytes=30_000, **fakes.build_inputs(tmp_path / "work", 5, species=("fly",)))
    ok = CliRunner().invoke(cli, ["verify", "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    shard = sorted((out / "train").glob("*.parquet"))[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    bad = CliRunner().invoke(cli, ["verify", "--out", str(out)])
    assert bad.exit_code == 1
    assert f"error: verify failed for {out}: train/{shard.name}" in bad.output and "altered" in bad.output


@pytest.mark.parametrize("command", ["stage", "build"])
def test_the_shells_cave_token_travels_with_the_context(command, tmp_path, monkeypatch):
    """A cluster's workers do not share the shell's environment: CAVE_TOKEN goes to them in the context."""
    import pipeline.build

    seen = []

    def run_species(graph, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 - stands in for the run
        seen.append(graph.ctx.cave_token)
        raise SystemExit(0)

    monkeypatch.setattr(pipeline.build, "run_species", run_species)
    monkeypatch.setattr("pipeline.cli._ensure_world", lambda ctx: None)
    args = ["render"] if command == "stage" else []
    for token in ("t0k3n", None):
        env = {"CAVE_TOKEN": token} if token else {"CAVE_TOKEN": ""}
        argv = [command, *args, "--species", "fly", "--work", str(tmp_path), "--no-progress"]
        CliRunner().invoke(cli, argv, env=env)
        assert seen.pop() == token
