"""`python -m pipeline twin`: serves until SIGTERM, prints where and how to reach it, logs to JSONL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import requests

from tests.conftest import REPO, seed_work


def test_twin_command_serves_and_stops_cleanly(tiny_configs, tiny_world, tmp_path):
    work = seed_work(tmp_path / "work", tiny_world)
    env = {**os.environ, "CB2_CONFIG_DIR": str(tiny_configs)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "twin", "--work", str(work), "--port", "0", "--flavor", "v1",
         "--row-cap", "7"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = proc.stdout.readline()
        assert first.startswith("twin (v1) of "), first + proc.stderr.read()
        url = first.split(" at ")[-1].strip()
        lines = [proc.stdout.readline() for _ in range(4)]
        assert any("row cap 7 rows" in line for line in lines)
        assert requests.get(f"{url}/em/info", timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "twin stopped after 1 requests" in out
    log = work / "demo" / "twin-requests.jsonl"
    assert [json.loads(line)["path"] for line in log.read_text().splitlines()] == ["/em/info"]


def test_twin_command_port_in_use_is_one_line(tiny_configs, tiny_world, tmp_path):
    import socket

    work = seed_work(tmp_path / "work", tiny_world)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", "twin", "--work", str(work), "--port", str(port)],
            cwd=REPO, env={**os.environ, "CB2_CONFIG_DIR": str(tiny_configs)}, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot serve the twin on 127.0.0.1:") and "Traceback" not in proc.stderr
