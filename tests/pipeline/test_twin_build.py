"""`make build SOURCE=twin`: the demo species through CaveSource against the twin, in both flavours, gives the
demo build's rows (same hashes, labels, splits, metadata and EM views; geometry within Draco quantization)."""

from __future__ import annotations

import re

import pytest

from pipeline.runner import parse_summaries
from tests.conftest import cli, free_port, seed_work


@pytest.fixture(scope="module")
def demo_release(tmp_path_factory, tiny_world, tiny_configs):
    root = tmp_path_factory.mktemp("twin-build")
    work, out = seed_work(root / "work", tiny_world), root / "out"
    cli("build", "--work", str(work), "--out", str(out), "--no-progress", config_dir=tiny_configs)
    return root, work, out


@pytest.mark.parametrize("flavor", ["v1", "v2"])
def test_a_build_through_the_twin_gives_the_demo_release(demo_release, tiny_configs, flavor):
    root, work, out = demo_release
    twin_work, twin_out = root / f"work-{flavor}", root / f"out-{flavor}"
    # a free port, not the flavour's fixed one, which another build on this machine may hold (a twin's port is in
    # the config the stages fingerprint, so both runs below use this one)
    args = ["build", "--work", str(twin_work), "--out", str(twin_out), "--no-progress", "--source", "twin",
            "--twin-flavor", flavor, "--twin-world", str(work / "demo" / "world"),
            "--twin-port", str(free_port())]  # fmt: skip
    first = cli(*args, config_dir=tiny_configs)
    asked = re.search(r"twin \(\w+\): (\d+) requests, .* longest URL (\d+) bytes, (\d+) refused by a limit, "
                      r"(\d+) other errors", first.stdout)  # fmt: skip
    requests, longest, refused, errors = (int(g) for g in asked.groups())
    assert requests > 100 and longest < 8192 and refused == 0 and errors == 0
    assert (twin_work / ".twin" / "config" / "demo.yaml").read_text().count("source: cave") == 1
    compared = cli("compare", str(out), str(twin_out), "--iou", "0.98", config_dir=tiny_configs)
    assert "0 only in A, 0 only in B" in compared.stdout and "non-image columns: identical" in compared.stdout
    assert "EM views: 0 rows differ" in compared.stdout and " 0 below 0.98" in compared.stdout
    # the same port, the same endpoints: a second run resumes and does nothing
    again = parse_summaries(cli(*args, config_dir=tiny_configs).stdout)
    assert all(s["ran"] == 0 for s in again.values()), again


def test_a_build_through_the_hostile_twin_learns_its_hidden_limits(demo_release, tiny_configs):
    """Limits drawn from a seed, 502s, resets, 429s, slow answers: the same release, and the closing lines show
    what the worker processes met and learned, then the hidden limits."""
    root, work, out = demo_release
    twin_work, twin_out = root / "work-hostile", root / "out-hostile"
    args = ["build", "--work", str(twin_work), "--out", str(twin_out), "--no-progress", "--source", "twin",
            "--twin-flavor", "v1", "--twin-world", str(work / "demo" / "world"), "--twin-hostile", "7",
            "--twin-port", "0"]  # fmt: skip
    built = cli(*args, config_dir=tiny_configs).stdout
    met = re.search(r"requests met: (\d+) refused, (\d+) 429s honoured, (\d+) resets, (\d+) timeouts, (\d+) bisections",
                    built)  # fmt: skip
    assert met is not None, built
    refused, _, _, _, bisections = (int(g) for g in met.groups())
    assert refused > 0 and bisections > 0
    assert re.search(r"final batch size per endpoint .*change_log \d+", built)
    hidden = re.search(r"hidden limits: change_log (\d+) \(learned (\d+)(?:-(\d+))?\)", built)
    assert hidden is not None and int(hidden.group(3) or hidden.group(2)) <= int(hidden.group(1))
    compared = cli("compare", str(out), str(twin_out), "--iou", "0.98", config_dir=tiny_configs)
    assert "0 only in A, 0 only in B" in compared.stdout and "non-image columns: identical" in compared.stdout
    assert "EM views: 0 rows differ" in compared.stdout and " 0 below 0.98" in compared.stdout
