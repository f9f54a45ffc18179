"""A preview image: one row per sample, the 7 geometry channels of each view, the 4 EM views and split masks."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from core.release_schema import EM_COLUMNS, SPLIT_MASK_COLUMNS
from render.encode import decode_geometry, decode_png

TILE = 112
LABEL_W = 150


def _as_array(x, png: bool) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, dict):
        x = x.get("bytes")
        if x is None:
            return None
    if isinstance(x, (bytes, bytearray)):
        return decode_png(bytes(x)) if png else decode_geometry(bytes(x))
    return np.asarray(x)


def channel_tiles(geom: np.ndarray, view: int = 0) -> list[np.ndarray]:
    """Seven uint8 (224, 224) tiles of one view: binary channels as is, depth shown near = bright
    inside the silhouette, normals mapped from [-1, 1] to [0, 255] inside the silhouette."""
    g = geom[view].astype(np.float32)
    sil = g[0] > 0
    tiles = []
    for c in range(7):
        ch = g[c]
        if c == 1:
            img = np.where(sil, 1.0 - 0.8 * np.clip(ch, 0, 1), 0.0)
        elif c in (2, 3, 4):
            img = np.where(sil, (np.clip(ch, -1, 1) + 1) / 2, 0.0)
        else:
            img = np.clip(ch, 0, 1)
        tiles.append(np.round(img * 255).astype(np.uint8))
    return tiles


def contact_sheet(samples: list[dict], all_views: bool = False) -> Image.Image:
    """samples: dicts with `sample_type`, `geometry` (array or npz bytes) and optional EM / split-mask arrays,
    PNG bytes or {"bytes": ...} image structs. Front view only unless all_views."""
    n_views = 3 if all_views else 1
    n_cols = 7 * n_views + len(EM_COLUMNS) + len(SPLIT_MASK_COLUMNS)
    sheet = Image.new("RGB", (LABEL_W + n_cols * TILE, max(1, len(samples)) * TILE), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for r, s in enumerate(samples):
        y = r * TILE
        draw.text((4, y + 4), str(s.get("sample_type", "?")), fill=(255, 255, 255))
        if s.get("combined_sample_hash"):
            draw.text((4, y + 20), str(s["combined_sample_hash"])[:12], fill=(180, 180, 180))
        x = LABEL_W
        geom = _as_array(s.get("geometry"), png=False)
        for v in range(n_views):
            tiles = channel_tiles(geom, v) if geom is not None else [None] * 7
            for tile in tiles:
                if tile is not None:
                    sheet.paste(Image.fromarray(tile, mode="L").resize((TILE, TILE)), (x, y))
                x += TILE
        for key in EM_COLUMNS + SPLIT_MASK_COLUMNS:
            img = _as_array(s.get(key), png=True)
            if img is not None:
                mode = "RGB" if img.ndim == 3 else "L"
                sheet.paste(
                    Image.fromarray(img.astype(np.uint8), mode=mode).convert("RGB").resize((TILE, TILE)), (x, y)
                )
            x += TILE
    return sheet


CHANNEL_NAMES = ("silhouette", "depth", "normal x", "normal y", "normal z", "mask A", "mask B")
VIEW_NAMES = ("front", "side", "top")


def sample_sheet(row: dict, title: str = "", tile: int = 160) -> Image.Image:
    """One row, labelled: the 3 x 7 geometry channels (a line per view), then the 4 EM views and, when
    present, the 3 split masks. `row` as in contact_sheet (arrays, PNG bytes or image structs)."""
    label_w, head, gap = 70, 18, 4
    geom = _as_array(row.get("geometry"), png=False)
    images = [(c, _as_array(row.get(c), png=True)) for c in EM_COLUMNS + SPLIT_MASK_COLUMNS]
    images = [(c, a) for c, a in images if a is not None]
    cols = max(7, len(images))
    width = label_w + cols * (tile + gap)
    height = 30 + 4 * (head + tile + gap)
    sheet = Image.new("RGB", (width, height), (30, 30, 30))
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 8), title, fill=(255, 255, 255))
    y = 30
    for v, view in enumerate(VIEW_NAMES):
        draw.text((6, y + head + tile // 2 - 6), view, fill=(220, 220, 220))
        tiles = channel_tiles(geom, v) if geom is not None else []
        for c, t in enumerate(tiles):
            x = label_w + c * (tile + gap)
            draw.text((x + 2, y + 3), CHANNEL_NAMES[c], fill=(200, 200, 200))
            sheet.paste(Image.fromarray(t, mode="L").resize((tile, tile), Image.NEAREST), (x, y + head))
        y += head + tile + gap
    draw.text((6, y + head + tile // 2 - 6), "EM /\nsplit", fill=(220, 220, 220))
    for c, (name, a) in enumerate(images):
        x = label_w + c * (tile + gap)
        draw.text((x + 2, y + 3), name.replace("_before", "").replace("split_mask_", "split "), fill=(200, 200, 200))
        img = Image.fromarray(a.astype(np.uint8), mode="RGB" if a.ndim == 3 else "L").convert("RGB")
        sheet.paste(img.resize((tile, tile), Image.NEAREST), (x, y + head))
    return sheet
