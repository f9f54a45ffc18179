"""Compare two releases row by row: the same samples, labels and splits, identical EM views, and geometry whose
silhouettes agree per view (IoU) where the two were rendered from different mesh encodings.

Used to check a build through the twin of the real services against the file-based demo build (meshes come
Draco-quantized from the twin), and by anyone who rebuilds a release and wants to know how it differs.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from core.release_schema import EM_COLUMNS, NON_IMAGE_COLUMNS, SPLIT_DIRS, SPLIT_MASK_COLUMNS, SPLITS
from render.encode import decode_geometry


@dataclass
class Comparison:
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    rows: int = 0
    column_differences: dict[str, int] = field(default_factory=dict)  # column -> rows that differ
    em_views_differ: int = 0
    split_masks_differ: int = 0
    split_mask_agreement: list[float] = field(default_factory=list)  # per differing mask: fraction of equal pixels
    ious: list[tuple[float, str, int]] = field(default_factory=list)  # geometry silhouette IoU: (iou, hash, view)

    @property
    def min_iou(self) -> float:
        return min((i for i, _, _ in self.ious), default=1.0)

    def below(self, iou_bound: float) -> list[tuple[float, str, int]]:
        return sorted(t for t in self.ious if t[0] < iou_bound)

    def ok(self, iou_bound: float) -> bool:
        return (
            not self.only_a
            and not self.only_b
            and not self.column_differences
            and not self.em_views_differ
            and self.min_iou >= iou_bound
        )

    def text(self, iou_bound: float) -> str:
        lines = [
            f"{self.rows} rows in both; {len(self.only_a)} only in A, {len(self.only_b)} only in B",
            "non-image columns: "
            + (
                ", ".join(f"{c} differs in {n} rows" for c, n in sorted(self.column_differences.items())) or "identical"
            ),  # fmt: skip
            f"EM views: {self.em_views_differ} rows differ; split masks: {self.split_masks_differ} rows differ"
            + (
                f" (least pixel agreement of a mask {min(self.split_mask_agreement):.4f}: they are drawn from the "
                "same meshes as the geometry)"
                if self.split_mask_agreement
                else ""
            ),
            f"geometry silhouettes: min IoU {self.min_iou:.4f} over {len(self.ious)} views, "
            f"{len(self.below(iou_bound))} below {iou_bound}",
        ]
        return "\n".join(lines)


def _rows(out: Path) -> dict[str, dict]:
    rows = {}
    for split in SPLITS:
        for path in sorted((out / SPLIT_DIRS[split]).glob("*.parquet")):
            for r in pq.read_table(path).to_pylist():
                rows[r["combined_sample_hash"]] = r
    return rows


def silhouette_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of the silhouette channel (0) of two (3, 7, H, W) geometry arrays, per view."""
    sa, sb = a[:, 0] > 0, b[:, 0] > 0
    inter = (sa & sb).sum(axis=(1, 2))
    union = (sa | sb).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def pixel_agreement(a: dict | None, b: dict | None) -> float:
    """The fraction of pixels two PNG cells share (0.0 when only one of them is present)."""
    if a is None or b is None or a.get("bytes") is None or b.get("bytes") is None:
        return 0.0
    pa_, pb = (np.asarray(Image.open(io.BytesIO(cell["bytes"]))) for cell in (a, b))
    return float((pa_ == pb).mean()) if pa_.shape == pb.shape else 0.0


def compare_releases(a: Path, b: Path) -> Comparison:
    """Row-by-row comparison of the releases in `a` and `b`."""

    ra, rb = _rows(Path(a)), _rows(Path(b))
    c = Comparison(only_a=sorted(set(ra) - set(rb)), only_b=sorted(set(rb) - set(ra)))
    for h in sorted(set(ra) & set(rb)):
        x, y = ra[h], rb[h]
        c.rows += 1
        for col in (*NON_IMAGE_COLUMNS, "split"):
            if x.get(col) != y.get(col):
                c.column_differences[col] = c.column_differences.get(col, 0) + 1
        if any(x[col] != y[col] for col in EM_COLUMNS):
            c.em_views_differ += 1
        differ = [col for col in SPLIT_MASK_COLUMNS if x[col] != y[col]]
        if differ:
            c.split_masks_differ += 1
            c.split_mask_agreement += [pixel_agreement(x[col], y[col]) for col in differ]
        ious = silhouette_iou(decode_geometry(x["geometry"]), decode_geometry(y["geometry"]))
        c.ious += [(iou, h, view) for view, iou in enumerate(ious.tolist())]
    return c
