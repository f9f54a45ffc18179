"""What a row keeps of its EM views: the metadata render adds, and the per-view missing-chunk rule.

Fetch fails a sample whose EM window has too much from absent chunks (pipeline.fetch); the views are cut from
the window after recentring, and a thin slab of absent chunks can cross a view's plane while being a small
part of the window, so render checks each view's own pixels against the same limit.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.errors import SampleError
from pipeline.fetch import MISSING_REASON

_LAYER = {"em": "EM", "seg": "segmentation"}


def check_views_missing(info: dict, max_fraction: float) -> None:
    """Raise em_chunks_missing / seg_chunks_missing when a view has more than `max_fraction` of its pixels on
    voxels from absent chunks (render_em_views' info['missing_view_fraction'], absent when nothing was)."""
    fractions = info.get("missing_view_fraction") or {}
    for which in ("em", "seg"):
        frac = fractions.get(which, 0.0)
        if frac > max_fraction:
            raise SampleError(
                MISSING_REASON[which],
                f"an EM view has {frac:.1%} of its pixels on absent {_LAYER[which]} chunks "
                f"(max_missing_fraction {max_fraction:g})",
            )


def em_metadata(arrays: dict[str, np.ndarray], info: dict) -> dict:
    """Metadata keys of the EM views (pipeline.core.samples.RENDER_META_KEYS, those from EM): the views' centre in
    nm (absolute, after recentring), the best plane's normal, the output-resolution scores of the best and the
    cardinal views, and the fractions of the EM window from absent EM and segmentation chunks."""
    origin = np.asarray(arrays.get("em_origin_nm", np.zeros(3)), dtype=np.float64)
    centre = origin + np.asarray(info["em_view_center_nm"], dtype=np.float64)
    return {
        "em_view_center_nm": [round(float(v), 3) for v in centre],
        "em_best_normal": [round(float(v), 6) for v in info["em_best_normal"]],
        "em_best_score": round(float(info["em_best_score"]), 6),
        "em_cardinal_scores": {k: round(float(v), 6) for k, v in info["em_cardinal_scores"].items()},
        "em_missing_fraction": round(float(arrays.get("em_missing_fraction", 0.0)), 6),
        "seg_missing_fraction": round(float(arrays.get("seg_missing_fraction", 0.0)), 6),
    }
