"""Neuroglancer states for release rows: the row's segments, at its point and at the time its labels were resolved.

Spelunker, CAVE's Neuroglancer, reads a graphene segmentation layer's chunkedgraph at the layer's `timestamp`
(epoch milliseconds; seung-lab/neuroglancer src/layer/segmentation/json_keys.ts TIMESTAMP_JSON_KEY), so the
selected roots are the ones the row names even after later edits. Positions are given in the species' own
voxels (`viewer_voxel_nm`, the dimensions its public links use) so that a link reads like the species' own.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence

from config.schema import SpeciesConfig
from core.samples import COORD_KEY

NEUROGLANCER = "https://spelunker.cave-explorer.org/"


def segment_roots(sample_type: str, meta: dict) -> list[str]:
    """Root ids of segments A and B (B absent on junction rows), from the row's metadata, as the card names them."""
    if sample_type == "merge_edit":
        return list(meta.get("before_root_ids") or [])[:2]
    if sample_type == "split_edit":
        return list(meta.get("after_root_ids") or [])[:2]
    if sample_type == "adjacent_control":
        return [r for r in (meta.get("base_root"), meta.get("adjacent_root")) if r]
    if sample_type == "synapse_control":
        return [r for r in (meta.get("pre_pt_root_id"), meta.get("post_pt_root_id")) if r]
    return [meta["root_id"]] if meta.get("root_id") else []


def labels_time_ms(sample_type: str, meta: dict) -> int | None:
    """When the row's EM labels were resolved, epoch ms: T - 1 s for merges and adjacent controls, T for
    splits (T = timestamp_ms), cutout_timestamp for controls."""
    if meta.get("timestamp_ms") is not None:
        return int(meta["timestamp_ms"]) - (0 if sample_type == "split_edit" else 1000)
    if meta.get("cutout_timestamp") is not None:
        return int(meta["cutout_timestamp"]) * 1000
    return None


def row_point_nm(sample_type: str, meta: dict) -> list[float]:
    """The row's point (its coordinate key, else the render centre), nm."""
    return [float(v) for v in (meta.get(COORD_KEY[sample_type]) or meta["render_center_nm"])]


def viewer_state(
    em_source: str,
    seg_source: str,
    sample_type: str,
    meta: dict,
    voxel_nm: Sequence[float] | None = None,
    segments: list[str] | None = None,
    equivalences: list[list[str]] | None = None,
    window_nm: float = 800.0,
) -> dict:
    """A Neuroglancer state: an EM and a segmentation layer, the row's segments selected, centred on its point in
    voxels of `voxel_nm` (nm when None), the segmentation at the time the row's EM labels were resolved (or, on a
    layer of supervoxels, `equivalences` grouping each segment's supervoxels at that time). The 2-D panels show the
    row's EM window (`window_nm`) across ~400 px, the 3-D panel four times it."""
    voxel = [float(v) for v in (voxel_nm or (1.0, 1.0, 1.0))]
    seg = {"type": "segmentation", "source": seg_source, "name": "segmentation",
           "segments": segments if segments is not None else segment_roots(sample_type, meta)}  # fmt: skip
    when = labels_time_ms(sample_type, meta)
    if when is not None:
        seg["timestamp"] = when
    if equivalences:  # a supervoxel layer (no chunkedgraph): each segment is the group of its supervoxels
        seg["equivalences"] = equivalences
    return {
        "dimensions": {axis: [v * 1e-9, "m"] for axis, v in zip(("x", "y", "z"), voxel, strict=True)},
        "position": [p / v for p, v in zip(row_point_nm(sample_type, meta), voxel, strict=True)],
        "crossSectionScale": window_nm / 400.0 / voxel[0],
        "projectionScale": 4.0 * window_nm / voxel[0],
        "layers": [{"type": "image", "source": em_source, "name": "em"}, seg],
        "selectedLayer": {"layer": "segmentation"},
        "layout": "xy-3d",
    }


def neuroglancer_state(cfg: SpeciesConfig, sample_type: str, meta: dict) -> dict:
    """The state of a row of a real species: the EM and segmentation layers of its config."""
    return viewer_state(cfg.em_cloudpath, cfg.seg_cloudpath, sample_type, meta, cfg.viewer_voxel_nm,
                        window_nm=cfg.em_window_nm)  # fmt: skip


def neuroglancer_url(state: dict, base: str = NEUROGLANCER) -> str:
    return base + "#!" + urllib.parse.quote(json.dumps(state, separators=(",", ":")), safe="")


def state_of_url(url: str) -> dict:
    """The state a link carries (the inverse of neuroglancer_url)."""
    return json.loads(urllib.parse.unquote(url.split("#!", 1)[1]))
