"""A tiny demo release audited against its own world: metadata in the seed rows' forms, segment A the same root
in the geometry's mask A, the EM's G channel and the split mask's A value, exclusive EM masks, the best view
never below a cardinal one, and `show`."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from config.schema import SpeciesConfig
from core.release_schema import EM_COLUMNS, SPLIT_MASK_A, SPLIT_MASK_B, SPLIT_MASK_COLUMNS
from core.samples import DUAL_TYPES, OP_TYPES, metadata_keys
from pipeline.sources.demo import DemoSource
from render.encode import decode_geometry
from render.geometry import crop_mesh, draw_view_params, render_geometry
from shard.lookup import find_row
from shard.neuroglancer import neuroglancer_state, neuroglancer_url, segment_roots, state_of_url
from tests.conftest import cli

CARDINAL_AXES = {"em_xy_before": (0, 1), "em_xz_before": (0, 2), "em_yz_before": (1, 2)}  # (column, row) axes
CENTRAL = slice(28, 196)


@pytest.fixture(scope="module")
def release(tiny_release, tiny_configs):
    work, out = tiny_release
    cfg = SpeciesConfig.model_validate(yaml.safe_load((tiny_configs / "demo.yaml").read_text()))
    rows = []
    for shard in sorted(out.glob("*/*-*.parquet")):
        rows += pq.read_table(shard).to_pylist()
    bank = {r["combined_sample_hash"]: r for r in pq.read_table(work / "demo" / "bank.parquet").to_pylist()}
    return work, out, cfg, rows, bank


def _png(cell) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(cell["bytes"])))


def test_metadata_has_the_seed_rows_forms_and_one_key_set_per_archive(release):
    _work, _out, _cfg, rows, _bank = release
    seen = set()
    for r in rows:
        meta = json.loads(r["metadata"])
        st = r["sample_type"]
        seen.add(st)
        scores = tuple(sorted(set(meta) - set(metadata_keys(st))))
        assert tuple(sorted(meta)) == metadata_keys(st, scores), st
        if st in OP_TYPES:
            assert scores == ()
            assert meta["cutout_timestamp"] is None  # null on edit rows and adjacent controls, as released
            assert type(meta["timestamp"]) is int and type(meta["timestamp_ms"]) is int
            assert meta["timestamp"] == math.floor(meta["timestamp_ms"] / 1000)
        else:
            assert type(meta["cutout_timestamp"]) is int
            assert set(scores) >= {"cleft_score", "connection_score"}  # the demo's synapse table has them
        if st == "adjacent_control":
            assert meta["after_root_ids"] is None and meta["base_root"] and meta["adjacent_root"]
        if st == "junction_control":
            assert type(meta["degree"]) is float
    assert seen == {"merge_edit", "split_edit", "adjacent_control", "junction_control", "synapse_control"}


def test_em_masks_exclusive_and_best_view_never_below_a_cardinal_view(release):
    _work, _out, _cfg, rows, _bank = release
    for r in rows:
        views = {c: _png(r[c]) for c in EM_COLUMNS}
        for c, img in views.items():
            assert not ((img[..., 1] > 0) & (img[..., 2] > 0)).any(), (r["combined_sample_hash"], c)

        def score(img):
            a = np.count_nonzero(img[CENTRAL, CENTRAL, 1])
            b = np.count_nonzero(img[CENTRAL, CENTRAL, 2])
            return math.log(max(a, 1)) + math.log(max(b, 1))

        best = score(views["em_best_before"])
        assert all(best >= score(views[c]) for c in EM_COLUMNS[:3]), r["combined_sample_hash"]


def _silhouette(world, root: int, center, extent: float) -> np.ndarray:
    """The root alone, cropped and rendered as the pipeline does for the row: where it is seen."""
    mesh = crop_mesh(world.mesh(root), center, 1.2 * extent)
    return render_geometry([mesh], center, extent)[:, 0] > 0


def _view_points(meta: dict, view: str, window_nm: float) -> np.ndarray:
    s = ((np.arange(224) + 0.5) / 224 * 2.0 - 1.0) * window_nm / 2.0
    pts = np.broadcast_to(np.asarray(meta["em_view_center_nm"], float), (224, 224, 3)).copy()
    col, row = CARDINAL_AXES[view]
    pts[..., col] += s[None, :]
    pts[..., row] += s[:, None]
    return pts


def test_segment_a_is_one_root_in_geometry_em_and_split_masks(release, tiny_world):
    """In every two-segment row, the root the card calls A is what mask A of the geometry, the G channel of the
    EM and the A value of the split masks show (and B likewise), checked against the world itself."""
    _work, _out, cfg, rows, bank = release
    world = DemoSource(cfg, tiny_world)
    checked = {"geometry": 0, "em": 0, "split": 0}
    swapped_would_fail = 0
    for r in rows:
        st, h = r["sample_type"], r["combined_sample_hash"]
        meta = json.loads(r["metadata"])
        roots = segment_roots(st, meta)
        if len(roots) != 2:
            continue
        a_root, b_root = (int(x) for x in roots)
        b = bank[h]
        center, extent = draw_view_params(h, b["coord_nm"], cfg.extent_nm, cfg.center_jitter_nm, cfg.seed)
        drawn = st in DUAL_TYPES or r["has_after_mask"]  # rows whose pictures show A and B apart
        alone = {root: _silhouette(world, root, center, extent) for root in (a_root, b_root)} if drawn else {}
        if st in DUAL_TYPES:
            geom = decode_geometry(r["geometry"])
            mask_a, mask_b = geom[:, 5] > 0, geom[:, 6] > 0
            assert (mask_a & ~alone[a_root]).sum() <= 0.005 * mask_a.sum(), h
            assert (mask_b & ~alone[b_root]).sum() <= 0.005 * mask_b.sum(), h
            swapped_would_fail += (mask_a & ~alone[b_root]).sum() > 0.005 * mask_a.sum()
            checked["geometry"] += 1
        if r["has_after_mask"]:
            split = np.stack([_png(r[c]) for c in SPLIT_MASK_COLUMNS])
            # where an after root is seen (others are filled from the nearest label), A's pixels are A's, B's B's
            seen = alone[a_root] | alone[b_root]
            for value, root in ((SPLIT_MASK_A, a_root), (SPLIT_MASK_B, b_root)):
                mine = (split == value) & seen
                assert (mine & ~alone[root]).sum() <= 0.005 * mine.sum(), (h, value)
            checked["split"] += 1
        # EM: the segmentation of the world at the row's cutout time, looked up at each view pixel's point
        cut = world.segmentation_cutout(np.asarray(meta["em_view_center_nm"]), 2 * cfg.em_window_nm,
                                        b["cutout_timestamp"])  # fmt: skip
        for view in CARDINAL_AXES:
            img = _png(r[view])
            idx = np.floor((_view_points(meta, view, cfg.em_window_nm) - cut.origin_nm) / cut.voxel_nm).astype(int)
            roots_at = cut.data[idx[..., 0], idx[..., 1], idx[..., 2]]
            for channel, root in ((1, a_root), (2, b_root)):
                on = img[..., channel] > 0
                if on.sum() >= 20:
                    assert (roots_at[on] == root).mean() >= 0.98, (h, view, channel)
        checked["em"] += 1
    assert checked["geometry"] >= 5 and checked["em"] >= 10 and checked["split"] >= 1, checked
    assert swapped_would_fail >= 1  # the check can tell A from B


def test_show_finds_a_row_without_scanning_and_draws_it(release, tiny_configs, tmp_path, monkeypatch):
    _work, out, _cfg, rows, _bank = release
    row = next(r for r in rows if r["has_after_mask"])
    h = row["combined_sample_hash"]
    png = tmp_path / "row.png"
    proc = cli("show", h, "--out", str(out), "--png", str(png), config_dir=tiny_configs)
    assert f'combined_sample_hash: "{h}"' in proc.stdout and '"split_edit"' in proc.stdout
    assert "false_merge_identification_label: 1.0" in proc.stdout and "timestamp_ms:" in proc.stdout
    assert "neuroglancer: add --neuroglancer to view it locally" in proc.stdout
    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[1] > 7 * 160 and img.std() > 10
    bad = cli("show", "0" * 32, "--out", str(out), config_dir=tiny_configs, check=False)
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and bad.stderr.startswith("error:")
    # in-process: one row group of one shard is read, never a whole shard
    reads = []
    orig = pq.ParquetFile.read_row_group
    monkeypatch.setattr(
        pq.ParquetFile, "read_row_group", lambda self, i, *a, **k: reads.append(i) or orig(self, i, *a, **k)
    )
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: pytest.fail("a whole shard was read"))
    found = find_row(out, h)
    assert found.row["combined_sample_hash"] == h and found.row["split_mask_front"] is not None
    assert len(reads) == 1


def test_neuroglancer_link_for_a_cave_species():
    """fly's shipped config: FlyWire's layers, the point in its 4 x 4 x 40 nm voxels, both segments, the time."""
    from config import load_config
    from config.schema import CONFIG_DIR

    cfg = load_config("fly", CONFIG_DIR)
    meta = {"edit_point_nm": [331008.0, 306424.0, 251800.0], "before_root_ids": ["7205", "7206"],
            "timestamp": 1700000000, "timestamp_ms": 1700000000123, "cutout_timestamp": None}  # fmt: skip
    url = neuroglancer_url(neuroglancer_state(cfg, "merge_edit", meta))
    assert url.startswith("https://spelunker.cave-explorer.org/#!%7B")
    state = state_of_url(url)  # what the viewer reads
    image, seg = state["layers"]
    assert image["source"] == "precomputed://https://bossdb-open-data.s3.amazonaws.com/flywire/fafbv14"
    assert seg["source"] == "graphene://https://prod.flywire-daf.com/segmentation/1.0/flywire_public"
    assert seg["type"] == "segmentation" and seg["segments"] == ["7205", "7206"]
    assert seg["timestamp"] == 1700000000123 - 1000  # labels of a merge are resolved at T - 1 s
    assert state["dimensions"] == {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [40e-9, "m"]}
    assert state["position"] == [331008.0 / 4, 306424.0 / 4, 251800.0 / 40]  # voxels, not nm
    junction = neuroglancer_state(cfg, "junction_control", {"interface_point_nm": [4.0, 8.0, 80.0], "root_id": "9",
                                                             "cutout_timestamp": 1778960736})  # fmt: skip
    assert junction["layers"][1]["timestamp"] == 1778960736000 and junction["layers"][1]["segments"] == ["9"]
    assert junction["position"] == [1.0, 2.0, 2.0]
    split = neuroglancer_state(cfg, "split_edit", {**meta, "after_root_ids": ["8001", "8002"]})
    assert split["layers"][1]["segments"] == ["8001", "8002"] and split["layers"][1]["timestamp"] == 1700000000123


def test_the_build_writes_the_report_and_the_report_command_writes_it_again(release, tiny_configs):
    """The shard stage writes report/ with the release; `python -m pipeline report` rebuilds it from the release
    and the work dir alone, byte for byte (no shard rewritten); its stage timings come from the markers."""
    from tests.conftest import cli_in_process

    work, out, _cfg, rows, _bank = release
    report = out / "report"
    before = {p.relative_to(report): p.read_bytes() for p in sorted(report.rglob("*")) if p.is_file()}
    page = (report / "index.html").read_text()
    assert "<h3>demo</h3>" in page and "<td>render</td>" in page and "<td>fetch</td>" in page
    assert sum(f"{r['combined_sample_hash']}\"" in page for r in rows) >= 10  # gallery rows, by id
    shards = {p: p.stat().st_mtime_ns for p in out.glob("*/*-*.parquet")}
    done = cli_in_process("report", "--work", str(work), "--out", str(out), config_dir=tiny_configs)
    assert done.returncode == 0 and done.stdout.startswith(f"report: {report / 'index.html'}")
    after = {p.relative_to(report): p.read_bytes() for p in sorted(report.rglob("*")) if p.is_file()}
    assert after == before
    assert {p: p.stat().st_mtime_ns for p in out.glob("*/*-*.parquet")} == shards
