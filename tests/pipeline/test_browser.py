"""In a real browser (Debian's chromium, driven by Playwright; WebGL through SwiftShader): the release report loads
from disk with no console error and every image decodes; `show HASH --neuroglancer` serves a viewer that loads
the demo world's layers with the row's two segments selected and drawn.

Chromium comes from `make setup-browser` (run by `make test` and CI); where it is absent these tests are skipped
and say why (pytest -rs)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.conftest import REPO, wait_until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH: run `make setup-browser` (Debian's chromium, needs root and apt)"
)
ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _page(browser, errors: list):
    page = browser.new_page(viewport={"width": 1100, "height": 760})
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    return page


def test_the_report_loads_from_disk_without_errors_and_every_image_decodes(browser, tiny_release, tmp_path):
    _work, out = tiny_release
    errors: list[str] = []
    page = _page(browser, errors)
    page.goto((out / "report" / "index.html").as_uri())
    page.wait_for_load_state("load")
    images = page.evaluate("() => Array.from(document.images).map(i => [i.getAttribute('src'), i.complete,"
                           " i.naturalWidth, i.naturalHeight])")  # fmt: skip
    assert len(images) >= 10
    broken = [src for src, complete, w, h in images if not (complete and w > 0 and h > 0)]
    assert not broken, broken
    assert errors == []
    assert page.locator("h2", has_text="Failures").count() == 1 and page.locator("div.row").count() >= 5
    page.screenshot(path=str(tmp_path / "report.png"), full_page=False)
    assert np.asarray(Image.open(tmp_path / "report.png").convert("L")).std() > 10  # a page, not a blank


def _coloured(png: bytes) -> float:
    """Share of strongly coloured pixels: the EM is grey, so these are the selected segments."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return float(((rgb.max(axis=2) - rgb.min(axis=2)) > 80).mean())


def test_show_serves_a_local_neuroglancer_with_the_rows_segments(browser, tiny_release, tiny_configs, tmp_path):
    work, out = tiny_release
    rows = pq.read_table(out / "metadata" / "train.parquet").to_pylist()
    row = next(r for r in rows if r["sample_type"] == "merge_edit")
    env = {**os.environ, "CB2_CONFIG_DIR": str(tiny_configs)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "show", row["combined_sample_hash"], "--out", str(out), "--work",
         str(work), "--png", str(tmp_path / "row.png"), "--neuroglancer"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines: dict[str, str] = {}
        while "neuroglancer" not in lines:
            line = proc.stdout.readline()
            assert line, f"show ended without a viewer URL: {proc.stderr.read()}"
            key, _, value = line.partition(": ")
            lines[key] = value.strip()
        state = json.loads(lines["state"])
        em, seg = state["layers"]
        assert em["source"] == f"precomputed://{lines['layers']}/em"
        assert seg["source"] == f"precomputed://{lines['layers']}/seg" and len(seg["segments"]) == 2
        assert [g[0] for g in seg["equivalences"]] == seg["segments"]  # each segment stands for its supervoxels
        import requests

        assert requests.get(f"{lines['layers']}/em/info", timeout=30).json()["type"] == "image"
        errors: list[str] = []
        page = _page(browser, errors)
        page.goto(lines["neuroglancer"])
        # Neuroglancer sets its state from the URL after the viewer exists: wait for the state itself
        page.wait_for_function(
            "() => { const s = window.viewer && window.viewer.state.toJSON();"
            " return !!(s && s.layers && s.layers.length === 2 && s.layers[1].segments); }",
            timeout=180_000,
        )
        got = page.evaluate("() => window.viewer.state.toJSON()")
        assert [layer["name"] for layer in got["layers"]] == ["em", "segmentation"]
        assert sorted(got["layers"][1]["segments"]) == sorted(seg["segments"])
        shots: list[bytes] = []

        def drawn() -> bool:  # the segments are drawn once the chunks have loaded
            shots.append(page.screenshot())
            return _coloured(shots[-1]) > 0.01

        wait_until(drawn, "the viewer to draw the selected segments", timeout=180, proc=proc)
        (tmp_path / "neuroglancer.png").write_bytes(shots[-1])
        assert not [e for e in errors if "page error" in e], errors
    finally:
        proc.terminate()
        proc.wait(timeout=60)
