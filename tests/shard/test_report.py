"""The release report (shard/report.py): written with the release, every link and image there, the right rows."""

from __future__ import annotations

import html.parser
import io

import pyarrow.parquet as pq
import pytest
from PIL import Image

from config import load_config
from config.schema import CONFIG_DIR
from pipeline.core.samples import SAMPLE_TYPES
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
