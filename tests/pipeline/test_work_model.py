"""The work model end to end on the tiny demo: cost follows change, stage order is safe, one lock per work dir.

Each config change is applied to one work dir in turn, and what every stage redid is read off its summary
line; at the end the release must equal a from-scratch build of the final config, byte for byte.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipeline.runner import parse_summaries
from tests.conftest import REPO, TINY, checkpoint_env, cli, cli_in_process, seed_work, wait_until, write_tiny_configs


def summary(stdout: str) -> dict[str, dict[str, int]]:
    return parse_summaries(stdout)


def build(work, out, cfg, *extra):
    return cli("build", "--work", str(work), "--out", str(out), "--no-progress", *extra, config_dir=cfg)


def _budgets(**more):
    return {**TINY["budgets"], **more}


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_world):
    """One work dir carried through a sequence of config changes; each step's summary by name."""
    root = tmp_path_factory.mktemp("chain")
    work, out = seed_work(root / "work", tiny_world), root / "out"
    steps = {}
    cfgs = {
        "first": {},
        "more_rows": {"budgets": _budgets(merge_edit=9, split_edit=9)},  # +2 rows, 5%
        "seed": {"budgets": _budgets(merge_edit=9, split_edit=9), "seed": 8},
        "salt": {"budgets": _budgets(merge_edit=9, split_edit=9), "seed": 8, "split_salt": "tiny-1"},
        "shard_bytes": {"budgets": _budgets(merge_edit=9, split_edit=9), "seed": 8, "split_salt": "tiny-1",
                        "shard_bytes": 400_000},
        "narrower": {"budgets": _budgets(merge_edit=9, split_edit=9), "seed": 8, "split_salt": "tiny-1",
                     "shard_bytes": 400_000, "extent_nm": [1000, 1500]},
        "relayout": {"budgets": _budgets(merge_edit=9, split_edit=9), "seed": 8, "split_salt": "tiny-1",
                     "shard_bytes": 400_000, "extent_nm": [1000, 1500], "partition_rows": 3},
        "missing_limit": {"budgets": _budgets(merge_edit=9, split_edit=9), "seed": 8, "split_salt": "tiny-1",
                          "shard_bytes": 400_000, "extent_nm": [1000, 1500], "partition_rows": 3,
                          "max_missing_fraction": 0.5},
    }  # fmt: skip
    for name, overrides in cfgs.items():
        cfg = write_tiny_configs(root / f"cfg-{name}", **overrides)
        proc = build(work, out, cfg)
        steps[name] = summary(proc.stdout)
        steps[name]["_stdout"] = proc.stdout
    bank = pq.read_table(work / "demo" / "bank.parquet")
    return {"work": work, "out": out, "steps": steps, "root": root, "final_cfg": cfg, "bank_rows": bank.num_rows}


def test_adding_five_percent_rows_refetches_and_rerenders_only_them(chain):
    first, more = chain["steps"]["first"], chain["steps"]["more_rows"]
    new_rows = 2
    assert "42 bank rows selected" in more["_stdout"]  # 40 + 2
    for stage in ("fetch", "render"):
        built = more[stage]["samples"] + more[stage]["failures"]
        assert 0 < built <= 1.2 * new_rows, (stage, more[stage])
        assert more[stage]["reused"] > 0 and more[stage]["ran"] < first[stage]["parts"]  # the rest is kept


def test_seed_refetches_nothing_and_rerenders_everything(chain):
    seed = chain["steps"]["seed"]
    assert (seed["bank"]["ran"], seed["fetch"]["ran"], seed["fetch"]["samples"]) == (0, 0, 0)
    assert seed["render"]["ran"] == seed["render"]["parts"] and seed["render"]["reused"] == 0
    assert seed["split"]["ran"] == 0


def test_split_keys_and_shard_bytes_never_rerender(chain):
    for step in ("salt", "shard_bytes"):
        s = chain["steps"][step]
        assert (s["bank"]["ran"], s["fetch"]["ran"], s["render"]["ran"]) == (0, 0, 0), step
    assert chain["steps"]["salt"]["split"]["ran"] == 1
    assert chain["steps"]["shard_bytes"]["split"]["ran"] == 0
    assert "wrote release" in chain["steps"]["shard_bytes"]["_stdout"]


def test_an_extent_range_inside_the_fetched_box_refetches_nothing(chain):
    s = chain["steps"]["narrower"]
    assert s["fetch"]["samples"] == 0 and s["fetch"]["reused"] > 0  # partitions ran, every sample kept
    assert s["render"]["ran"] == s["render"]["parts"] and s["render"]["reused"] == 0


def test_a_new_layout_reuses_every_sample(chain):
    s = chain["steps"]["relayout"]
    assert s["fetch"]["parts"] > chain["steps"]["narrower"]["fetch"]["parts"]  # smaller partitions
    assert s["fetch"]["samples"] == 0 and s["render"]["samples"] == 0
    assert not (chain["work"] / "demo" / "render" / "previous").exists()  # dropped once the stage completed
    assert not [p for p in (chain["work"] / "demo" / "render").glob("part-*.done")
                if int(p.name[5:10]) >= s["render"]["parts"]]  # fmt: skip


def test_the_missing_chunk_limit_rerenders_and_refetches_nothing(chain):
    s = chain["steps"]["missing_limit"]
    assert "fetch: " in s["_stdout"] and (s["fetch"]["ran"], s["fetch"]["samples"]) == (0, 0)  # "0 samples" fetched
    assert s["render"]["ran"] == s["render"]["parts"] and s["render"]["reused"] == 0
    assert (s["bank"]["ran"], s["split"]["ran"]) == (0, 0)


def test_the_incremental_release_equals_a_from_scratch_build(chain, tiny_world):
    work, out = seed_work(chain["root"] / "scratch-work", tiny_world), chain["root"] / "scratch-out"
    build(work, out, chain["final_cfg"])
    assert (out / "shards.csv").read_bytes() == (chain["out"] / "shards.csv").read_bytes()
    assert (out / "README.md").read_bytes() == (chain["out"] / "README.md").read_bytes()


# ------------------------------------------------------------------------------------------ stage order


def stage(name, work, out, cfg, check=True):
    """A stage that does its work runs as a user runs it (a subprocess); one that must refuse runs in this
    process, which checks the same exit code and stderr without a subprocess's seconds of imports."""
    args = ("stage", name, "--work", str(work), "--out", str(out), "--no-progress", "--scheduler", "threads")
    return cli(*args, config_dir=cfg) if check else cli_in_process(*args, config_dir=cfg)


def _refused(proc, *needles):
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), proc.stderr
    for n in needles:
        assert n in err[0], err[0]


def test_every_stage_before_its_upstream_refuses_and_leaves_no_marker(tmp_path, tiny_world, tiny_configs):
    work, out = seed_work(tmp_path / "work", tiny_world), tmp_path / "out"
    for name in ("fetch", "render", "split"):
        _refused(stage(name, work, out, tiny_configs, check=False), f"stage {name}", "STAGE=bank")
    _refused(stage("shard", work, out, tiny_configs, check=False), "no species")
    stage("bank", work, out, tiny_configs)
    _refused(stage("render", work, out, tiny_configs, check=False), "fetch partitions are not done", "STAGE=fetch")
    _refused(stage("shard", work, out, tiny_configs, check=False), "demo (render not done)")
    assert not list((work / "demo").glob("render/*.done")) and not list(work.glob("release/shard/*.done"))
    stage("split", work, out, tiny_configs)
    _refused(stage("shard", work, out, tiny_configs, check=False), "demo (render not done)")
    stage("fetch", work, out, tiny_configs)
    stage("render", work, out, tiny_configs)
    stage("shard", work, out, tiny_configs)
    cli("verify", "--out", str(out), config_dir=tiny_configs)

    # an upstream rerun that changes its outputs invalidates what consumed them
    more = write_tiny_configs(tmp_path / "cfg", budgets=_budgets(merge_edit=9))
    stage("bank", work, out, more)
    _refused(stage("render", work, out, more, check=False), "fetch partitions are not done")
    _refused(stage("shard", work, out, more, check=False), "not ready")
    stage("fetch", work, out, more)
    rendered = summary(stage("render", work, out, more).stdout)["render"]
    assert rendered["samples"] + rendered["failures"] <= 1 and rendered["reused"] > 0
    _refused(stage("shard", work, out, more, check=False), "demo (split not done)")
    stage("split", work, out, more)
    stage("shard", work, out, more)


def test_a_second_species_that_is_not_built_blocks_the_release(tmp_path, tiny_world, tiny_configs):
    work, out = seed_work(tmp_path / "work", tiny_world), tmp_path / "out"
    seed_work(work, tiny_world, "demo_b")
    build(work, out, tiny_configs)
    stage_b = cli("stage", "bank", "--species", "demo_b", "--work", str(work), "--out", str(out), "--no-progress",
                  config_dir=tiny_configs)  # fmt: skip
    assert stage_b.returncode == 0
    _refused(stage("shard", work, out, tiny_configs, check=False), "demo_b (render not done)", "SPECIES=demo_b")


# ------------------------------------------------------------------------------------------ locks and crashes


def test_a_second_build_on_the_same_work_dir_refuses_in_one_line(tmp_path, tiny_world, tiny_configs):
    work, out, hold = seed_work(tmp_path / "work", tiny_world), tmp_path / "out", tmp_path / "hold"
    hold.mkdir()
    # the first build holds still right after taking its lock (no race with a build that finishes first)
    env = {**os.environ, "CB2_CONFIG_DIR": str(tiny_configs), **checkpoint_env(species_locked=f"hold:{hold}")}
    args = [sys.executable, "-m", "pipeline", "build", "--work", str(work), "--out", str(out), "--no-progress"]
    first = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)  # fmt: skip
    try:
        wait_until(lambda: (hold / "species-locked.reached").exists(), "the first build's lock", proc=first)
        assert (work / "demo" / ".lock").read_text().strip() == str(first.pid)
        second = cli("build", "--work", str(work), "--out", str(out), "--no-progress", "--force",
                     config_dir=tiny_configs, check=False)  # fmt: skip
        _refused(second, "is in use by pid", str(first.pid), "species demo")
    finally:
        (hold / "species-locked.go").touch()
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    cli("verify", "--out", str(out), "--deep", config_dir=tiny_configs)


def test_the_lock_dies_with_its_holder(tmp_path, tiny_world, tiny_configs):
    work, out = seed_work(tmp_path / "work", tiny_world), tmp_path / "out"
    # SIGKILLed (its whole process group) while it holds the species lock
    env = {**os.environ, "CB2_CONFIG_DIR": str(tiny_configs), **checkpoint_env(species_locked="kill")}
    args = [sys.executable, "-m", "pipeline", "build", "--work", str(work), "--out", str(out), "--no-progress"]
    first = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)  # fmt: skip
    assert first.wait(timeout=600) == -signal.SIGKILL
    assert (work / "demo" / ".lock").read_text().strip() == str(first.pid)  # it held the lock when it died
    build(work, out, tiny_configs)  # not refused: the kernel released the lock with the process


def _rewrite_fetched(work, victim, arrays):
    """Replace a fetched file and its fetch marker's record, as if fetch had written it."""
    import io
    import json

    import numpy as np

    from core.hashing import sha256_file

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    victim.write_bytes(buf.getvalue())
    for marker_path in (work / "demo" / "fetch").glob("part-*.done"):
        marker = json.loads(marker_path.read_text())
        rel = str(victim.relative_to(work))
        if rel in marker["outputs"]:
            st = victim.stat()
            marker["outputs"][rel] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(victim)}
            marker_path.write_text(json.dumps(marker))


def test_an_unexpected_sample_error_keeps_its_traceback_and_shows_in_status(tmp_path, tiny_world, tiny_configs):
    import numpy as np

    work, out = seed_work(tmp_path / "work", tiny_world), tmp_path / "out"
    for name in ("bank", "fetch"):
        stage(name, work, out, tiny_configs)
    victim = sorted((work / "demo" / "fetch" / "samples").glob("*/*.npz"))[0]
    with np.load(victim) as data:
        arrays = {k: data[k] for k in data.files if k != "em"}  # a file render cannot read: a bug, not a reason
    _rewrite_fetched(work, victim, arrays)
    rendered = stage("render", work, out, tiny_configs)
    assert "samples failed on unexpected exceptions" in rendered.stdout
    ledger = pq.read_table(work / "demo" / "failures.parquet").to_pylist()
    (bad,) = [f for f in ledger if f["reason"].startswith("unexpected_")]
    assert bad["reason"] == "unexpected_KeyError"
    assert bad["sample_id"] == victim.name.split("-")[0] and bad["stage"] == "render"
    assert "Traceback (most recent call last)" in bad["exception"]
    status = cli("status", "--work", str(work), "--out", str(out), "--failed", config_dir=tiny_configs).stdout
    assert "1 partitions with a crash log" in status and bad["sample_id"] in status and ".log" in status


def test_a_fetched_file_altered_on_disk_is_refetched(tmp_path, tiny_world, tiny_configs):
    work, out = seed_work(tmp_path / "work", tiny_world), tmp_path / "out"
    for name in ("bank", "fetch"):
        stage(name, work, out, tiny_configs)
    victim = sorted((work / "demo" / "fetch" / "samples").glob("*/*.npz"))[0]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size: the fetch marker still looks done
    victim.write_bytes(bytes(data))
    _refused(stage("render", work, out, tiny_configs, check=False), str(victim), "altered on disk")
    assert not victim.exists()
    again = summary(build(work, out, tiny_configs).stdout)
    assert again["fetch"]["samples"] == 1 and again["fetch"]["ran"] == 1
    cli("verify", "--out", str(out), "--deep", config_dir=tiny_configs)
