"""End to end on the tiny demo: build, resume, rebuild byte-identically, two species, verify, status."""

import csv
import json

import pyarrow.parquet as pq
import pytest

from tests.conftest import cli, seed_work


def _shards(out):
    return (out / "shards.csv").read_text()


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_world, tiny_configs):
    root = tmp_path_factory.mktemp("build")
    work, out = seed_work(root / "work", tiny_world), root / "out"
    first = cli("build", "--work", str(work), "--out", str(out), "--no-progress", config_dir=tiny_configs,
                scheduler="processes")  # fmt: skip
    return work, out, first


def test_build_writes_a_verified_release_of_all_five_types(built, tiny_configs):
    work, out, first = built
    assert "verify" in first.stdout and "OK" in first.stdout
    bank = pq.read_table(work / "demo" / "bank.parquet")
    assert set(bank.column("sample_type").to_pylist()) == {
        "merge_edit", "split_edit", "adjacent_control", "junction_control", "synapse_control"
    }  # fmt: skip
    rows = list(csv.DictReader((out / "shards.csv").open()))
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    released = sum(int(r["n_samples"]) for r in rows)
    ledger = pq.read_table(work / "demo" / "failures.parquet").to_pylist()
    failed_after_bank = {f["sample_id"] for f in ledger if f["stage"] != "bank"}
    assert released == bank.num_rows - len(failed_after_bank)  # every bank row released or its failure recorded
    deep = cli("verify", "--out", str(out), "--deep", config_dir=tiny_configs)
    assert "OK" in deep.stdout


def test_rerun_skips_everything(built, tiny_configs):
    work, out, _ = built
    before = _shards(out)
    again = cli("build", "--work", str(work), "--out", str(out), "--no-progress", config_dir=tiny_configs)
    for stage in ("bank", "fetch", "render", "split"):
        assert f"{stage}: " in again.stdout and "0 run" in again.stdout.split(f"{stage}: ")[1].split("\n")[0]
    assert "up to date" in again.stdout
    assert _shards(out) == before


def test_force_rebuild_is_byte_identical(built, tiny_configs, tmp_path, tiny_world):
    _, out, _ = built
    work2, out2 = seed_work(tmp_path / "work", tiny_world), tmp_path / "out"
    cli("build", "--work", str(work2), "--out", str(out2), "--no-progress", "--scheduler", "threads",
        config_dir=tiny_configs)  # fmt: skip
    assert _shards(out2) == _shards(out)
    assert (out2 / "README.md").read_bytes() == (out / "README.md").read_bytes()
    assert (out2 / "demo.parquet").read_bytes() == (out / "demo.parquet").read_bytes()


def test_stage_bank_force_is_byte_identical(built, tiny_configs):
    work, out, _ = built
    bank = (work / "demo" / "bank.parquet").read_bytes()
    proc = cli("stage", "bank", "--work", str(work), "--out", str(out), "--force", "--no-progress",
               config_dir=tiny_configs)  # fmt: skip
    assert "1 run" in proc.stdout
    assert (work / "demo" / "bank.parquet").read_bytes() == bank


def test_status_reports_every_stage(built, tiny_configs):
    work, out, _ = built
    proc = cli("status", "--work", str(work), "--out", str(out), config_dir=tiny_configs)
    lines = [line.split() for line in proc.stdout.splitlines()[1:]]
    assert [cols[1] for cols in lines] == ["roots", "bank", "select", "fetch", "render", "split", "shard"]
    assert lines[-1][:4] == ["release", "shard", "1", "0"]  # the release is a stage with its marker
    assert all(cols[3] == "0" for cols in lines)  # nothing pending
    assert int(lines[1][6]) >= 1  # the demo world's injected defects failed in the bank
    assert [cols[5] for cols in lines] == ["roots", "roots", "candidates", "rows", "rows", "rows", "rows"]
    roots, banked = int(lines[0][4]), int(lines[1][4])
    assert roots == banked > 0  # every proofread root queried, every one banked
    fetch, render, split = (int(cols[4]) for cols in lines[3:6])
    assert int(lines[2][4]) >= fetch  # the selection chose the bank rows among the candidates
    assert fetch == render == split > int(lines[-1][4])  # every bank row; the release ships those that did not fail


def _released(out):
    rows = []
    for split in ("train", "val", "test"):
        rows += pq.read_table(
            out / "metadata" / f"{split}.parquet", columns=["species", "combined_sample_hash"]
        ).to_pylist()
    return rows


def test_two_species_in_one_release(tmp_path, tiny_world, tiny_configs):
    work, out = seed_work(tmp_path / "work", tiny_world), tmp_path / "out"
    seed_work(work, tiny_world, "demo_b")
    cli("build", "--work", str(work), "--out", str(out), "--no-progress", config_dir=tiny_configs)
    demo_only = {r["combined_sample_hash"] for r in _released(out)}
    cli("build", "--species", "demo_b", "--work", str(work), "--out", str(out), "--no-progress",
        config_dir=tiny_configs)  # fmt: skip
    both = _released(out)
    assert {r["combined_sample_hash"] for r in both if r["species"] == "demo"} == demo_only
    assert {r["species"] for r in both} == {"demo", "demo_b"}
    assert sum(int(r["n_samples"]) for r in csv.DictReader((out / "shards.csv").open())) == len(both)
    assert "demo_b" in (out / "README.md").read_text()


def test_split_regenerates_with_a_new_salt(built, tiny_configs, tmp_path, tiny_world):
    from tests.conftest import write_tiny_configs

    _, out, _ = built
    salted = write_tiny_configs(tmp_path / "cfg", split_salt="another-salt")
    work2, out2 = seed_work(tmp_path / "work", tiny_world), tmp_path / "out"
    cli("build", "--work", str(work2), "--out", str(out2), "--no-progress", config_dir=tiny_configs)
    cli("split", "--work", str(work2), "--out", str(out2), "--no-progress", config_dir=salted)
    manifest = json.loads((work2 / "demo" / "split" / "manifest.json").read_text())
    assert manifest["salt"] == "another-salt"
    assert _shards(out2) != _shards(out)
    cli("verify", "--out", str(out2), "--deep", config_dir=salted)


def test_corrupt_render_part_is_caught_and_redone_in_a_moved_work_dir(built, tiny_configs, tmp_path):
    import shutil

    work, out, _ = built
    moved = tmp_path / "moved-work"
    shutil.copytree(work, moved)  # markers hold paths relative to the work dir: a moved one still resumes
    part = moved / "demo" / "render" / "part-00001.parquet"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    args = ["build", "--work", str(moved), "--out", str(tmp_path / "out"), "--no-progress"]
    failed = cli(*args, config_dir=tiny_configs, check=False)
    assert failed.returncode == 1
    assert "part-00001.parquet does not match the sha256 in its marker" in failed.stderr
    again = cli(*args, config_dir=tiny_configs)
    assert "render: " in again.stdout and "1 run" in again.stdout.split("render: ")[1].split("\n")[0]
    assert (tmp_path / "out" / "shards.csv").read_text() == _shards(out)


def test_a_species_stages_and_the_release_take_their_locks_before_any_work(tmp_path):
    """A species' stages hold its work dir's lock; the release holds its own lock and shared locks on every species
    it reads: with the species' lock held elsewhere, both refuse at once, naming it, and nothing is written."""
    import pyarrow as pa

    from config import load_config
    from core.errors import UserError
    from pipeline.build import RunOptions, run_species, write_release_all
    from pipeline.context import BuildContext
    from pipeline.locks import hold
    from pipeline.stages.bank_candidates import BANK_SCHEMA
    from pipeline.stages.species import species_graph

    work, out = tmp_path / "work", tmp_path / "out"
    ctx = BuildContext("demo", load_config("demo"), work, out)
    ctx.bank_path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([], schema=BANK_SCHEMA), ctx.bank_path)
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    opts = RunOptions(scheduler="sync", progress=False)
    with hold(ctx.lock_path, "another build"):
        with pytest.raises(UserError, match="species demo .* is in use by pid"):
            run_species(species_graph(ctx), opts)
        with pytest.raises(UserError, match="species demo .* is in use by pid"):
            write_release_all(work, out, opts)
    assert sorted(p.relative_to(work) for p in work.rglob("*") if p.name != ".lock") == before
    assert not out.exists()
