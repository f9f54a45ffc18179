"""The shard stage's refusals (pipeline/stages/shard.py), without a build: a species with a bank that is not rendered
and split stops the release (never silently left out), and a render part whose bytes changed on disk is refused,
named, and loses its marker so that the next build renders it again."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from config import load_config
from core.errors import UserError
from pipeline.context import BuildContext
from pipeline.markers import digests, write_marker
from pipeline.runner import run_stage
from pipeline.stage import Partition, is_done
from pipeline.stages.bank_candidates import BANK_SCHEMA
from pipeline.stages.shard import STAGE, check_render_parts, release_graph, species_in


def test_a_species_with_a_bank_that_is_not_rendered_and_split_stops_the_release(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    (work / "demo").mkdir(parents=True)
    (work / "fly").mkdir()  # no bank: not a species of this work dir's release
    pq.write_table(pa.Table.from_pylist([], schema=BANK_SCHEMA), work / "demo" / "bank.parquet")
    assert species_in(work) == ["demo"]
    graph = release_graph(work, out)
    problem = graph.missing(STAGE)
    assert problem is not None and "demo (render not done)" in problem
    assert "make build SPECIES=demo" in problem and str(work / "demo") in problem
    assert not is_done(graph.ctx, graph.partitions(STAGE)[0])
    with pytest.raises(UserError, match="^the release, stage shard: .*demo .render not done. is not ready"):
        run_stage(graph, STAGE, scheduler="sync", progress=False)
    assert not out.exists() and not graph.partitions(STAGE)[0].marker_path(graph.ctx).exists()


def test_a_release_of_no_species_refuses_naming_the_build_to_run(tmp_path):
    graph = release_graph(tmp_path / "work", tmp_path / "out")
    assert graph.missing(STAGE) == f"no species in {graph.ctx.work_dir} has a bank yet: run `make build` first"


def test_a_render_part_whose_bytes_changed_is_refused_naming_it_and_its_marker_removed(tmp_path):
    ctx = BuildContext("demo", load_config("demo"), tmp_path / "work", tmp_path / "out")
    parts = [Partition("render", i, 1, f"fp{i}") for i in range(2)]
    for part in parts:
        out = part.output_file(ctx)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"rows of part %d" % part.index)
        write_marker(part.marker_path(ctx), {"fingerprint": part.fingerprint, "outputs": digests(ctx.work_dir, [out])})
    markers = [p.marker_path(ctx) for p in parts]
    check_render_parts(ctx.work_dir, markers)  # intact: nothing said, nothing removed
    bad = parts[1].output_file(ctx)
    bad.write_bytes(b"ROWS OF PART 1")  # the same size: only the sha256 tells
    with pytest.raises(UserError, match=f"species demo: render part {bad} does not match the sha256 in its marker"):
        check_render_parts(ctx.work_dir, markers)
    assert parts[0].marker_path(ctx).exists() and not parts[1].marker_path(ctx).exists()


@pytest.mark.slow  # a tiny build in a subprocess
def test_the_report_command_leaves_the_release_up_to_date(tmp_path, tiny_world, tiny_configs):
    """The release's marker records the report it wrote; `report` writes it again (other bytes: its build section)
    and records that one, so the next build does not write the whole release again over a page."""
    from tests.conftest import cli, seed_work

    work, out = seed_work(tmp_path / "w", tiny_world), tmp_path / "o"
    cli("build", "--work", str(work), "--out", str(out), "--no-progress", config_dir=tiny_configs)
    shards = {p: p.stat().st_mtime_ns for p in out.glob("*/*.parquet")}
    ledger = work / "demo" / "failures.parquet"  # what the report shows changes (as a retry's new message does)
    failures = pq.read_table(ledger)
    assert failures.num_rows > 0
    more = failures.slice(0, 1).set_column(0, failures.schema.field(0), pa.array(["another-sample"]))
    pq.write_table(pa.concat_tables([failures, more.cast(failures.schema)]), ledger)
    index = out / "report" / "index.html"
    before = index.stat().st_size
    cli("report", "--work", str(work), "--out", str(out), config_dir=tiny_configs)
    assert index.stat().st_size != before
    again = cli("stage", "shard", "--work", str(work), "--out", str(out), "--no-progress", config_dir=tiny_configs)
    assert "is up to date" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*.parquet")} == shards
