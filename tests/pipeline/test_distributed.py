"""The same build on a real dask.distributed cluster (scheduler + workers on loopback) is byte-identical."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import cli, free_port, seed_work, wait_until

DASK = Path(sys.executable).parent / "dask"


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture
def cluster(tmp_path):
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [
        subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path),
    ]  # fmt: skip
    wait_until(lambda: _accepts(port), "the dask scheduler to listen", proc=procs[0])
    procs.append(
        subprocess.Popen([str(DASK), "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard",
                          "--local-directory", str(tmp_path / "dask-worker")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    )  # fmt: skip
    from distributed import Client

    with Client(address, timeout="60s") as client:
        client.wait_for_workers(2, timeout=60)
    yield address
    for p in reversed(procs):
        p.terminate()
    for p in procs:
        p.wait(timeout=30)


def test_cluster_build_is_byte_identical_to_local(cluster, tmp_path, tiny_world, tiny_configs):
    local_work, local_out = seed_work(tmp_path / "lw", tiny_world), tmp_path / "lo"
    cli("build", "--work", str(local_work), "--out", str(local_out), "--no-progress", config_dir=tiny_configs)
    work, out = seed_work(tmp_path / "cw", tiny_world), tmp_path / "co"
    proc = cli("build", "--work", str(work), "--out", str(out), "--no-progress", "--scheduler", cluster,
               config_dir=tiny_configs)  # fmt: skip
    assert "render:" in proc.stdout
    assert (out / "shards.csv").read_bytes() == (local_out / "shards.csv").read_bytes()
    deep = cli("verify", "--out", str(out), "--deep", "--scheduler", cluster, "--no-progress", config_dir=tiny_configs)
    assert "OK" in deep.stdout and "rows decoded" in deep.stdout
