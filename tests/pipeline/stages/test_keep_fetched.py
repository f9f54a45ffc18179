"""Disk as a choice (pipeline/stages/fetched_disk.py): `keep_fetched: false` drops each partition's fetched files once
it is rendered, changes no fingerprint, key or rendered byte, and a later run fetches again only what it renders.

Fetch and render run as the build runs them (`execute_streamed`, one task per partition) on a fake source (a cube
mesh, small cutouts) with a fake, cheap `render_row` whose bytes follow the fetched arrays and the seed."""

from __future__ import annotations

import contextlib
import dataclasses
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import trimesh

from config import load_config
from core.atomic import write_parquet
from core.hashing import sha256_file
from core.layout import MARKER
from pipeline.context import BuildContext
from pipeline.markers import outputs_digest, read_marker
from pipeline.runner import execute_streamed
from pipeline.sources.base import Cutout
from pipeline.stages import fetch as fetch_stage
from pipeline.stages import fetched_disk
from pipeline.stages import render as render_stage
from pipeline.stages.bank_candidates import bank_table
from pipeline.stages.species import species_graph
from tests.pipeline.fakes import FakeSource, build_bank


class _Source:
    """Meshes: a 100 nm cube in the middle of the box asked for; EM: values from the point; records each sample
    fetched (by hash, in `fetched`)."""

    def __init__(self) -> None:
        self.fetched: list[str] = []

    @contextlib.contextmanager
    def sample(self, sample_hash):  # noqa: ANN001, ANN201
        self.fetched.append(sample_hash)
        yield

    def mesh(self, root_id, box_nm=None):  # noqa: ANN001, ANN201
        centre = (np.asarray(box_nm[0]) + np.asarray(box_nm[1])) / 2.0
        return trimesh.creation.box(extents=(100.0, 100.0, 100.0)).apply_translation(centre)

    def em_cutout(self, center_nm, size_nm):  # noqa: ANN001, ANN201
        value = int(abs(float(np.sum(center_nm)))) % 200
        origin = tuple(np.asarray(center_nm) - size_nm / 2)
        return Cutout(np.full((4, 4, 4), value, np.uint8), (size_nm / 4,) * 3, origin)

    def segmentation_cutout(self, center_nm, size_nm, timestamp):  # noqa: ANN001, ANN201
        return Cutout(np.zeros((4, 4, 4), np.uint64), (size_nm / 4,) * 3, tuple(np.asarray(center_nm) - size_nm / 2))


def _render_row(row, fetched, cfg):  # noqa: ANN001, ANN202
    """A render part row whose bytes follow the fetched arrays and the render's config (seed), cheaply."""
    seen = {"em": int(fetched.em.sum()), "verts": float(fetched.meshes[0][0].sum()), "seed": cfg.seed}
    _render_row.calls.append(row["combined_sample_hash"])
    return {"combined_sample_hash": row["combined_sample_hash"], "sample_type": row["sample_type"],
            "species": "demo", "metadata": json.dumps(seen, sort_keys=True)}  # fmt: skip


@pytest.fixture
def world(tmp_path, monkeypatch):
    source = _Source()
    for module in (fetch_stage, fetched_disk):
        monkeypatch.setattr(module, "open_source", lambda ctx: source)
    _render_row.calls = []
    monkeypatch.setattr(render_stage, "render_row", _render_row)
    cfg = load_config("demo").model_copy(update={"partition_rows": 2})
    rows = build_bank(FakeSource(), cfg).rows
    return tmp_path, cfg, source, rows


def _context(root, cfg, rows, **updates) -> BuildContext:  # noqa: ANN001
    ctx = BuildContext("demo", cfg.model_copy(update=updates), root / "work", root / "out")
    ctx.bank_path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(ctx.bank_path, bank_table(rows))
    return ctx


def _build(ctx: BuildContext) -> tuple[int, int]:
    """Fetch + render of every partition as the build runs them; (fetch partitions run, render partitions run)."""
    graph = species_graph(ctx)
    fetch, render = graph.stage("fetch"), graph.stage("render")
    ran = [0, 0]
    for part in graph.partitions("fetch"):
        first, second = execute_streamed(fetch, render, ctx, part, False)
        assert not first.error and (second is None or not second.error), (first.error, second and second.error)
        ran[0] += not first.skipped
        ran[1] += second is not None
    return ran[0], ran[1]


def _npz(ctx: BuildContext) -> list:
    return sorted(ctx.fetched_dir.glob("*/*.npz"))


def _fetch_markers(ctx: BuildContext) -> list[dict]:
    return [read_marker(p) for p in sorted(ctx.stage_dir("fetch").glob(f"part-*{MARKER}"))]


def _render_parts(ctx: BuildContext) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(ctx.stage_dir("render").glob("part-?????.parquet"))}


def _render_keys(ctx: BuildContext) -> list[tuple]:
    markers = [read_marker(p) for p in sorted(ctx.stage_dir("render").glob(f"part-*{MARKER}"))]
    return [(m["fingerprint"], m["samples"]) for m in markers]


def test_dropping_changes_no_fingerprint_key_or_rendered_byte_and_a_rebuild_redoes_nothing(world):
    """keep_fetched false: no fetched file is left once rendered, every one recorded as dropped; the render parts,
    their fingerprints, sample keys and the fetch digests are those of a build that keeps them; run again, nothing
    is fetched, rendered or sealed."""
    root, cfg, source, rows = world
    keep = _context(root / "keep", cfg, rows)
    drop = _context(root / "drop", cfg, rows, keep_fetched=False)
    _build(keep)
    n_fetched = len(_npz(keep))
    assert n_fetched >= 5 and len(_fetch_markers(keep)) >= 2
    _build(drop)
    assert _npz(drop) == []
    markers = _fetch_markers(drop)
    assert all(m["outputs"] == {} for m in markers) and sum(len(m.get("dropped", {})) for m in markers) == n_fetched
    assert [outputs_digest(m) for m in markers] == [outputs_digest(m) for m in _fetch_markers(keep)]
    assert _render_parts(drop) == _render_parts(keep)
    assert _render_keys(drop) == _render_keys(keep)
    fetched, rendered = len(source.fetched), len(_render_row.calls)
    assert _build(drop) == (0, 0)
    assert (len(source.fetched), len(_render_row.calls)) == (fetched, rendered)


def test_a_re_render_fetches_again_exactly_the_samples_it_renders_and_says_so(world, capsys):
    """After a build that dropped its files, another seed re-renders every sample: each is fetched again (once) before
    it is rendered, from the same data the same bytes (no fetch record changes), the new rows are those of a build
    that kept its files, the files go again, and each partition says how many it fetched again."""
    root, cfg, source, rows = world
    drop = _context(root / "drop", cfg, rows, keep_fetched=False)
    _build(drop)
    records = [m.get("dropped") for m in _fetch_markers(drop)]
    source.fetched.clear()
    _render_row.calls.clear()
    capsys.readouterr()
    drop = _context(root / "drop", cfg, rows, keep_fetched=False, seed=11)
    assert _build(drop) == (0, len(records))
    assert sorted(source.fetched) == sorted(_render_row.calls) and len(set(source.fetched)) == len(source.fetched)
    assert [m.get("dropped") for m in _fetch_markers(drop)] == records and _npz(drop) == []
    said = [line for line in capsys.readouterr().err.splitlines() if "fetched again" in line]
    assert len(said) == len([r for r in records if r]) and "keep_fetched is false" in said[0]
    keep = _context(root / "keep", cfg, rows, seed=11)
    _build(keep)
    assert _render_parts(drop) == _render_parts(keep)


def test_added_rows_fetch_and_render_only_themselves_though_the_others_files_were_dropped(world):
    """New bank rows re-run their partitions' fetch: the samples whose file was dropped under the same key are kept
    (not fetched again, their render rows carried forward); only the new rows are fetched and rendered."""
    root, cfg, source, rows = world
    fewer = [r for i, r in enumerate(rows) if i % 5]
    drop = _context(root / "drop", cfg, fewer, keep_fetched=False)
    _build(drop)
    source.fetched.clear()
    _render_row.calls.clear()
    drop = _context(root / "drop", cfg, rows, keep_fetched=False)
    fetch_ran, _ = _build(drop)
    added = sorted({r["combined_sample_hash"] for r in rows} - {r["combined_sample_hash"] for r in fewer})
    assert fetch_ran > 0 and sorted(source.fetched) == added and sorted(_render_row.calls) == added
    assert _npz(drop) == []
    _build(_context(root / "keep", cfg, fewer))  # the same history, files kept (the fake mesh follows the box asked)
    keep = _context(root / "keep", cfg, rows)
    _build(keep)
    assert _render_parts(drop) == _render_parts(keep)


def test_added_rows_and_another_seed_fetch_again_every_rendered_sample_while_their_fetch_runs(world):
    """Both stages' keys change at once (rows added, another seed): the fetch keeps the dropped samples, the render
    streaming from it needs every file and fetches the dropped ones again one by one; the rows are a kept build's."""
    root, cfg, source, rows = world
    fewer = [r for i, r in enumerate(rows) if i % 5]
    drop = _context(root / "drop", cfg, fewer, keep_fetched=False)
    _build(drop)
    source.fetched.clear()
    _render_row.calls.clear()
    drop = _context(root / "drop", cfg, rows, keep_fetched=False, seed=3)
    _build(drop)
    assert sorted(source.fetched) == sorted(_render_row.calls) and _npz(drop) == []
    _build(_context(root / "keep", cfg, fewer))
    keep = _context(root / "keep", cfg, rows, seed=3)
    _build(keep)
    assert _render_parts(drop) == _render_parts(keep)


def test_the_switch_is_not_an_input_of_any_stage():
    from pipeline.invalidation import NOT_INPUTS, invalidation

    assert "keep_fetched" in NOT_INPUTS and "keep_fetched" not in invalidation()


def test_a_dropped_file_that_comes_back_with_other_bytes_is_recorded_as_fetched_again(world):
    """A re-render from a sealed fetch whose dropped file comes back different (the source changed): the fetch marker
    records the new file (then dropped again), so the render's key names what it rendered."""
    root, cfg, source, rows = world
    drop = _context(root / "drop", cfg, rows, keep_fetched=False)
    _build(drop)
    before = _fetch_markers(drop)
    real = source.em_cutout
    other = np.full((4, 4, 4), 201, np.uint8)
    source.em_cutout = lambda center_nm, size_nm: dataclasses.replace(real(center_nm, size_nm), data=other)
    drop = _context(root / "drop", cfg, rows, keep_fetched=False, seed=5)
    _build(drop)
    after = _fetch_markers(drop)
    assert [outputs_digest(m) for m in after] != [outputs_digest(m) for m in before]
    assert _npz(drop) == [] and all(m["outputs"] == {} for m in after)
    part = next(iter(_render_parts(drop)))
    assert all(json.loads(m)["em"] == 201 * 64 for m in
               pq.read_table(drop.stage_dir("render") / part).column("metadata").to_pylist())  # fmt: skip
    # the render partitions were sealed under the fetch digest they started from: the next run lists them under the
    # new one and seals them again, keeping every row (nothing fetched or rendered); then nothing runs
    fetched, rendered = len(source.fetched), len(_render_row.calls)
    assert _build(drop)[0] == 0 and _build(drop) == (0, 0)
    assert (len(source.fetched), len(_render_row.calls)) == (fetched, rendered)
