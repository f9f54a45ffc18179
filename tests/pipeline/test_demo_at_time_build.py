"""A demo build pinned to an earlier time renders every sample it banks but the world's designed defects, and its
release is the twin's at that time (issue 26 item 6): version 2's time (the twin pinned to version 2) and 2026-01-01
(no version then: the twin answers live queries). Both builds read the demo config of one config dir (CB2_CONFIG_DIR,
issue 26 item 7). Slow: four tiny builds and two twins."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import yaml

from sim.twin.model import default_versions
from tests.conftest import cli, free_port, seed_work, write_tiny_configs

pytestmark = pytest.mark.slow

V2_TIME = next(v.timestamp for v in default_versions() if v.version == 2)
# the world's designed defects (sim/demo_world/defects.py): an operation without points, a root without a mesh
DESIGNED = {"no_edit_point", "missing_mesh"}


def _ledger(work) -> set[tuple[str, str, str]]:  # noqa: ANN001 - a Path
    path = work / "demo" / "failures.parquet"
    rows = pq.read_table(path).to_pylist() if path.exists() else []
    return {(r["stage"], r["sample_id"], r["reason"]) for r in rows}


@pytest.mark.parametrize("as_of", [V2_TIME, 1767225600.0], ids=["version-2", "2026-01-01"])
def test_a_demo_build_at_an_earlier_time_is_the_twins_build_then(tmp_path, tiny_world, as_of):
    configs = write_tiny_configs(tmp_path / "configs", as_of=as_of)
    work, out = seed_work(tmp_path / "work", tiny_world), tmp_path / "out"
    cli("build", "--work", str(work), "--out", str(out), "--no-progress", config_dir=configs)
    twin_work, twin_out = tmp_path / "work-twin", tmp_path / "out-twin"
    cli("build", "--work", str(twin_work), "--out", str(twin_out), "--no-progress", "--source", "twin",
        "--twin-world", str(work / "demo" / "world"), "--twin-port", str(free_port()), config_dir=configs)  # fmt: skip
    pinned = yaml.safe_load((twin_work / ".twin" / "config" / "demo.yaml").read_text())
    assert (pinned["materialization_version"], pinned["as_of"]) == ((2, None) if as_of == V2_TIME else (None, as_of))
    ledger = _ledger(work)
    assert {reason for _, _, reason in ledger} <= DESIGNED, ledger  # no segment_not_in_cutout
    assert ledger == _ledger(twin_work)
    compared = cli("compare", str(out), str(twin_out), "--iou", "0.98", config_dir=configs).stdout
    assert "0 only in A, 0 only in B" in compared and "non-image columns: identical" in compared, compared
    assert "EM views: 0 rows differ" in compared and " 0 below 0.98" in compared, compared
