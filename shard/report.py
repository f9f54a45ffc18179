"""The release report, `report/index.html`: a static page to look at a release before reading it.

What an auditor checks first: is each sample type what its name says (a gallery of a few rows per species and
type, chosen by hash, each with its geometry channels, EM views and split masks, its labels, its `show`
picture and its Neuroglancer link), how the counts compare with the targets (the budgets and split ratios of
each species' config), where the failures went (by stage and reason, with sample ids), and what built it
(code version, config digests, stage timings from the markers).

The page is written by the shard stage into the release beside the card, opened from disk with no server and
no script. It is not listed in shards.csv (it is a view of the release, not data of it): verify checks the
shards, not the report. Its size does not grow with the release: the gallery has a fixed number of rows per
species and type, thumbnails are small PNGs, and the tables have a line per species, type, split or reason.

A gallery row that cannot be drawn (undecodable geometry or images) is named in one line, on the page and on stderr,
and the page is written without its pictures: the report is written at the end of a release, and one bad row must
not cost the release its page (verify --deep is what judges the rows).
"""

from __future__ import annotations

import html
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from config.schema import SpeciesConfig
from core import atomic
from core.release_schema import EM_COLUMNS, SPLIT_MASK_COLUMNS, SPLITS
from core.samples import SAMPLE_TYPES
from render.contact_sheet import VIEW_NAMES, channel_tiles, sample_sheet
from render.encode import decode_geometry, decode_png, encode_png
from shard.neuroglancer import neuroglancer_state, neuroglancer_url

REPORT_DIR = "report"
GALLERY_ROWS = 3  # per species and sample type
THUMB = 56  # px, a geometry channel
EM_THUMB = 112  # px, an EM view or a split mask
SHOW_TILE = 112  # px, a tile of a row's show picture
LABELS = ("split", "same_neuron", "task_routing", "false_split_correction_label", "false_merge_identification_label",
          "has_after_mask")  # fmt: skip
_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.row { display: flex; gap: 12px; align-items: flex-start; margin: 10px 0; padding: 8px; border: 1px solid #ddd; }
.row img { image-rendering: pixelated; }
.labels { font: 12px monospace; white-space: pre-wrap; overflow-wrap: anywhere; min-width: 26em; max-width: 40em; }
code { background: #f4f4f4; padding: 0 3px; }
"""


def _png(arr: np.ndarray) -> bytes:
    """The release's own PNG encoder (libdeflate): deterministic bytes, ~10x faster than Pillow's optimize."""
    return encode_png(np.ascontiguousarray(arr, dtype=np.uint8))


def _image(cell: object) -> np.ndarray | None:
    """A release image cell ({bytes, path} struct or bytes) as an array; None when the cell is null."""
    data = cell.get("bytes") if isinstance(cell, dict) else cell
    return None if data is None else decode_png(bytes(data))


def geometry_thumb(geometry: bytes) -> np.ndarray:
    """The 3 x 7 geometry channels (a line per view) as one uint8 grid of THUMB px tiles."""
    geom = decode_geometry(geometry)
    lines = []
    for view in range(len(VIEW_NAMES)):
        small = [np.asarray(Image.fromarray(t).resize((THUMB,) * 2, Image.NEAREST)) for t in channel_tiles(geom, view)]
        lines.append(np.concatenate(small, axis=1))
    return np.concatenate(lines, axis=0)


def strip(images: Iterable[np.ndarray], size: int) -> np.ndarray:
    """Images side by side, each resized to size x size, as RGB."""
    tiles = [np.asarray(Image.fromarray(a.astype(np.uint8)).convert("RGB").resize((size, size))) for a in images]
    return np.concatenate(tiles, axis=1)


def pick_gallery(rows_by_key: dict[tuple[str, str], list[dict]], per_key: int = GALLERY_ROWS) -> list[dict]:
    """The first `per_key` rows (by combined_sample_hash) of each (species, sample type): a sample that is the
    same for the same release, and as good as random (the hash is)."""
    out = []
    for key in sorted(rows_by_key, key=lambda k: (k[0], SAMPLE_TYPES.index(k[1]))):
        out += sorted(rows_by_key[key], key=lambda r: r["combined_sample_hash"])[:per_key]
    return out


def _viewer(row: dict, configs: dict[str, SpeciesConfig]) -> str:
    cfg = configs.get(row["species"])
    if cfg is not None and cfg.source == "cave":
        url = neuroglancer_url(neuroglancer_state(cfg, row["sample_type"], json.loads(row["metadata"])))
        return f'<a href="{html.escape(url)}">Neuroglancer</a>'
    return f"Neuroglancer: <code>python -m pipeline show {row['combined_sample_hash']} --neuroglancer</code>"


def _pictures(row: dict, title: str) -> dict[str, np.ndarray]:
    """Every picture of the row's block, decoded and drawn before anything is written (a row that cannot be drawn
    leaves no file behind)."""
    files = {"geometry": geometry_thumb(row["geometry"])}
    em = [a for a in (_image(row[c]) for c in EM_COLUMNS) if a is not None]
    if em:
        files["em"] = strip(em, EM_THUMB)
    masks = [a for a in (_image(row[c]) for c in SPLIT_MASK_COLUMNS) if a is not None]
    if masks:
        files["split"] = strip(masks, EM_THUMB)
    files["show"] = np.asarray(sample_sheet(row, title, tile=SHOW_TILE).convert("RGB"))
    return files


def _labels(row: dict) -> str:
    h = row["combined_sample_hash"]
    try:
        meta = json.loads(row["metadata"])
    except (TypeError, ValueError):
        meta = {}
    return "\n".join(
        [f"combined_sample_hash: {h}", f"source_archive_sample_hash: {row.get('source_archive_sample_hash')}"]
        + [f"{k}: {json.dumps(row.get(k))}" for k in LABELS]
        + [f"{k}: {json.dumps(meta[k])}" for k in ("operation_id", "root_id", "pre_pt_root_id", "post_pt_root_id")
           if isinstance(meta, dict) and meta.get(k) is not None]  # fmt: skip
    )


def undrawable_line(row: dict, exc: BaseException) -> str:
    """One line naming a gallery row the report cannot draw and why (on the page and on stderr)."""
    why = " ".join(str(exc).split())  # one line, whatever the library's message
    return (f"report: gallery row {row.get('combined_sample_hash')} ({row.get('species')} {row.get('sample_type')}, "
            f"{row.get('split')}) cannot be drawn: {type(exc).__name__}: {why}; shown without its pictures "
            "(`python -m pipeline verify --deep` checks every row)")  # fmt: skip


def _gallery_row(row: dict, report_dir: Path, configs: dict[str, SpeciesConfig]) -> str:
    """Write the row's thumbnails and show picture; its HTML block. A row that cannot be drawn is a block naming it
    and why, and one line on stderr."""
    h = row["combined_sample_hash"]
    labels = _labels(row)
    title = f"{h}  {row['sample_type']}  {row['species']}  {row['split']}"
    try:
        files = _pictures(row, title)
    except Exception as exc:  # undecodable bytes of any kind (zip, npz, PNG): the page names the row instead
        line = undrawable_line(row, exc)
        print(line, file=sys.stderr)
        return (f'<div class="row undrawable" id="{h}"><div class="labels">{html.escape(labels)}\n'
                f'<strong>{html.escape(line)}</strong></div></div>')  # fmt: skip
    show = f"rows/{h}.png"
    atomic.write_bytes(report_dir / show, _png(files.pop("show")))
    imgs = []
    for kind, arr in files.items():
        rel = f"img/{h}-{kind}.png"
        atomic.write_bytes(report_dir / rel, _png(arr))
        imgs.append(f'<img src="{rel}" alt="{kind} of {h}" title="{kind}">')
    return (
        f'<div class="row" id="{h}"><div class="labels">{html.escape(labels)}\n'
        f'<a href="{show}">show picture</a> · {_viewer(row, configs)}</div>'
        f"<div>{'<br>'.join(imgs)}</div></div>"
    )


def _table(header: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pct(n: int, total: int) -> str:
    return f"{100.0 * n / total:.1f}%" if total else "-"


def _counts_section(stats: dict, configs: dict[str, SpeciesConfig]) -> list[str]:
    """Per species: rows by type and split beside the type's budget; split shares beside the target ratios."""
    n_shards = sum(v["n_shards"] for v in stats["shards"].values())
    n_bytes = sum(v["bytes"] for v in stats["shards"].values())
    out = ["<h2>Counts</h2>", f"<p>{stats['total_rows']:,} rows in {n_shards} shards ({n_bytes:,} bytes).</p>"]
    for species, by_split in stats["by_species"].items():
        cfg = configs.get(species)
        by_type = stats["by_species_type"][species]
        rows = []
        for t in SAMPLE_TYPES:
            n = {s: by_type.get(s, {}).get(t, 0) for s in SPLITS}
            budget = getattr(cfg.budgets, t) if cfg is not None else None
            total = sum(n.values())
            flag = " (below budget)" if budget is not None and total < budget else ""
            rows.append([t, *(f"{n[s]:,}" for s in SPLITS), f"{total:,}", f"{budget:,}{flag}" if budget is not None
                         else "none"])  # fmt: skip
        total = sum(by_split.values())
        ratios = cfg.split_ratios if cfg is not None else (None, None, None)
        shares = [f"{_pct(by_split[s], total)} (target {100 * r:.1f}%)" if r is not None else _pct(by_split[s], total)
                  for s, r in zip(SPLITS, ratios, strict=True)]  # fmt: skip
        out += [f"<h3>{html.escape(species)}</h3>",
                _table(["sample_type", *SPLITS, "total", "budget (config)"], rows),
                _table(["", *SPLITS, "total"], [["share of rows", *shares, f"{total:,}"]])]  # fmt: skip
    se = stats["split_edits"]
    out.append(f"<p>Split-mask coverage: {se['with_after_mask']:,} / {se['total']:,} split_edits "
               f"({_pct(se['with_after_mask'], se['total'])}).</p>")  # fmt: skip
    return out


def _failures_section(failures: dict) -> list[str]:
    out = ["<h2>Failures</h2>", f"<p>{failures['total']:,} candidate samples could not be built and are not in the "
           "release (<code>python -m pipeline status --failed</code> lists them with their reasons).</p>"]  # fmt: skip
    if failures["total"]:
        rows = [[f["stage"], f["reason"], f"{f['n']:,}", "retries them" if f.get("retried") else "keeps them",
                 " ".join(f.get("examples", []))] for f in failures["by_stage_reason"]]  # fmt: skip
        out.append(_table(["stage", "reason", "samples", "the next build", "a few sample ids"], rows))
        out.append("<p>A server that could not give an item (<code>*_unavailable</code>) or an unexpected exception "
                   "(<code>unexpected_*</code>): the next build asks again for those alone. Every other reason is "
                   "the data's own and is kept until the sample's inputs change.</p>")  # fmt: skip
        out.append("<p>Per species: " + html.escape(", ".join(f"{k} {v:,}" for k, v in failures["by_species"].items()))
                   + ".</p>")  # fmt: skip
    return out


def _build_section(build: dict) -> list[str]:
    out = ["<h2>Build</h2>", f"<p>Code version <code>{html.escape(str(build.get('code_version', '?')))}</code>.</p>"]
    species = build.get("species", {})
    if species:
        digests = [[sp, v.get("config_digest", "?"), v.get("source", "?")] for sp, v in sorted(species.items())]
        out.append(_table(["species", "config digest", "source"], digests))
        rows = [[sp, st, t["partitions"], f"{t['seconds']:.1f}", t.get("finished", "?")]
                for sp, v in sorted(species.items()) for st, t in v.get("stages", {}).items()]  # fmt: skip
        if rows:
            out.append("<p>Stage timings, from the partitions' markers (seconds summed over partitions; finished: the "
                       "last marker, UTC):</p>")  # fmt: skip
            out.append(_table(["species", "stage", "partitions", "seconds", "finished"], rows))
    return out


def write_report(
    release_dir: Path,
    stats: dict,
    gallery: list[dict],
    configs: dict[str, SpeciesConfig],
    build: dict,
    folder: str = REPORT_DIR,
) -> Path:
    """Write `release_dir/<folder>/` (index.html, img/, rows/; links point one level up to the release);
    returns the index path."""
    report_dir = Path(release_dir) / folder
    blocks: list[str] = ["<h2>Gallery</h2>", "<p>The first rows by hash of each species and sample type: geometry "
                         "channels (front, side, top; silhouette, depth, normals x y z, mask A, mask B), EM views "
                         "(best, xy, xz, yz) and, for split edits with an after state, split masks.</p>"]  # fmt: skip
    current = None
    for row in gallery:
        key = (row["species"], row["sample_type"])
        if key != current:
            blocks.append(f"<h3>{html.escape(key[0])} · {html.escape(key[1])}</h3>")
            current = key
        blocks.append(_gallery_row(row, report_dir, configs))
    body = [
        "<h1>ConnectomeBench2 release report</h1>",
        "<p>The dataset card is <a href=\"../README.md\">README.md</a>; shards are listed in "
        "<a href=\"../shards.csv\">shards.csv</a>.</p>",
        *_counts_section(stats, configs),
        *blocks,
        *_failures_section(stats["failures"]),
        *_build_section(build),
    ]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>ConnectomeBench2 release report</title>'
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    index = report_dir / "index.html"
    atomic.write_text(index, page)
    return index
