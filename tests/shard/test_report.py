"""The release report (shard/report.py): written with the release, every link and image there, the right rows."""

from __future__ import annotations

import html.parser
import io
import json

import pyarrow.parquet as pq
import pytest
from PIL import Image

from config import load_config
from config.schema import CONFIG_DIR
from core.samples import SAMPLE_TYPES
from shard.neuroglancer import state_of_url
from shard.release import write_release
from shard.report import GALLERY_ROWS
from shard.verify import verify_release
from tests.shard import fakes


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.hrefs: list[str] = []
        self.row_ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a["src"])
        elif tag == "a":
            self.hrefs.append(a["href"])
        elif tag == "div" and a.get("class") == "row":
            self.row_ids.append(a["id"])


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    inputs = fakes.build_inputs(root / "work", n_per_species=40)
    configs = {sp: load_config(sp, CONFIG_DIR) for sp in inputs["species_parts"]}
    build = {"code_version": "9.9.9", "species": {"fly": {"config_digest": "abc123", "source": "cave",
             "stages": {"render": {"partitions": 3, "seconds": 12.5, "finished": "2026-12-01 10:00:00"}}}}}  # fmt: skip
    out = root / "out"
    stats = write_release(out_dir=out, shard_bytes=40_000, row_group_rows=4, configs=configs, build_info=build,
                          **inputs)  # fmt: skip
    page = (out / "report" / "index.html").read_text()
    links = _Links()
    links.feed(page)
    return out, stats, page, links


def test_every_image_and_local_link_of_the_page_is_there_and_decodes(released):
    out, _stats, _page, links = released
    report = out / "report"
    assert links.imgs and len(links.imgs) >= 2 * len(links.row_ids)  # geometry and EM thumbnails per row
    for src in links.imgs:
        with Image.open(report / src) as img:
            img.load()
            assert img.width >= 56 and img.height >= 56, src
    local = [h for h in links.hrefs if not h.startswith("https://")]
    assert {"../README.md", "../shards.csv"} <= set(local)
    for href in local:
        assert (report / href).is_file(), href
    shows = [h for h in local if h.startswith("rows/")]
    assert len(shows) == len(links.row_ids)
    for href in shows:
        Image.open(io.BytesIO((report / href).read_bytes())).load()


def test_the_gallery_shows_the_first_rows_by_hash_of_each_species_and_type(released):
    out, _stats, _page, links = released
    rows = pq.read_table(out / "metadata" / "train.parquet").to_pylist()
    for split in ("val", "test"):
        rows += pq.read_table(out / "metadata" / f"{split}.parquet").to_pylist()
    expected = []
    for species in sorted({r["species"] for r in rows}):
        for t in SAMPLE_TYPES:
            mine = sorted(r["combined_sample_hash"] for r in rows if r["species"] == species and r["sample_type"] == t)
            expected += mine[:GALLERY_ROWS]
    assert links.row_ids == expected


def test_neuroglancer_links_of_real_species_name_their_layers_and_segments(released):
    out, _stats, _page, links = released
    states = [state_of_url(h) for h in links.hrefs if h.startswith("https://spelunker")]
    assert len(states) == len(links.row_ids)  # fly and mouse are real species: every row has its link
    fly = load_config("fly", CONFIG_DIR)
    mouse = load_config("mouse", CONFIG_DIR)
    sources = {(s["layers"][0]["source"], s["layers"][1]["source"]) for s in states}
    assert sources == {(fly.em_cloudpath, fly.seg_cloudpath), (mouse.em_cloudpath, mouse.seg_cloudpath)}
    assert all(s["position"] == [1000.0, 2000.0, 1000.0] for s in states)  # the row's point in 4 x 4 x 40 nm voxels


def test_counts_budgets_failures_and_build_are_stated(released):
    out, stats, page, _links = released
    for species, by_split in stats["by_species"].items():
        assert f"<h3>{species}</h3>" in page
        total = sum(by_split.values())
        assert "<td>share of rows</td>" in page and f"<td>{total:,}</td>" in page
    fly = load_config("fly", CONFIG_DIR)
    for t in SAMPLE_TYPES:
        budget = getattr(fly.budgets, t)
        assert f"<td>{budget:,}" in page if budget is not None else "<td>none</td>" in page
    for entry in stats["failures"]["by_stage_reason"]:
        assert entry["examples"] and f"<td>{entry['reason']}</td>" in page
        assert " ".join(entry["examples"]) in page
    assert "9.9.9" in page and "abc123" in page and "12.5" in page


def test_the_report_is_beside_the_release_not_in_it(released):
    out, _stats, _page, _links = released
    listed = (out / "shards.csv").read_text()
    assert "report" not in listed
    assert verify_release(out).ok
    size = sum(p.stat().st_size for p in (out / "report").rglob("*") if p.is_file())
    assert size < 2_000_000  # a few rows' thumbnails, not the release


def test_show_of_a_synthetic_fly_row_links_flywire_at_the_rows_point_and_time(tmp_path):
    """`python -m pipeline show` of a fly row (a synthetic release, the shipped fly config): FlyWire's layers, the
    point in FAFB's 4 x 4 x 40 nm voxels, both segments, the segmentation just before the merge."""
    from tests.conftest import cli_in_process

    rows = fakes.make_rows("fly", 10)
    row = next(r for r in rows if r["sample_type"] == "merge_edit")
    meta = {"species": "fly", "edit_point_nm": [400.0, 800.0, 4000.0], "render_center_nm": [420.0, 780.0, 4010.0],
            "before_root_ids": ["720575940611", "720575940622"], "timestamp": 1700000000,
            "timestamp_ms": 1700000000250}  # fmt: skip
    row["metadata"] = json.dumps(meta, sort_keys=True)
    parts = fakes.write_parts(tmp_path / "work", "fly", rows)
    split = fakes.write_split(tmp_path / "work", "fly", rows, forced={row["combined_sample_hash"]: "train"})
    out = tmp_path / "out"
    write_release({"fly": parts}, {"fly": split}, [], out, shard_bytes=40_000)
    shown = cli_in_process("show", row["combined_sample_hash"], "--out", str(out), "--png", str(tmp_path / "r.png"),
                           config_dir=CONFIG_DIR)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    url = next(line for line in shown.stdout.splitlines() if line.startswith("neuroglancer: ")).split(" ", 1)[1]
    state = state_of_url(url)
    fly = load_config("fly", CONFIG_DIR)
    em, seg = state["layers"]
    assert em["source"] == fly.em_cloudpath and seg["source"] == fly.seg_cloudpath
    assert "flywire" in em["source"] and "flywire_public" in seg["source"]
    assert state["dimensions"] == {"x": [4e-9, "m"], "y": [4e-9, "m"], "z": [40e-9, "m"]}
    assert state["position"] == [100.0, 200.0, 100.0]
    assert seg["segments"] == ["720575940611", "720575940622"] and seg["timestamp"] == 1700000000250 - 1000


def _stats(by_species: dict[str, dict[str, int]]) -> dict:
    """The counts write_release hands the report, for species whose rows are all merge edits."""
    by_type = {sp: {s: {"merge_edit": n} for s, n in splits.items()} for sp, splits in by_species.items()}
    return {
        "total_rows": sum(sum(v.values()) for v in by_species.values()),
        "by_species": by_species,
        "by_species_type": by_type,
        "split_edits": {"total": 0, "with_after_mask": 0},
        "shards": {s: {"n_shards": 1, "bytes": 100} for s in ("train", "validation", "test")},
        "failures": {"total": 0, "by_stage_reason": [], "by_species": {}},
    }


def _share_row(page: str, species: str) -> str:
    section = page.split(f"<h3>{species}</h3>", 1)[1].split("<h", 1)[0]
    return section.split("<td>share of rows</td>", 1)[1].split("</tr>", 1)[0]


def test_a_species_split_shares_are_of_its_own_rows_not_of_the_whole_release(tmp_path):
    from shard.report import write_report

    stats = _stats({"fly": {"train": 60, "validation": 20, "test": 20}, "mouse": {"train": 10, "validation": 0,
                    "test": 0}})  # fmt: skip
    page = write_report(tmp_path, stats, [], {}, {}).read_text()
    assert _share_row(page, "fly") == "<td>60.0%</td><td>20.0%</td><td>20.0%</td><td>100</td>"
    assert _share_row(page, "mouse") == "<td>100.0%</td><td>0.0%</td><td>0.0%</td><td>10</td>"


def test_the_report_command_streams_the_sidecars_and_draws_the_same_page(released, monkeypatch, tmp_path):
    """`python -m pipeline report` (rewrite_report) reads the sidecars a few rows at a time (SCAN_ROWS, here 3: many
    batches per sidecar, each key's first rows spread over them) and picks the same gallery and counts as the
    release writer, which saw every row."""
    import shutil

    from shard import release

    out, stats, page, links = released
    again = tmp_path / "out"
    shutil.copytree(out, again)
    monkeypatch.setattr(release, "SCAN_ROWS", 3)
    configs = {sp: load_config(sp, CONFIG_DIR) for sp in stats["by_species"]}
    build = {"code_version": "9.9.9"}
    index = release.rewrite_report(again, [], configs, build)
    relinks = _Links()
    redrawn = index.read_text()
    relinks.feed(redrawn)
    assert relinks.row_ids == links.row_ids
    for species in stats["by_species"]:
        assert _share_row(redrawn, species) == _share_row(page, species)


def test_scan_sidecar_keeps_the_smallest_hashes_of_each_key_across_batches(tmp_path, monkeypatch):
    """Rows of a key whose smallest hashes come in later batches, and batches without the key, still give the key's
    first rows by hash; counts add over batches."""
    from collections import Counter

    import pyarrow as pa

    from shard import release

    hashes = [f"{i:032x}" for i in (9, 3, 7, 1, 8, 2, 6, 5, 4, 0)]
    t = pa.table({"combined_sample_hash": hashes, "split": ["train"] * 10, "species": ["fly"] * 10,
                  "sample_type": ["merge_edit", "split_edit"] * 5, "has_after_mask": [False] * 10,
                  "shard_path": [f"train/s{i}.parquet" for i in range(10)]})  # fmt: skip
    path = tmp_path / "train.parquet"
    pq.write_table(t, path, row_group_size=4)
    monkeypatch.setattr(release, "SCAN_ROWS", 2)
    counts, firsts = Counter(), {}
    release.scan_sidecar(path, counts, firsts, per_key=2)
    assert [r["combined_sample_hash"][-1] for r in firsts[("fly", "merge_edit")]] == ["4", "6"]
    assert [r["combined_sample_hash"][-1] for r in firsts[("fly", "split_edit")]] == ["0", "1"]
    assert counts == {("train", "fly", "merge_edit", False): 5, ("train", "fly", "split_edit", False): 5}


def test_a_gallery_row_that_cannot_be_drawn_is_named_in_one_line_and_the_page_is_written(tmp_path, capsys):
    """Undecodable geometry in a gallery row (a zip that is not one): the release and its report are written, the
    page and stderr name that row in one line each, the other rows are drawn."""
    rows = fakes.make_rows("fly", 10)
    bad = next(r for r in rows if r["sample_type"] == "merge_edit")
    bad["geometry"] = b"PK\x03\x04" + bytes(64)  # the npz magic the rules check, then nothing of a zip
    parts = fakes.write_parts(tmp_path / "work", "fly", rows)
    # a test row: the card's channel figure draws the first train rows (a release input, which must decode)
    split = fakes.write_split(tmp_path / "work", "fly", rows, forced={bad["combined_sample_hash"]: "test"})
    out = tmp_path / "out"
    write_release({"fly": parts}, {"fly": split}, [], out, shard_bytes=40_000)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("report:")]
    h = bad["combined_sample_hash"]
    assert len(err) == 1 and h in err[0] and "BadZipFile" in err[0] and "merge_edit" in err[0]
    page = (out / "report" / "index.html").read_text()
    assert "cannot be drawn" in page and f'id="{h}"' in page
    assert not list((out / "report").rglob(f"{h}*.png"))  # nothing half-drawn left behind
    links = _Links()
    links.feed(page)
    assert len(links.row_ids) == len(rows) - 1 and h not in links.row_ids  # 2 rows of each type, all shown


def test_a_figure_row_that_cannot_be_decoded_stops_the_release_in_one_line_naming_it(tmp_path):
    """The card's channel figure is part of the release: its row must decode; when it does not, the release stops
    with one line naming the row (not a zipfile traceback) and leaves no release behind."""
    import pytest

    from shard.release import ReleaseError
    from shard.rules import DUAL_TYPES

    rows = fakes.make_rows("fly", 10)
    bad = next(r for r in rows if r["sample_type"] in DUAL_TYPES)  # rows are in hash order: the figure's dual row
    bad["geometry"] = b"PK\x03\x04" + bytes(64)
    parts = fakes.write_parts(tmp_path / "work", "fly", rows)
    split = fakes.write_split(tmp_path / "work", "fly", rows, forced={r["combined_sample_hash"]: "train" for r in rows})
    with pytest.raises(ReleaseError, match=f"channel figure cannot draw row {bad['combined_sample_hash']}.*BadZipFile"):
        write_release({"fly": parts}, {"fly": split}, [], tmp_path / "out", shard_bytes=40_000)
    assert not (tmp_path / "out").exists()
