"""figures/channel_decomposition.png: the seven geometry channels (front view) of one dual-segment
and one single-segment row, drawn with pillow. Deterministic bytes for the same rows."""

from __future__ import annotations

import io

from PIL import Image, ImageDraw, ImageFont

from render.contact_sheet import channel_tiles
from render.encode import decode_geometry

CHANNEL_NAMES = ("silhouette", "depth", "normal_x", "normal_y", "normal_z", "mask A", "mask B")
TILE = 224
PAD = 6
LEFT = 190
TOP = 30


def _font() -> ImageFont.ImageFont:
    return ImageFont.load_default()


def channel_figure(dual_row: dict | None, single_row: dict | None, view: int = 0) -> bytes:
    """PNG bytes: one line of seven tiles per given row (dual first), labelled."""
    rows = [("dual", r) for r in (dual_row,) if r is not None] + [("single", r) for r in (single_row,) if r is not None]
    if not rows:
        raise ValueError("channel_figure needs at least one row")
    width = LEFT + 7 * (TILE + PAD)
    height = TOP + len(rows) * (TILE + PAD)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for c, name in enumerate(CHANNEL_NAMES):
        draw.text((LEFT + c * (TILE + PAD) + 4, 8), f"ch {c}: {name}", fill=(0, 0, 0), font=font)
    for n, (kind, row) in enumerate(rows):
        y = TOP + n * (TILE + PAD)
        label = "\n".join(
            [row["sample_type"], f"{kind}-segment", row["species"], row["combined_sample_hash"][:12], "front view"]
        )
        draw.multiline_text((6, y + 8), label, fill=(0, 0, 0), font=font, spacing=4)
        for c, tile in enumerate(channel_tiles(decode_geometry(row["geometry"]), view)):
            canvas.paste(Image.fromarray(tile).convert("RGB"), (LEFT + c * (TILE + PAD), y))
    out = io.BytesIO()
    canvas.save(out, format="PNG", optimize=False)
    return out.getvalue()
