"""Rendering: mesh geometry, EM views and split masks, and their encodings (pure functions of fetched data).

OUTPUT_VERSION is raised whenever this package writes other bytes for the same inputs; the render stage's keys
include it, so existing work dirs re-render (and re-shard) without refetching. 1: PNGs by Pillow; 2: PNGs
Up-filtered and deflated by libdeflate (render/encode.py).
"""

OUTPUT_VERSION = 2
