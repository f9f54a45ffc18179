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
